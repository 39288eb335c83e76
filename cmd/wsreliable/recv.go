package main

import (
	"context"
	"io"

	"github.com/wsreliable/wsreliable/reliable"
)

// receivedLine is the JSON line recv prints for each push, as
// encoding/json writes it; appendReceived builds the same bytes without
// reflection, and the fuzz test holds it to this type.
type receivedLine struct {
	ID         string  `json:"id"`
	Seq        uint64  `json:"seq"`
	Payload    *string `json:"payload,omitempty"`
	PayloadB64 string  `json:"payload_b64,omitempty"`
}

// runRecv connects as -client-id and prints each message the server
// pushes to that client as one JSON line on stdout, until SIGINT or
// SIGTERM. A line is written out before its message is acknowledged, so
// a restart on the same -data prints nothing acknowledged again; a crash
// can print again at most the last AckBatch (256) messages.
func runRecv(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("recv", "-url URL -data DIR -client-id ID [flags]", stderr)
	cf := addClientFlags(fs, "client `ID` whose pushes to receive (required)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if code, ok := cf.check(fs, true); !ok {
		return code
	}
	log := cf.logger(stderr)
	logf := cf.log.cliLog(stderr, "recv", log).errorf
	// Lines are buffered and written out before each watermark commit,
	// as serve does: a push is acknowledged only once its line has left
	// the process.
	handler, flush := newBufferedLines(stdout).hooks(appendReceived, log)
	c, _, stopped, err := cf.open(reliable.ClientOptions{Handler: handler, Flush: flush, Logger: log})
	if err != nil {
		logf("%v", err)
		return exitFail
	}
	code := exitOK
	select {
	case <-ctx.Done():
	case <-stopped:
		logf("%v", cf.stopReason(c))
		code = exitFail
	}
	if err := c.Close(); err != nil {
		logf("closing the store: %v", err)
		code = exitFail
	}
	return code
}
