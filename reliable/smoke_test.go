package reliable_test

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

// sink records what a server's handler saw, per client.
type sink struct {
	mu   sync.Mutex
	seen map[string][]string
}

func (s *sink) handle(_ context.Context, m *reliable.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string][]string{}
	}
	s.seen[m.ClientID] = append(s.seen[m.ClientID], string(m.Payload))
	return nil
}

func (s *sink) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen[id])
}

func startServer(tb testing.TB, h reliable.Handler, opts *reliable.ServerOptions) (*reliable.Server, string) {
	tb.Helper()
	srv, err := reliable.NewServer(filepath.Join(tb.TempDir(), "server.db"), h, opts)
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	tb.Cleanup(func() {
		hs.Close()
		if err := srv.Close(); err != nil {
			tb.Error(err)
		}
	})
	return srv, "ws" + strings.TrimPrefix(hs.URL, "http")
}

func TestSmokeSendAndAck(t *testing.T) {
	var s sink
	_, url := startServer(t, s.handle, nil)
	c, err := reliable.NewClient(url, filepath.Join(t.TempDir(), "client.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 2000
	var last *reliable.Receipt
	for i := range n {
		r, err := c.Send(ctx, []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		last = r
	}
	if err := last.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	got := s.seen[c.ID()]
	s.mu.Unlock()
	if len(got) != n {
		t.Fatalf("handler saw %d messages, want %d", len(got), n)
	}
	for i, p := range got {
		if p != strconv.Itoa(i) {
			t.Fatalf("message %d is %q", i, p)
		}
	}
	if st := c.Stats(); st.Queued != 0 || st.Acked != n {
		t.Fatalf("stats %+v", st)
	}
}
