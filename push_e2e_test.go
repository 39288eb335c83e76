package wsreliable_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/internal/wsproxy"
	"github.com/wsreliable/wsreliable/reliable"
)

// TestPushEndToEndThroughFaults: both directions at once through a proxy
// that resets and silently stalls connections. The server pushes to three
// clients while they send to it; each client goes offline for stretches
// (closed, its pushes queue on the server) and comes back on its store.
// Every message, both ways, must reach its handler exactly once, in order.
func TestPushEndToEndThroughFaults(t *testing.T) {
	const clients = 3
	messages := 1500 * soak()
	up := newLedger()
	down := newLedger()
	srv, addr := startServer(t, up.handle)
	proxy := testkit.NewProxy(t, addr)
	url := "ws://" + proxy.Addr() + "/"
	ctx := testkit.Deadline(t, 3*time.Minute)

	stop := make(chan struct{})
	var faults sync.WaitGroup
	var resets, stalls atomic.Int64
	faults.Go(func() { injectFaults(proxy, stop, &resets, &stalls) })

	ids := make([]string, clients)
	paths := make([]string, clients)
	for i := range ids {
		ids[i] = fmt.Sprintf("device-%d", i)
		paths[i] = filepath.Join(t.TempDir(), "client.db")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*clients+1)
	// The server pushes, alternating single pushes and fan-outs to all.
	var pushes []*reliable.Receipt
	var pushMu sync.Mutex
	wg.Go(func() {
		for n := 0; n < messages; n++ {
			payload := []byte(strconv.Itoa(n))
			var rs []*reliable.Receipt
			var err error
			if n%3 == 0 {
				rs, err = srv.SendMany(ctx, ids, reliable.OutgoingMessage{Payload: payload})
			} else {
				for _, id := range ids {
					var r *reliable.Receipt
					if r, err = srv.Send(ctx, id, payload); err != nil {
						break
					}
					rs = append(rs, r)
				}
			}
			if err != nil {
				errs <- fmt.Errorf("push %d: %w", n, err)
				return
			}
			pushMu.Lock()
			pushes = append(pushes, rs...)
			pushMu.Unlock()
		}
	})
	// Each client sends its own stream while it receives, offline now and
	// then.
	for i := range clients {
		wg.Go(func() { errs <- clientOnAndOff(ctx, url, paths[i], ids[i], messages, down, uint64(i)) })
	}
	wg.Wait()
	// Every push must settle acked: the clients come back once more.
	final := make([]*reliable.Client, clients)
	for i := range clients {
		o := clientOptions()
		o.ClientID, o.Handler = ids[i], down.handle
		c, err := reliable.NewClient(url, paths[i], o)
		if err != nil {
			t.Fatal(err)
		}
		final[i] = c
	}
	pushMu.Lock()
	for _, r := range pushes {
		if err := r.Wait(ctx); err != nil {
			t.Fatalf("push receipt seq %d: %v", r.Seq(), err)
		}
	}
	pushMu.Unlock()
	for i, c := range final {
		if err := c.Drain(ctx); err != nil {
			t.Fatalf("client %d drain: %v", i, err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	faults.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("faults injected: %d resets, %d stalls; pushes redelivered %d", resets.Load(), stalls.Load(), srv.Stats().Redelivered)
	for _, l := range []*ledger{up, down} {
		l.mu.Lock()
		if l.dups != 0 || len(l.gaps) != 0 || l.total != clients*messages {
			t.Errorf("handler calls %d (want %d), duplicates %d, gaps %v", l.total, clients*messages, l.dups, l.gaps)
		}
		l.mu.Unlock()
	}
	for _, id := range ids {
		if got := down.delivered(id); got != messages {
			t.Errorf("%s received %d pushes, want %d", id, got, messages)
		}
		if got := up.delivered(id); got != messages {
			t.Errorf("server received %d messages from %s, want %d", got, id, messages)
		}
	}
}

// injectFaults alternates resets and stalls on proxy until stop closes.
func injectFaults(proxy *testkit.Proxy, stop <-chan struct{}, resets, stalls *atomic.Int64) {
	rng := rand.New(rand.NewPCG(3, 4))
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-stop:
			return false
		case <-t.C:
			return true
		}
	}
	for i := 0; i < 1000; i++ {
		if !wait(time.Duration(50+rng.IntN(150)) * time.Millisecond) {
			return
		}
		if i%2 == 0 {
			proxy.Reset()
			resets.Add(1)
			continue
		}
		proxy.Stall()
		stalls.Add(1)
		ok := wait(hbInterval + hbTimeout + 100*time.Millisecond)
		proxy.Resume()
		if !ok {
			return
		}
	}
}

// clientOnAndOff sends payloads 0..n-1 as client id on the store at path,
// receiving pushes into down, and closes and reopens the client four
// times on the way, staying offline for a while each time.
func clientOnAndOff(ctx context.Context, url, path, id string, n int, down *ledger, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 9))
	const parts = 4
	for p := range parts {
		o := clientOptions()
		o.ClientID, o.Handler = id, down.handle
		c, err := reliable.NewClient(url, path, o)
		if err != nil {
			return err
		}
		for i := p * n / parts; i < (p+1)*n/parts; i++ {
			if _, err := c.Send(ctx, []byte(strconv.Itoa(i))); err != nil {
				c.Close()
				return fmt.Errorf("%s send %d: %w", id, i, err)
			}
		}
		if err := c.Close(); err != nil {
			return err
		}
		t := time.NewTimer(time.Duration(20+rng.IntN(200)) * time.Millisecond) // offline
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	return nil
}

