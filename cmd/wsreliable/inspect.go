package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/wsreliable/wsreliable/queue"
)

func runInspect(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("inspect", "-data DIR|FILE", stderr)
	data := fs.String("data", "", "a `directory` given to send, recv or serve (its "+clientStoreName+" and "+serveStoreName+" are shown), or a store file")
	lockTimeout := fs.Duration("lock-timeout", 500*time.Millisecond, "how long to wait for a store file held by a running process")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *data == "" {
		return usageError(fs, "-data is required")
	}
	if *lockTimeout <= 0 {
		return usageError(fs, "-lock-timeout must be positive")
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "wsreliable inspect: "+format+"\n", a...)
		return exitFail
	}
	fi, err := os.Stat(*data)
	if err != nil {
		return fail("%v", err)
	}
	var paths []string
	if fi.IsDir() {
		for _, name := range []string{clientStoreName, serveStoreName} {
			p := filepath.Join(*data, name)
			if _, err := os.Stat(p); err == nil {
				paths = append(paths, p)
			}
		}
		if len(paths) == 0 {
			return fail("no store in %s (looked for %s and %s)", *data, clientStoreName, serveStoreName)
		}
	} else {
		paths = []string{*data}
	}

	code := exitOK
	for i, p := range paths {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		if err := inspectStore(stdout, p, *lockTimeout); err != nil {
			if errors.Is(err, queue.ErrLocked) {
				err = fmt.Errorf("%w; stop the process using it first", err)
			}
			fail("%v", err)
			code = exitFail
		}
	}
	return code
}

// inspectStore prints the identity and outbox state of the store at path.
func inspectStore(w io.Writer, path string, lockTimeout time.Duration) error {
	s, err := queue.Open(path, &queue.Options{LockTimeout: lockTimeout})
	if err != nil {
		return err
	}
	meta, st := s.Meta(), s.Stats()
	if err := s.Close(); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "store:\t%s\n", path)
	fmt.Fprintf(tw, "client id:\t%s\n", meta.ClientID)
	fmt.Fprintf(tw, "stream:\t%s\n", meta.Stream)
	fmt.Fprintf(tw, "queued:\t%d messages, %d bytes\n", st.Messages, st.Bytes)
	fmt.Fprintf(tw, "first seq:\t%d\n", st.FirstSeq)
	fmt.Fprintf(tw, "last seq:\t%d\n", st.LastSeq)
	fmt.Fprintf(tw, "acked:\t%d\n", st.Acked)
	fmt.Fprintf(tw, "file size:\t%d bytes\n", st.FileSize)
	return tw.Flush()
}
