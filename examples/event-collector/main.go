// Command event-collector appends every event its clients send to one
// JSON-lines file, and acknowledges nothing before it is on disk: the
// handler writes to a buffer, and Flush fsyncs the file before the server
// commits its watermark and acknowledges the batch.
//
//	event-collector -listen :8080 -data ./collector -out events.jsonl
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr, nil)
	stop()
	os.Exit(code)
}

// run serves until ctx ends and returns the exit code. ready, if set, is
// called with the listening address.
func run(ctx context.Context, args []string, stderr io.Writer, ready func(net.Addr)) int {
	fs := flag.NewFlagSet("event-collector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":8080", "`address` to serve /ws on")
	data := fs.String("data", "collector-data", "`DIR` for the store (watermarks)")
	out := fs.String("out", "events.jsonl", "`file` to append events to")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := os.MkdirAll(*data, 0o700); err != nil {
		log.Error("creating -data", "error", err)
		return 1
	}
	sink, err := openSink(*out)
	if err != nil {
		log.Error("opening -out", "error", err)
		return 1
	}
	defer sink.close()

	srv, err := reliable.NewServer(filepath.Join(*data, "collector.db"), sink.append, &reliable.ServerOptions{
		Flush: sink.flush,
		// AckBatch bounds the work a crash can repeat: at most this many
		// events per client are appended again (the default is 256).
		AckBatch: 256,
		Logger:   log,
	})
	if err != nil {
		log.Error("opening the store", "error", err)
		return 1
	}
	defer srv.Close()

	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("listening", "error", err)
		return 1
	}
	if ready != nil {
		ready(l.Addr())
	}
	log.Info("listening", "addr", l.Addr().String(), "out", *out)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(l) }()

	select {
	case <-ctx.Done():
	case err := <-served:
		log.Error("serving", "error", err)
		return 1
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hs.Shutdown(sctx) // only /ws is served: this just closes the listener
	// Shutdown waits for the handlers and their last Flush and commit.
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("shutdown", "error", err)
		return 1
	}
	return 0
}

// event is one line of the output file. A duplicate after a crash is the
// same line again: same id, client and seq.
type event struct {
	ID     string          `json:"id"`
	Client string          `json:"client"`
	Seq    uint64          `json:"seq"`
	Event  json.RawMessage `json:"event"`
}

// sink is the output file. Handlers of different clients run concurrently,
// so the buffer is shared under a lock.
type sink struct {
	mu  sync.Mutex
	f   *os.File
	w   *bufio.Writer
	err error // the first write or fsync error: the file's state is unknown
}

func openSink(path string) (*sink, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	// A crash can leave a torn last line (bufio writes out a full buffer
	// before Flush): end it, so the next line starts clean.
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
			if _, err := f.Write([]byte("\n")); err != nil {
				return nil, err
			}
		}
	}
	return &sink{f: f, w: bufio.NewWriterSize(f, 256<<10)}, nil
}

// append is the reliable.Handler: it buffers the event, which is not yet
// durable, and is not acknowledged until flush has returned.
func (s *sink) append(ctx context.Context, m *reliable.Message) error {
	if !json.Valid(m.Payload) {
		// Rejected for good: the sender's receipt reports ErrRejected.
		return fmt.Errorf("%w: event is not JSON", reliable.ErrRejected)
	}
	line, err := json.Marshal(event{ID: m.ID.String(), Client: m.ClientID, Seq: m.Seq, Event: m.Payload})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err // retried later, with backoff
	}
	_, s.err = s.w.Write(append(line, '\n'))
	return s.err
}

// flush is ServerOptions.Flush: called before each watermark commit, so
// an event is acknowledged only once it is fsynced.
func (s *sink) flush(ctx context.Context, clientID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		if s.err = s.w.Flush(); s.err == nil {
			s.err = s.f.Sync()
		}
	}
	// After an error, every later call fails too: the buffer may hold
	// other clients' events, and a failed fsync may have lost pages that
	// a later fsync would not report. Nothing more is acknowledged; the
	// events come again once the collector restarts.
	return s.err
}

func (s *sink) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.w.Flush()
	if serr := s.f.Sync(); err == nil {
		err = serr
	}
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	return err
}