// swappable serves whichever reliable.Server is current: a server
// "restarted" on a fresh store at the same address.
type swappable struct {
	cur atomic.Pointer[reliable.Server]
}

func (s *swappable) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.cur.Load().ServeHTTP(w, r) }

// TestLostServerStore: the server loses its store (a new, empty one at the
// same address). Clients must resume from what they still hold instead of
// looping on a sequence gap, in both directions: the client's messages
// after the loss reach the new server, and its pushes reach the client.
func TestLostServerStore(t *testing.T) {
	ctx := testkit.Deadline(t, time.Minute)
	up := newLedger()
	down := newLedger()
	open := func() *reliable.Server {
		srv, err := reliable.NewServer(filepath.Join(t.TempDir(), "server.db"), up.handle, serverOptions())
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	var sw swappable
	first := open()
	sw.cur.Store(first)
	hs := httptest.NewServer(&sw)
	defer hs.Close()
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/"

	o := clientOptions()
	o.ClientID, o.Handler = "device", down.handle
	c, err := reliable.NewClient(url, filepath.Join(t.TempDir(), "client.db"), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 100 {
		if _, err := c.Send(ctx, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if _, err := first.Send(ctx, "device", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return down.delivered("device") == 100 }, "pushes before the loss not delivered")

	second := open()
	sw.cur.Store(second)
	defer second.Close()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// The new server knows nothing: its first push to the client starts a
	// new stream at seq 1, and the client's next message is its seq 101.
	for i := 100; i < 200; i++ {
		if _, err := c.Send(ctx, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	var last *reliable.Receipt
	for i := range 50 {
		if last, err = second.Send(ctx, "device", []byte(strconv.Itoa(100+i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Drain(ctx); err != nil {
		t.Fatalf("client did not resume with the new server: %v (stats %+v)", err, c.Stats())
	}
	if err := last.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return down.delivered("device") == 150 }, "pushes after the loss not delivered")
	if got := up.delivered("device"); got != 200 {
		t.Fatalf("servers received %d distinct messages, want 200", got)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.dups != 0 || len(up.gaps) != 0 {
		t.Fatalf("up: duplicates %d, gaps %v", up.dups, up.gaps)
	}
	if st := c.Stats(); st.Reconnects > 20 {
		t.Errorf("%d reconnects: the client looped", st.Reconnects)
	}
}

// TestLostClientStore: the client loses its store and comes back with the
// same client ID. The server resumes its pushes from what it still holds:
// what was acknowledged is not sent again, what was not is delivered.
func TestLostClientStore(t *testing.T) {
	ctx := testkit.Deadline(t, time.Minute)
	up := newLedger()
	srv, addr := startServer(t, up.handle)
	url := "ws://" + addr + "/"
	path := filepath.Join(t.TempDir(), "client.db")
	var got []string
	var mu sync.Mutex
	handler := func(_ context.Context, m *reliable.Message) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, string(m.Payload))
		return nil
	}
	o := clientOptions()
	o.ClientID, o.Handler = "device", handler
	c, err := reliable.NewClient(url, path, o)
	if err != nil {
		t.Fatal(err)
	}
	var last *reliable.Receipt
	for i := range 50 {
		if last, err = srv.Send(ctx, "device", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := last.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	// Queued while the client is gone, then delivered to its new store.
	for i := 50; i < 80; i++ {
		if last, err = srv.Send(ctx, "device", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	c, err = reliable.NewClient(url, path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := last.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := make([]string, 80)
	for i := range want {
		want[i] = strconv.Itoa(i)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("client handler saw %d messages, want 0..79 once each: %v", len(got), got)
	}
}

// TestFrameFaultBothWays: both directions at once through the frame-fault
// proxy (drops, duplicates, reorders, truncation, garbage each way) for
// most of the traffic, then without faults. Each message, up and down,
// reaches its handler once and in order, and every push settles acked.
func TestFrameFaultBothWays(t *testing.T) {
	const (
		clients  = 2
		messages = 1000
		faulty   = 900
	)
	ctx := testkit.Deadline(t, 2*time.Minute)
	up, down := newLedger(), newLedger()
	srv, addr := startServer(t, up.handle)
	f := wsproxy.Faults{Drop: 0.02, Duplicate: 0.04, Reorder: 0.03, Truncate: 0.02, Garbage: 0.02}
	p, err := wsproxy.Listen(addr, wsproxy.Config{Seed: 7, ClientToServer: f, ServerToClient: f})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	ids := make([]string, clients)
	cs := make([]*reliable.Client, clients)
	for i := range cs {
		ids[i] = fmt.Sprintf("both-%d", i)
		o := clientOptions()
		o.ClientID, o.Handler = ids[i], down.handle
		c, err := reliable.NewClient(p.URL()+"/", filepath.Join(t.TempDir(), "client.db"), o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		cs[i] = c
	}
	var pushes []*reliable.Receipt
	traffic := func(from, to int) {
		for n := from; n < to; n++ {
			payload := []byte(strconv.Itoa(n))
			for _, c := range cs {
				if _, err := c.Send(ctx, payload); err != nil {
					t.Fatalf("send %d: %v", n, err)
				}
			}
			rs, err := srv.SendMany(ctx, ids, reliable.OutgoingMessage{Payload: payload})
			if err != nil {
				t.Fatalf("push %d: %v", n, err)
			}
			pushes = append(pushes, rs...)
		}
	}
	traffic(0, faulty)
	testkit.Eventually(t, faultyPhase, func() bool {
		s := p.Stats()
		return (s.ClientToServer.Faults() >= 5 && s.ServerToClient.Faults() >= 5) ||
			(up.delivered(ids[0]) >= faulty && down.delivered(ids[0]) >= faulty)
	}, "faults never fired: %+v", p.Stats())
	faults := p.Stats()
	if err := p.SetConfig(wsproxy.Config{}); err != nil {
		t.Fatal(err)
	}
	traffic(faulty, messages)
	for i, c := range cs {
		if err := c.Drain(ctx); err != nil {
			t.Fatalf("client %d drain: %v (stats %+v)", i, err, c.Stats())
		}
	}
	for _, r := range pushes {
		if err := r.Wait(ctx); err != nil {
			t.Fatalf("push seq %d: %v", r.Seq(), err)
		}
	}
	logFigures(t, faults)
	if faults.ClientToServer.Faults() == 0 || faults.ServerToClient.Faults() == 0 {
		t.Errorf("faults did not fire both ways: %+v", faults)
	}
	for _, l := range []*ledger{up, down} {
		l.mu.Lock()
		if l.dups != 0 || len(l.gaps) != 0 || l.total != clients*messages {
			t.Errorf("handler calls %d (want %d), duplicates %d, gaps %v", l.total, clients*messages, l.dups, l.gaps)
		}
		l.mu.Unlock()
	}
}
