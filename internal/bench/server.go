package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/reliable"
)

// tally counts what a wsreliable server handed to its handler and checks,
// per client, that sequences arrive once and in order.
type tally struct {
	n     atomic.Int64
	bytes atomic.Int64

	mu   sync.Mutex
	last map[string]uint64
	dups int64
	gaps int64
}

func (t *tally) handle(_ context.Context, m *reliable.Message) error {
	t.mu.Lock()
	if t.last == nil {
		t.last = make(map[string]uint64)
	}
	last := t.last[m.ClientID]
	switch {
	case m.Seq <= last:
		t.dups++
	case m.Seq != last+1:
		t.gaps++
		t.last[m.ClientID] = m.Seq
	default:
		t.last[m.ClientID] = m.Seq
	}
	t.mu.Unlock()
	t.n.Add(1)
	t.bytes.Add(int64(len(m.Payload)))
	return nil
}

// peers returns the number of clients (or streams) seen.
func (t *tally) peers() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.last)
}

// check returns an error if any duplicate or gap was seen.
func (t *tally) check() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dups != 0 || t.gaps != 0 {
		return fmt.Errorf("bench: handler saw %d duplicates and %d gaps", t.dups, t.gaps)
	}
	return nil
}

// discardLog keeps http.Server from printing accept errors during restarts.
var discardLog = log.New(io.Discard, "", 0)

// listen listens on addr, retrying for up to 5 s while the address is in
// use (a restarted server takes its predecessor's port).
func listen(ctx context.Context, addr string) (net.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return ln, err
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// reliableServer is a reliable.Server served on a loopback listener.
type reliableServer struct {
	srv    *reliable.Server
	hs     *http.Server
	addr   string
	url    string
	served chan struct{}
}

// startReliableServer opens a server on the store at path and serves it on
// addr ("127.0.0.1:0" for any port).
func startReliableServer(ctx context.Context, addr, path string, h reliable.Handler, opts *reliable.ServerOptions) (*reliableServer, error) {
	srv, err := reliable.NewServer(path, h, opts)
	if err != nil {
		return nil, err
	}
	ln, err := listen(ctx, addr)
	if err != nil {
		_ = srv.Close()
		return nil, err
	}
	s := &reliableServer{
		srv:    srv,
		hs:     &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ErrorLog: discardLog},
		addr:   ln.Addr().String(),
		url:    "ws://" + ln.Addr().String() + "/",
		served: make(chan struct{}),
	}
	go func() {
		defer close(s.served)
		_ = s.hs.Serve(ln)
	}()
	return s, nil
}

// close stops accepting, closes every session and the store.
func (s *reliableServer) close() error {
	_ = s.hs.Close()
	<-s.served
	return s.srv.Close()
}

// rawServer is the baseline: a gorilla/websocket server that reads and
// counts messages, one goroutine per connection, default buffers.
type rawServer struct {
	hs       *http.Server
	url      string
	served   chan struct{}
	upgrader websocket.Upgrader

	n     atomic.Int64
	bytes atomic.Int64
	open  atomic.Int64

	mu      sync.Mutex
	conns   map[*websocket.Conn]struct{}
	closing bool
	wg      sync.WaitGroup
}

func startRawServer(ctx context.Context) (*rawServer, error) {
	ln, err := listen(ctx, "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &rawServer{
		url:    "ws://" + ln.Addr().String() + "/",
		served: make(chan struct{}),
		conns:  make(map[*websocket.Conn]struct{}),
	}
	s.hs = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ErrorLog: discardLog}
	go func() {
		defer close(s.served)
		_ = s.hs.Serve(ln)
	}()
	return s, nil
}

func (s *rawServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ws.Close()
		return
	}
	s.conns[ws] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.open.Add(1)
	defer func() {
		s.open.Add(-1)
		s.mu.Lock()
		delete(s.conns, ws)
		s.mu.Unlock()
		ws.Close()
		s.wg.Done()
	}()
	for {
		_, p, err := ws.ReadMessage()
		if err != nil {
			return
		}
		s.n.Add(1)
		s.bytes.Add(int64(len(p)))
	}
}

// accepted waits until the server holds n connections and returns them.
func (s *rawServer) accepted(ctx context.Context, n int) ([]*websocket.Conn, error) {
	if err := waitFor(ctx, connectTimeout, "the raw server to accept", func() bool { return s.open.Load() >= int64(n) }); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.conns)), nil
}

// close stops accepting, closes every connection and waits for their
// goroutines.
func (s *rawServer) close() {
	_ = s.hs.Close()
	<-s.served
	s.mu.Lock()
	s.closing = true
	for ws := range s.conns {
		ws.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// waitFor polls cond every few milliseconds until it holds, ctx ends or
// timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-time.After(2 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("bench: waiting for %s: %w", what, ctx.Err())
		}
	}
	return nil
}
