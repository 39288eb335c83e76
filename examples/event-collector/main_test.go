package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/reliable"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCollector sends events through two runs of the collector and checks
// that the file holds each event once, in order.
func TestCollector(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	data, out := t.TempDir(), filepath.Join(t.TempDir(), "events.jsonl")
	clientDB := filepath.Join(t.TempDir(), "client.db")

	sent := 0
	for range 2 { // the second run resumes the same client's stream
		addr, stop := startCollector(t, "-listen", "127.0.0.1:0", "-data", data, "-out", out)
		c, err := reliable.NewClient("ws://"+addr+"/ws", clientDB, nil)
		if err != nil {
			t.Fatal(err)
		}
		for range 150 {
			sent++
			if _, err := c.Send(ctx, fmt.Appendf(nil, `{"n":%d}`, sent)); err != nil {
				t.Fatal(err)
			}
		}
		r, err := c.Send(ctx, []byte("not JSON"))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Wait(ctx); !errors.Is(err, reliable.ErrRejected) {
			t.Fatalf("a non-JSON event settled with %v, want ErrRejected", err)
		}
		if err := c.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		c.Close()
		stop()
	}

	events := readEvents(t, out)
	if len(events) != sent {
		t.Fatalf("the file holds %d events, want %d", len(events), sent)
	}
	seen := make(map[string]bool)
	for i, e := range events {
		var body struct{ N int }
		if err := json.Unmarshal(e.Event, &body); err != nil || body.N != i+1 || seen[e.ID] {
			t.Fatalf("line %d: %+v (%v), want event %d once", i+1, e, err, i+1)
		}
		seen[e.ID] = true
	}
}

// TestTornLine checks that a line torn by a crash is ended, so the next
// event starts on a line of its own.
func TestTornLine(t *testing.T) {
	out := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(out, []byte(`{"id":"x","cli`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := openSink(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.append(t.Context(), &reliable.Message{ClientID: "c", Seq: 1, Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	lines := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	if len(lines) != 2 || !json.Valid(lines[1]) {
		t.Fatalf("file %q: want the torn line, then one whole event", b)
	}
}

func readEvents(t *testing.T, path string) []event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var events []event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Bytes(), err)
		}
		events = append(events, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return events
}

// startCollector runs the collector in-process until stop is called or
// the test ends, and returns its address.
func startCollector(t *testing.T, args ...string) (addr string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	addrs := make(chan net.Addr, 1)
	code := make(chan int, 1)
	go func() { code <- run(ctx, args, logs, func(a net.Addr) { addrs <- a }) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case c := <-code:
				if c != 0 {
					t.Errorf("collector exited with %d; log:\n%s", c, logs)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("collector did not stop within 15s")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case a := <-addrs:
		return a.String(), stop
	case c := <-code:
		code <- c
		t.Fatalf("collector exited with %d; log:\n%s", c, logs)
	case <-time.After(10 * time.Second):
		t.Fatal("collector did not listen within 10s")
	}
	return "", stop
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
