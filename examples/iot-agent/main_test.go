package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/reliable"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestAgent runs the agent against an in-test server: telemetry arrives,
// a bad command is rejected, and pushed commands are applied in order.
func TestAgent(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	s := startServer(t)
	startAgent(t, "-url", s.url, "-data", t.TempDir(), "-id", "thermostat-7", "-interval", "20ms")

	r := s.next(t, ctx)
	if r.Setpoint != 20 {
		t.Fatalf("first reading has setpoint %v, want the default 20", r.Setpoint)
	}

	bad, err := s.srv.Send(ctx, "thermostat-7", []byte("reboot"))
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Wait(ctx); !errors.Is(err, reliable.ErrRejected) {
		t.Fatalf("unknown command settled with %v, want ErrRejected", err)
	}
	var last *reliable.Receipt
	for _, cmd := range []string{"setpoint=23", "setpoint=25.5"} {
		if last, err = s.srv.Send(ctx, "thermostat-7", []byte(cmd)); err != nil {
			t.Fatal(err)
		}
	}
	if err := last.Wait(ctx); err != nil {
		t.Fatalf("command not acknowledged: %v", err)
	}
	// Applied in order: once the last is acknowledged, readings carry it.
	for r.Setpoint != 25.5 {
		r = s.next(t, ctx)
	}
}

// TestAgentOffline runs the agent with no server and a budget of 3
// readings: Send keeps returning, the oldest readings are evicted, and a
// later run delivers what was kept, oldest first.
func TestAgentOffline(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	data := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "ws://" + l.Addr().String() + "/ws" // nothing listens here
	l.Close()

	logs, stop := startAgent(t, "-url", down, "-data", data, "-interval", "10ms", "-max-readings", "3")
	waitFor(t, ctx, func() bool { return strings.Count(logs.String(), "reading evicted") >= 3 }, "evictions logged")
	stop()

	s := startServer(t)
	startAgent(t, "-url", s.url, "-data", data, "-interval", "10ms", "-max-readings", "3")
	s.next(t, ctx)
	if s.firstSeq <= 1 {
		t.Fatalf("first reading delivered has seq %d; the oldest should have been evicted", s.firstSeq)
	}
}

// server is the in-test telemetry server.
type server struct {
	srv      *reliable.Server
	url      string
	readings chan *reliable.Message
	firstSeq uint64 // of the first message received
}

// startServer starts a reliable.Server whose handler passes each message
// on to s.readings.
func startServer(t *testing.T) *server {
	t.Helper()
	s := &server{readings: make(chan *reliable.Message, 16)}
	srv, err := reliable.NewServer(filepath.Join(t.TempDir(), "server.db"),
		func(ctx context.Context, m *reliable.Message) error {
			select {
			case s.readings <- m:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
	})
	s.srv, s.url = srv, "ws"+strings.TrimPrefix(hs.URL, "http")
	return s
}

// next returns the next reading the server received.
func (s *server) next(t *testing.T, ctx context.Context) reading {
	t.Helper()
	select {
	case m := <-s.readings:
		if s.firstSeq == 0 {
			s.firstSeq = m.Seq
		}
		var r reading
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			t.Fatalf("reading %q: %v", m.Payload, err)
		}
		return r
	case <-ctx.Done():
		t.Fatal("no telemetry arrived")
		return reading{}
	}
}

// startAgent runs the agent in-process until stop is called or the test
// ends, and returns its log.
func startAgent(t *testing.T, args ...string) (logs *syncBuffer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs = &syncBuffer{}
	code := make(chan int, 1)
	go func() { code <- run(ctx, args, logs) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case c := <-code:
				if c != 0 {
					t.Errorf("agent exited with %d; log:\n%s", c, logs)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("agent did not stop within 10s")
			}
		})
	}
	t.Cleanup(stop)
	return logs, stop
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, cond func() bool, what string) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
