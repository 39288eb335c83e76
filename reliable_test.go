// End-to-end tests of wsreliable through its public API only: real
// sockets on 127.0.0.1, real WebSocket handshakes, real bbolt files, and
// faults injected by a TCP proxy and by killing processes.
package wsreliable_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
)

func TestMain(m *testing.M) {
	if crashChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

// soak is the multiplier of the soak mode: WSRELIABLE_SOAK=N runs the
// end-to-end and crash tests N times longer (more messages, more kills).
// CI runs the default, 1.
func soak() int {
	n, err := strconv.Atoi(os.Getenv("WSRELIABLE_SOAK"))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// Short heartbeats so half-open links are found quickly in tests.
const (
	hbInterval = 100 * time.Millisecond
	hbTimeout  = 400 * time.Millisecond
)

// ledger checks what a server's handler sees: per client, payloads
// "<n>" must arrive as 0, 1, 2, … exactly once.
type ledger struct {
	mu    sync.Mutex
	next  map[string]int
	dups  int
	gaps  []string
	total int
}

func newLedger() *ledger { return &ledger{next: map[string]int{}} }

func (l *ledger) handle(_ context.Context, m *reliable.Message) error {
	n, err := strconv.Atoi(string(m.Payload))
	if err != nil {
		return fmt.Errorf("bad payload %q: %w", m.Payload, reliable.ErrRejected)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	want := l.next[m.ClientID]
	switch {
	case n < want:
		l.dups++
	case n > want:
		l.gaps = append(l.gaps, fmt.Sprintf("%s: got %d, want %d", m.ClientID, n, want))
		l.next[m.ClientID] = n + 1
	default:
		l.next[m.ClientID] = n + 1
	}
	l.total++
	return nil
}

func (l *ledger) delivered(client string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next[client]
}

func serverOptions() *reliable.ServerOptions {
	return &reliable.ServerOptions{HeartbeatInterval: hbInterval, HeartbeatTimeout: hbTimeout}
}

func clientOptions() *reliable.ClientOptions {
	return &reliable.ClientOptions{
		HeartbeatInterval: hbInterval,
		HeartbeatTimeout:  hbTimeout,
		HandshakeTimeout:  2 * time.Second,
		BackoffMin:        10 * time.Millisecond,
		BackoffMax:        200 * time.Millisecond,
		AckTimeout:        2 * time.Second,
	}
}

// startServer serves a reliable.Server on 127.0.0.1 with the tests'
// short heartbeats and returns its address ("127.0.0.1:port").
func startServer(tb testing.TB, h reliable.Handler) (*reliable.Server, string) {
	tb.Helper()
	return startServerOpts(tb, h, serverOptions())
}

// startServerOpts is startServer with opts (nil: the library's defaults).
func startServerOpts(tb testing.TB, h reliable.Handler, opts *reliable.ServerOptions) (*reliable.Server, string) {
	tb.Helper()
	srv, err := reliable.NewServer(filepath.Join(tb.TempDir(), "server.db"), h, opts)
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	tb.Cleanup(func() {
		if err := srv.Close(); err != nil {
			tb.Error(err)
		}
		hs.Close()
	})
	return srv, strings.TrimPrefix(hs.URL, "http://")
}

// TestEndToEndThroughFaults: three clients send 3,000 messages each through
// a proxy that resets and silently stalls their connections, and each
// client is closed and reopened on its store midway. The handler must see
// every message exactly once and in order, and every queue must be empty.
func TestEndToEndThroughFaults(t *testing.T) {
	const clients = 3
	messages := 3000 * soak()
	led := newLedger()
	_, addr := startServer(t, led.handle)
	proxy := testkit.NewProxy(t, addr)
	url := "ws://" + proxy.Addr() + "/"
	ctx := testkit.Deadline(t, 3*time.Minute)

	// Faults: alternate resets and stalls until the senders are done.
	stop := make(chan struct{})
	var faults sync.WaitGroup
	var resets, stalls atomic.Int64
	faults.Go(func() { injectFaults(proxy, stop, &resets, &stalls) })

	paths := make([]string, clients)
	ids := make([]string, clients)
	var senders sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		paths[i] = filepath.Join(t.TempDir(), "client.db")
		senders.Go(func() {
			errs <- sendWithRestart(ctx, url, paths[i], messages, &ids[i])
		})
	}
	senders.Wait()
	close(stop)
	faults.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("faults injected: %d resets, %d stalls", resets.Load(), stalls.Load())

	// Drain: reopen each store, wait until the server has everything.
	for i := range clients {
		c, err := reliable.NewClient(url, paths[i], clientOptions())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Drain(ctx); err != nil {
			t.Fatalf("client %d drain: %v (stats %+v)", i, err, c.Stats())
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		meta, st, err := queue.Inspect(paths[i])
		if err != nil {
			t.Fatal(err)
		}
		if st.Messages != 0 || st.LastSeq != uint64(messages) {
			t.Errorf("client %d store: %d messages left, last seq %d", i, st.Messages, st.LastSeq)
		}
		if err := queue.Check(paths[i]); err != nil {
			t.Errorf("client %d store: %v", i, err)
		}
		if got := led.delivered(meta.ClientID); got != messages {
			t.Errorf("client %d: handler saw %d distinct messages, want %d", i, got, messages)
		}
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	if led.dups != 0 || len(led.gaps) != 0 {
		t.Fatalf("duplicates %d, gaps %v", led.dups, led.gaps)
	}
	if led.total != clients*messages {
		t.Fatalf("handler calls %d, want %d", led.total, clients*messages)
	}
}

// sendWithRestart sends payloads 0..n-1, closing the client and opening a
// new one on the same store halfway through.
func sendWithRestart(ctx context.Context, url, path string, n int, id *string) error {
	var receipts []*reliable.Receipt
	for _, part := range [][2]int{{0, n / 2}, {n / 2, n}} {
		c, err := reliable.NewClient(url, path, clientOptions())
		if err != nil {
			return err
		}
		*id = c.ID()
		receipts = receipts[:0]
		for i := part[0]; i < part[1]; i++ {
			r, err := c.Send(ctx, []byte(strconv.Itoa(i)))
			if err != nil {
				c.Close()
				return fmt.Errorf("send %d: %w", i, err)
			}
			receipts = append(receipts, r)
		}
		if part[1] == n {
			// The second client waits for its receipts: each must settle
			// with nil (acked), never with an error.
			for _, r := range receipts {
				if err := r.Wait(ctx); err != nil {
					c.Close()
					return fmt.Errorf("receipt %d: %w", r.Seq(), err)
				}
			}
		}
		if err := c.Close(); err != nil {
			return err
		}
	}
	return nil
}
