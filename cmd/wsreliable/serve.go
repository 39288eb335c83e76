package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/wsreliable/wsreliable/reliable"
)

// serveStoreName is the server's store file inside -data.
const serveStoreName = "server.db"

// deliveredLine is the JSON line serve prints for each delivered message,
// as encoding/json writes it; appendDelivered builds the same bytes
// without reflection, and the fuzz test holds it to this type.
type deliveredLine struct {
	Client     string  `json:"client"`
	ID         string  `json:"id"`
	Seq        uint64  `json:"seq"`
	Payload    *string `json:"payload,omitempty"`
	PayloadB64 string  `json:"payload_b64,omitempty"`
}

// payloadFields returns the payload as a JSON string if it is valid UTF-8,
// else as standard base64 for the payload_b64 field.
func payloadFields(p []byte) (text *string, b64 string) {
	if utf8.Valid(p) {
		s := string(p)
		return &s, ""
	}
	return nil, base64.StdEncoding.EncodeToString(p)
}

// encodeLine returns v as one line of JSON, newline included, without
// HTML escaping.
func encodeLine(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only strings, numbers and pointers to strings: cannot fail.
		panic(fmt.Sprintf("wsreliable: encoding %T: %v", v, err))
	}
	return b.Bytes()
}

// lineWriter writes whole lines to w, one Write call per line, from any
// goroutine.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lineWriter) writeLine(line []byte) error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	_, err := lw.w.Write(line)
	return err
}

// bufferedLines holds each client's lines until that client's flush,
// which writes them with one Write call: a burst costs one write per
// flush instead of one per line, and a failed write loses only the lines
// of the client whose messages are then delivered again. A client whose
// lines pass maxBuffered is written out early.
type bufferedLines struct {
	mu     sync.Mutex
	w      io.Writer
	bufs   map[string][]byte // client → lines not yet written
	failed map[string]error  // client → an early write that failed
	pool   sync.Pool         // of *[]byte, for bufs
}

// maxBuffered is the most bytes of one client's lines held until flush.
const maxBuffered = 64 << 10

func newBufferedLines(w io.Writer) *bufferedLines {
	return &bufferedLines{w: w, bufs: map[string][]byte{}, failed: map[string]error{}}
}

// write buffers line for client. It fails only if an early write fails;
// then the client's next flush fails too.
func (b *bufferedLines) write(client string, line []byte) error {
	return b.writeMessage(client, func(dst []byte) []byte { return append(dst, line...) })
}

// writeMessage buffers the line that build appends to its argument, like
// write, without a copy of the line.
func (b *bufferedLines) writeMessage(client string, build func([]byte) []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	buf, ok := b.bufs[client]
	if !ok {
		if p, _ := b.pool.Get().(*[]byte); p != nil {
			buf = (*p)[:0]
		}
	}
	buf = build(buf)
	b.bufs[client] = buf
	if len(buf) < maxBuffered {
		return nil
	}
	if err := b.writeOutLocked(client); err != nil {
		b.failed[client] = err
		return err
	}
	return nil
}

// flush writes out client's buffered lines. It fails if they, or any of
// the client's lines since its last flush, did not reach w; the caller
// must then have those messages delivered again.
func (b *bufferedLines) flush(client string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.failed[client]; err != nil {
		// Delivered again in full: writing the rest would print it twice.
		delete(b.failed, client)
		b.dropLocked(client)
		return err
	}
	return b.writeOutLocked(client)
}

// writeOutLocked writes client's buffer and releases it. b.mu is held,
// which also keeps lines of different clients from interleaving.
func (b *bufferedLines) writeOutLocked(client string) error {
	buf := b.bufs[client]
	var err error
	if len(buf) > 0 {
		_, err = b.w.Write(buf)
	}
	b.dropLocked(client)
	return err
}

func (b *bufferedLines) dropLocked(client string) {
	if buf, ok := b.bufs[client]; ok {
		delete(b.bufs, client)
		if cap(buf) <= 2*maxBuffered {
			b.pool.Put(&buf)
		}
	}
}

func runServe(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	return serve(ctx, args, stdout, stderr, nil)
}

// serve is runServe; onListen, if not nil, is called with the bound
// address once the server accepts connections (for tests).
func serve(ctx context.Context, args []string, stdout, stderr io.Writer, onListen func(net.Addr)) int {
	fs := newFlagSet("serve", "-listen HOST:PORT -data DIR [flags]", stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "`address` to listen on; the WebSocket endpoint is at path /ws")
	data := fs.String("data", "", "`directory` for the server's store (created if missing; file "+serveStoreName+")")
	hbInterval, hbTimeout := heartbeatFlags(fs)
	shutdownTimeout := fs.Duration("shutdown-timeout", 10*time.Second, "on SIGINT/SIGTERM, how long to wait for handlers in progress")
	verbose := fs.Bool("v", false, "log at debug level")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *data == "" {
		return usageError(fs, "-data is required")
	}
	if code, ok := checkHeartbeat(fs, *hbInterval, *hbTimeout); !ok {
		return code
	}
	if *shutdownTimeout <= 0 {
		return usageError(fs, "-shutdown-timeout must be positive")
	}
	log := newLogger(stderr, slog.LevelInfo, *verbose)
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "wsreliable serve: "+format+"\n", a...)
		return exitFail
	}

	if err := os.MkdirAll(*data, 0o700); err != nil {
		return fail("data directory: %v", err)
	}
	// Lines are buffered per client and written before each watermark
	// commit, so a message is acknowledged only once its line has left
	// the process.
	out := newBufferedLines(stdout)
	handler := func(_ context.Context, m *reliable.Message) error {
		err := out.writeMessage(m.ClientID, func(dst []byte) []byte { return appendDelivered(dst, m) })
		if err != nil {
			log.Warn("writing a message to stdout failed; it will be retried", "client", m.ClientID, "seq", m.Seq, "error", err)
			return fmt.Errorf("write stdout: %w", err)
		}
		return nil
	}
	srv, err := reliable.NewServer(filepath.Join(*data, serveStoreName), handler, &reliable.ServerOptions{
		HeartbeatInterval: *hbInterval,
		HeartbeatTimeout:  *hbTimeout,
		Logger:            log,
		Flush: func(_ context.Context, client string) error {
			if err := out.flush(client); err != nil {
				log.Warn("writing messages to stdout failed; they will be delivered again", "client", client, "error", err)
				return fmt.Errorf("write stdout: %w", err)
			}
			return nil
		},
	})
	if err != nil {
		return fail("%v", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		srv.Close()
		return fail("%v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "path", "/ws", "data", *data)
	if onListen != nil {
		onListen(ln.Addr())
	}

	code := exitOK
	served := false
	select {
	case <-ctx.Done():
		log.Info("shutting down", "cause", context.Cause(ctx))
	case err := <-serveErr:
		// Serve returns before Shutdown only on a listener failure.
		served = true
		log.Error("serving failed", "error", err)
		code = exitFail
	}

	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("graceful shutdown of the sessions failed", "error", err)
		code = exitFail
	}
	if err := hs.Shutdown(sctx); err != nil {
		log.Error("HTTP server shutdown failed", "error", err)
		hs.Close()
		code = exitFail
	}
	if !served {
		if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
			log.Error("serving failed", "error", err)
			code = exitFail
		}
	}
	if code == exitOK {
		log.Info("stopped")
	}
	return code
}
