package reliable_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
)

// inboxSink records what a client's Handler saw, in order.
type inboxSink struct {
	mu      sync.Mutex
	seen    []string
	changed chan struct{} // closed and replaced on every message
}

func newInboxSink() *inboxSink { return &inboxSink{changed: make(chan struct{})} }

func (s *inboxSink) handle(_ context.Context, m *reliable.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, string(m.Payload))
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

func (s *inboxSink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

// waitFor waits until the sink holds n messages, failing the test at ctx's
// end.
func (s *inboxSink) waitFor(tb testing.TB, ctx context.Context, n int) []string {
	tb.Helper()
	for {
		s.mu.Lock()
		got, ch := append([]string(nil), s.seen...), s.changed
		s.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-ch:
		case <-ctx.Done():
			tb.Fatalf("client handler saw %d messages, want %d: %v", len(got), n, ctx.Err())
		}
	}
}

// checkSequence fails unless got is exactly want, in order.
func checkSequence(tb testing.TB, got, want []string) {
	tb.Helper()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		tb.Fatalf("handler saw %d messages %v, want %d %v", len(got), head(got), len(want), head(want))
	}
}

func head(s []string) []string {
	if len(s) > 12 {
		return append(append([]string(nil), s[:6]...), append([]string{"…"}, s[len(s)-6:]...)...)
	}
	return s
}

func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// pushNumbered pushes n numbered messages to client, starting at from, and
// returns their receipts and payloads.
func pushNumbered(tb testing.TB, ctx context.Context, srv *reliable.Server, client string, from, n int) ([]*reliable.Receipt, []string) {
	tb.Helper()
	var rs []*reliable.Receipt
	var want []string
	for i := from; i < from+n; i++ {
		r, err := srv.Send(ctx, client, []byte(strconv.Itoa(i)))
		if err != nil {
			tb.Fatalf("push %d: %v", i, err)
		}
		rs = append(rs, r)
		want = append(want, strconv.Itoa(i))
	}
	return rs, want
}

func TestPushToConnectedClient(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	srv, url := startServer(t, s.handle, nil)
	in := newInboxSink()
	c := newClient(t, url, &reliable.ClientOptions{ClientID: "dev-1", Handler: in.handle})
	// Both directions at once on one connection.
	sent, _ := c.Send(ctx, []byte("up"))
	rs, want := pushNumbered(t, ctx, srv, "dev-1", 0, 500)
	for _, r := range rs {
		if err := r.Wait(ctx); err != nil {
			t.Fatalf("push receipt: %v", err)
		}
	}
	checkSequence(t, in.waitFor(t, ctx, len(want)), want)
	if err := sent.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.got("dev-1"); len(got) != 1 || got[0] != "up" {
		t.Fatalf("server saw %v", got)
	}
	if st := c.Stats(); st.Received != 500 {
		t.Errorf("client Stats().Received = %d, want 500", st.Received)
	}
}

func TestPushToOfflineClient(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	srv, url := startServer(t, s.handle, nil)
	rs, want := pushNumbered(t, ctx, srv, "dev-2", 0, 300)
	select {
	case <-rs[0].Done():
		t.Fatal("a push to a client that never connected settled")
	default:
	}
	in := newInboxSink()
	newClient(t, url, &reliable.ClientOptions{ClientID: "dev-2", Handler: in.handle})
	checkSequence(t, in.waitFor(t, ctx, len(want)), want)
	for _, r := range rs {
		if err := r.Wait(ctx); err != nil {
			t.Fatalf("push receipt: %v", err)
		}
	}
}

func TestPushFanout(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	srv, url := startServer(t, s.handle, nil)
	const n = 40
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("fan-%d", i)
	}
	rs, err := srv.SendMany(ctx, ids, reliable.OutgoingMessage{Payload: []byte("hello all")})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != n {
		t.Fatalf("%d receipts for %d clients", len(rs), n)
	}
	seenIDs := map[protocol.MessageID]bool{}
	for _, r := range rs {
		if seenIDs[r.ID()] {
			t.Fatal("two recipients share a message ID")
		}
		seenIDs[r.ID()] = true
		if r.Seq() != 1 {
			t.Fatalf("first push to a client has seq %d", r.Seq())
		}
	}
	sinks := make([]*inboxSink, n)
	for i := range sinks {
		sinks[i] = newInboxSink()
		newClient(t, url, &reliable.ClientOptions{ClientID: ids[i], Handler: sinks[i].handle})
	}
	for i := range sinks {
		checkSequence(t, sinks[i].waitFor(t, ctx, 1), []string{"hello all"})
		if err := rs[i].Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := range sinks {
		if got := sinks[i].got(); len(got) != 1 {
			t.Fatalf("client %d got %d copies", i, len(got))
		}
	}
}

// TestPushClientRestart restarts the receiving client on its store, many
// times, while pushes arrive: nothing acknowledged is handed over again,
// and nothing is lost.
func TestPushClientRestart(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	srv, url := startServer(t, s.handle, nil)
	path := filepath.Join(t.TempDir(), "client.db")
	in := newInboxSink()
	const rounds, per = 8, 50
	var want []string
	for round := range rounds {
		c, err := reliable.NewClient(url, path, &reliable.ClientOptions{ClientID: "dev-r", Handler: in.handle})
		if err != nil {
			t.Fatal(err)
		}
		rs, w := pushNumbered(t, ctx, srv, "dev-r", round*per, per)
		want = append(want, w...)
		if err := rs[len(rs)-1].Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	checkSequence(t, in.got(), want)
}

func TestPushExpired(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	srv, url := startServer(t, s.handle, nil)
	const ttl = 50 * time.Millisecond
	stale, err := srv.SendMessage(ctx, "dev-ttl", reliable.OutgoingMessage{Payload: []byte("stale"), TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := srv.Send(ctx, "dev-ttl", []byte("fresh"))
	if err != nil {
		t.Fatal(err)
	}
	// The client connects only once the first push's TTL has passed.
	deadline := time.Now().Add(ttl)
	for time.Now().Before(deadline) {
		select {
		case <-time.After(time.Until(deadline)):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	in := newInboxSink()
	newClient(t, url, &reliable.ClientOptions{ClientID: "dev-ttl", Handler: in.handle})
	checkSequence(t, in.waitFor(t, ctx, 1), []string{"fresh"})
	if err := stale.Wait(ctx); !errors.Is(err, reliable.ErrExpired) {
		t.Fatalf("expired push's receipt: %v, want ErrExpired", err)
	}
	if err := fresh.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// The stream moved past the expired message: later pushes still flow.
	r, _ := pushNumbered(t, ctx, srv, "dev-ttl", 0, 1)
	if err := r[0].Wait(ctx); err != nil {
		t.Fatal(err)
	}
	checkSequence(t, in.got(), []string{"fresh", "0"})
}

func TestSendExpiredClientToServer(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	// No server yet: the client's message waits past its TTL.
	_, url := startServer(t, s.handle, nil)
	c := newClient(t, url, &reliable.ClientOptions{ClientID: "dev-up"})
	stale, err := c.SendMessage(ctx, reliable.OutgoingMessage{Payload: []byte("stale"), TTL: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := c.Send(ctx, []byte("fresh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := stale.Wait(ctx); !errors.Is(err, reliable.ErrExpired) {
		t.Fatalf("receipt: %v, want ErrExpired", err)
	}
	if err := fresh.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.got("dev-up"); len(got) != 1 || got[0] != "fresh" {
		t.Fatalf("server handler saw %v, want only the fresh message", got)
	}
}

func TestPushRejectedAndMaxAttempts(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	var settled sync.Map
	srv, url := startServer(t, s.handle, &reliable.ServerOptions{OnSettled: func(st reliable.Settlement) {
		settled.Store(st.ID, st)
	}})
	attempts := map[string]int{}
	var mu sync.Mutex
	handler := func(_ context.Context, m *reliable.Message) error {
		mu.Lock()
		defer mu.Unlock()
		p := string(m.Payload)
		attempts[p]++
		switch p {
		case "refuse":
			return fmt.Errorf("no thanks: %w", reliable.ErrRejected)
		case "flaky":
			return errors.New("always failing")
		}
		return nil
	}
	newClient(t, url, &reliable.ClientOptions{ClientID: "dev-x", Handler: handler, MaxAttempts: 3})
	refuse, _ := srv.Send(ctx, "dev-x", []byte("refuse"))
	flaky, _ := srv.Send(ctx, "dev-x", []byte("flaky"))
	ok, _ := srv.Send(ctx, "dev-x", []byte("ok"))
	var rej *reliable.RejectError
	if err := refuse.Wait(ctx); !errors.As(err, &rej) || rej.Code != protocol.RejectHandler || !strings.Contains(rej.Reason, "no thanks") {
		t.Fatalf("refused push: %v", err)
	}
	if err := flaky.Wait(ctx); !errors.As(err, &rej) || rej.Code != protocol.RejectAttempts || !strings.Contains(rej.Reason, "always failing") {
		t.Fatalf("flaky push: %v", err)
	}
	if err := ok.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if attempts["flaky"] != 3 || attempts["refuse"] != 1 || attempts["ok"] != 1 {
		t.Errorf("attempts %v", attempts)
	}
	mu.Unlock()
	for _, c := range []struct {
		r    *reliable.Receipt
		want reliable.Status
	}{{refuse, reliable.StatusRejected}, {flaky, reliable.StatusRejected}, {ok, reliable.StatusAcked}} {
		// OnSettled follows the commit of the settlement records.
		testkit.Eventually(t, 10*time.Second, func() bool { _, found := settled.Load(c.r.ID()); return found },
			"OnSettled not called for seq %d", c.r.Seq())
		v, _ := settled.Load(c.r.ID())
		if st := v.(reliable.Settlement); st.Status != c.want || st.ClientID != "dev-x" {
			t.Errorf("settlement %+v, want status %s", st, c.want)
		}
	}
}

// TestOversizedMessageSettles: a message larger than the receiver accepts
// settles as rejected (too large) and does not block the stream (bug: it
// used to close the connection with 1009 and reconnect for ever).
func TestOversizedMessageSettles(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	_, url := startServer(t, s.handle, &reliable.ServerOptions{MaxMessageSize: 64 << 10})
	c := newClient(t, url, &reliable.ClientOptions{MaxMessageSize: 1 << 20})
	big, err := c.Send(ctx, make([]byte, 100<<10))
	if err != nil {
		t.Fatal(err)
	}
	small, err := c.Send(ctx, []byte("small"))
	if err != nil {
		t.Fatal(err)
	}
	if err := big.Wait(ctx); !errors.Is(err, reliable.ErrTooLarge) || !errors.Is(err, reliable.ErrRejected) {
		t.Fatalf("oversized message's receipt: %v, want ErrTooLarge", err)
	}
	if err := small.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.got(c.ID()); len(got) != 1 || got[0] != "small" {
		t.Fatalf("server saw %d messages", len(got))
	}
	if st := c.Stats(); st.Reconnects != 0 {
		t.Errorf("%d reconnects", st.Reconnects)
	}
}

// TestTooLargeForQueue: a payload over MaxQueuedBytes is ErrTooLarge.
func TestTooLargeForQueue(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t, "ws://127.0.0.1:1/", &reliable.ClientOptions{MaxQueuedBytes: 100, BackoffMin: time.Hour, BackoffMax: time.Hour})
	if _, err := c.Send(ctx, make([]byte, 200)); !errors.Is(err, reliable.ErrTooLarge) {
		t.Fatalf("Send: %v, want ErrTooLarge", err)
	}
}

// TestPushServerRestartKeepsOutbox: pushes queued for an offline client
// survive a server restart on the same store.
func TestPushServerRestartKeepsOutbox(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "server.db")
	var s sink
	srv, err := reliable.NewServer(path, s.handle, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, want := pushNumbered(t, ctx, srv, "dev-s", 0, 100)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	_, url := startServerAt(t, path, s.handle, nil)
	in := newInboxSink()
	newClient(t, url, &reliable.ClientOptions{ClientID: "dev-s", Handler: in.handle})
	checkSequence(t, in.waitFor(t, ctx, len(want)), want)
}

func TestPushEvictOldest(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	srv, url := startServer(t, s.handle, &reliable.ServerOptions{OutboxMaxMessages: 5, OutboxEvict: true})
	rs, want := pushNumbered(t, ctx, srv, "dev-e", 0, 8)
	for _, r := range rs[:3] {
		if err := r.Wait(ctx); !errors.Is(err, reliable.ErrEvicted) {
			t.Fatalf("evicted push's receipt: %v", err)
		}
	}
	in := newInboxSink()
	newClient(t, url, &reliable.ClientOptions{ClientID: "dev-e", Handler: in.handle})
	checkSequence(t, in.waitFor(t, ctx, 5), want[3:])
}

func TestPushQueueFull(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	srv, _ := startServer(t, s.handle, &reliable.ServerOptions{OutboxMaxMessages: 2})
	pushNumbered(t, ctx, srv, "dev-f", 0, 2)
	if _, err := srv.Send(ctx, "dev-f", []byte("3")); !errors.Is(err, reliable.ErrQueueFull) {
		t.Fatalf("third push: %v, want ErrQueueFull", err)
	}
	if _, err := srv.SendMany(ctx, []string{"dev-g", "dev-f"}, reliable.OutgoingMessage{Payload: []byte("x")}); !errors.Is(err, reliable.ErrQueueFull) {
		t.Fatalf("fan-out with one full outbox: %v, want ErrQueueFull", err)
	}
	// All or none: dev-g got nothing from the failed fan-out.
	r, err := srv.Send(ctx, "dev-g", []byte("y"))
	if err != nil || r.Seq() != 1 {
		t.Fatalf("push after failed fan-out: seq %v, %v", r, err)
	}
}

func TestServerHeartbeatFrame(t *testing.T) {
	var s sink
	_, url := startServer(t, s.handle, &reliable.ServerOptions{HeartbeatInterval: 50 * time.Millisecond})
	ws, _ := handshake(t, url, "hb", newStream())
	_ = ws.SetReadDeadline(time.Now().Add(ioTimeout))
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("no heartbeat frame: %v", err)
		}
		frames, err := protocol.DecodeAll(msg)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := frames[len(frames)-1].(*protocol.Heartbeat); ok {
			break
		}
	}
	closeRawConn(ws)
}

func TestStoreOptionConflicts(t *testing.T) {
	for _, o := range []*reliable.ClientOptions{{NoSync: true}, {MaxQueued: 1}, {MaxQueuedBytes: 1}, {FailWhenFull: true}} {
		o.Store = queue.NewMemory(nil)
		if _, err := reliable.NewClient("ws://127.0.0.1:1/", "", o); err == nil {
			t.Errorf("NewClient with Store and %+v: no error", *o)
		}
	}
}

func TestServerClients(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	srv, url := startServer(t, s.handle, nil)
	pushNumbered(t, ctx, srv, "b", 0, 3)
	pushNumbered(t, ctx, srv, "a", 0, 2)
	list, err := srv.Clients("", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ClientID != "a" || list[0].Queued != 2 || list[1].ClientID != "b" || list[1].Queued != 3 {
		t.Fatalf("Clients = %+v", list)
	}
	if list[0].Connected || list[0].Oldest.IsZero() || list[0].Bytes != 2 {
		t.Fatalf("client a: %+v", list[0])
	}
	page, err := srv.Clients("a", 1)
	if err != nil || len(page) != 1 || page[0].ClientID != "b" {
		t.Fatalf("second page: %+v, %v", page, err)
	}
	in := newInboxSink()
	newClient(t, url, &reliable.ClientOptions{ClientID: "a", Handler: in.handle})
	in.waitFor(t, ctx, 2)
	testkit.Eventually(t, 10*time.Second, func() bool {
		a, err := srv.Client("a")
		return err == nil && a.Connected && a.Queued == 0
	}, "client a never shown connected with an empty outbox")
	if c, err := srv.Client("nobody"); err != nil || !c.Stream.IsZero() || c.Queued != 0 {
		t.Fatalf("unknown client: %+v, %v", c, err)
	}
	// A connected client that was never pushed to is listed too, with
	// its watermark once it has sent something.
	sender := newClient(t, url, &reliable.ClientOptions{ClientID: "aa"})
	r, err := sender.Send(ctx, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		list, err := srv.Clients("", 0)
		return err == nil && len(list) == 3 && list[1].ClientID == "aa" && list[1].Connected && list[1].Watermark == 1
	}, "connected client aa not listed with its watermark")
	if err := sender.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		a, err := srv.Client("aa")
		return err == nil && !a.Connected && !a.LastSeen.IsZero()
	}, "client aa not shown disconnected with a last-seen time")
}

// settledLog collects OnSettled reports.
type settledLog struct {
	mu   sync.Mutex
	byID map[protocol.MessageID][]reliable.Settlement
}

func (l *settledLog) add(s reliable.Settlement) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byID == nil {
		l.byID = map[protocol.MessageID][]reliable.Settlement{}
	}
	l.byID[s.ID] = append(l.byID[s.ID], s)
}

func (l *settledLog) get(id protocol.MessageID) []reliable.Settlement {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]reliable.Settlement(nil), l.byID[id]...)
}

// TestOnSettledAfterClientRestart: a message queued by one run of the
// client and rejected after it restarted is reported by the new run's
// OnSettled, with the reason (it used to leave no trace but a counter).
func TestOnSettledAfterClientRestart(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "client.db")
	// No server at first: the message waits in the store.
	c, err := reliable.NewClient("ws://127.0.0.1:1/", path, &reliable.ClientOptions{BackoffMin: time.Hour, BackoffMax: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Send(ctx, []byte("bad input"))
	if err != nil {
		t.Fatal(err)
	}
	ok, err := c.Send(ctx, []byte("fine"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	_, url := startServer(t, func(_ context.Context, m *reliable.Message) error {
		if string(m.Payload) == "bad input" {
			return fmt.Errorf("cannot parse: %w", reliable.ErrRejected)
		}
		return nil
	}, nil)
	var log settledLog
	c2, err := reliable.NewClient(url, path, &reliable.ClientOptions{OnSettled: log.add})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	// The client is a new process in all but name: no receipts survive,
	// OnSettled must still tell.
	testkit.Eventually(t, 20*time.Second, func() bool { return len(log.get(r.ID())) > 0 && len(log.get(ok.ID())) > 0 },
		"OnSettled did not report the messages queued by the earlier run")
	got := log.get(r.ID())[0]
	if got.Status != reliable.StatusRejected || got.Code != protocol.RejectHandler || !strings.Contains(got.Reason, "cannot parse") || got.Seq != 1 {
		t.Fatalf("settlement %+v", got)
	}
	if got := log.get(ok.ID())[0]; got.Status != reliable.StatusAcked {
		t.Fatalf("settlement %+v", got)
	}
}

// TestPushStatusAndOnSettledAcrossServerRestart: a push queued by one run
// of the server and acknowledged after a restart is reported by the new
// run's OnSettled, and Status follows it from pending to acked.
func TestPushStatusAndOnSettledAcrossServerRestart(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "server.db")
	var s sink
	srv, err := reliable.NewServer(path, s.handle, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := srv.Send(ctx, "dev-st", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := srv.Status(r.ID()); err != nil || st.Status != reliable.StatusPending || st.ClientID != "dev-st" || st.Seq != 1 {
		t.Fatalf("Status before delivery: %+v, %v", st, err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	var log settledLog
	srv2, url := startServerAt(t, path, s.handle, &reliable.ServerOptions{OnSettled: log.add})
	in := newInboxSink()
	newClient(t, url, &reliable.ClientOptions{ClientID: "dev-st", Handler: in.handle})
	in.waitFor(t, ctx, 1)
	testkit.Eventually(t, 20*time.Second, func() bool { return len(log.get(r.ID())) > 0 }, "OnSettled did not report the push")
	if got := log.get(r.ID())[0]; got.Status != reliable.StatusAcked || got.ClientID != "dev-st" {
		t.Fatalf("settlement %+v", got)
	}
	st, err := srv2.Status(r.ID())
	if err != nil || st.Status != reliable.StatusAcked || st.Settled.IsZero() {
		t.Fatalf("Status after delivery: %+v, %v", st, err)
	}
	if _, err := srv2.Status(protocol.MessageID{1}); !errors.Is(err, reliable.ErrUnknownMessage) {
		t.Fatalf("Status of an unknown ID: %v", err)
	}
}

// TestClientDropOldest: with DropOldest a full queue evicts its oldest
// messages instead of blocking Send; they settle as evicted and the server
// gets the newest ones, in order, with the stream moving past the gap.
func TestClientDropOldest(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "client.db")
	var log settledLog
	// Offline at first: the queue fills and evicts.
	c, err := reliable.NewClient("ws://127.0.0.1:1/", path, &reliable.ClientOptions{
		ClientID: "agent", MaxQueued: 5, DropOldest: true, OnSettled: log.add,
		BackoffMin: time.Hour, BackoffMax: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	var rs []*reliable.Receipt
	for i := range 12 {
		r, err := c.Send(ctx, []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		rs = append(rs, r)
	}
	for _, r := range rs[:7] {
		if err := r.Wait(ctx); !errors.Is(err, reliable.ErrEvicted) {
			t.Fatalf("receipt of seq %d: %v, want ErrEvicted", r.Seq(), err)
		}
	}
	if st := c.Stats(); st.Queued != 5 {
		t.Fatalf("Stats().Queued = %d, want 5", st.Queued)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return len(log.get(rs[6].ID())) > 0 }, "evictions not reported to OnSettled")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	var s sink
	_, url := startServer(t, s.handle, nil)
	c2, err := reliable.NewClient(url, path, &reliable.ClientOptions{ClientID: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	checkSequence(t, s.got("agent"), []string{"7", "8", "9", "10", "11"})
}

// TestUnwatchedReceiptsCostNoMemory: pushes to offline clients whose
// receipts nobody looks at hold nothing in the server's memory; a receipt
// looked at later, even after its push settled, still reports it.
func TestUnwatchedReceiptsCostNoMemory(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	srv, url := startServer(t, s.handle, nil)
	ids := make([]string, 2000)
	for i := range ids {
		ids[i] = fmt.Sprintf("offline-%d", i)
	}
	rs, err := srv.SendMany(ctx, ids, reliable.OutgoingMessage{Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if n := reliable.WatchedReceipts(srv); n != 0 {
		t.Fatalf("the server holds %d receipts nobody waits on", n)
	}
	// Delivered while nobody watches; the receipt is looked at after.
	in := newInboxSink()
	newClient(t, url, &reliable.ClientOptions{ClientID: ids[7], Handler: in.handle})
	in.waitFor(t, ctx, 1)
	if err := rs[7].Wait(ctx); err != nil {
		t.Fatalf("late Wait: %v", err)
	}
	select {
	case <-rs[8].Done():
		t.Fatal("an undelivered push's receipt is done")
	default:
	}
	if n := reliable.WatchedReceipts(srv); n != 1 {
		t.Fatalf("%d receipts held, want 1 (the one being watched)", n)
	}
}

func TestServerSendBatch(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	srv, url := startServer(t, s.handle, nil)
	msgs, want := numbered(0, 300)
	rs, err := srv.SendBatch(ctx, "batched", msgs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if r.Seq() != uint64(i+1) {
			t.Fatalf("receipt %d has seq %d", i, r.Seq())
		}
	}
	in := newInboxSink()
	newClient(t, url, &reliable.ClientOptions{ClientID: "batched", Handler: in.handle})
	checkSequence(t, in.waitFor(t, ctx, len(want)), want)
	if err := rs[len(rs)-1].Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.SendBatch(ctx, "", msgs); !errors.Is(err, reliable.ErrInvalid) {
		t.Fatalf("SendBatch to an empty client ID: %v", err)
	}
}

// TestPushIdempotent: a producer that retries pushes with the IDs it gave
// them (after a timeout or a failover, not knowing whether they were
// committed) queues each once, pending or already acknowledged; a fan-out
// retried with its ID is deduplicated per recipient; an ID given to
// another client is refused.
func TestPushIdempotent(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	srv, url := startServer(t, s.handle, nil)
	x := protocol.MessageID(uuid.New())
	y := protocol.MessageID(uuid.New())
	first, err := srv.SendMessage(ctx, "dev-a", reliable.OutgoingMessage{ID: x, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	fanout, err := srv.SendMany(ctx, []string{"dev-a", "dev-b"}, reliable.OutgoingMessage{ID: y, Payload: []byte("y")})
	if err != nil {
		t.Fatal(err)
	}
	// The retries, while the clients are offline.
	again, err := srv.SendMessage(ctx, "dev-a", reliable.OutgoingMessage{ID: x, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if again.ID() != x || again.Seq() != first.Seq() {
		t.Fatalf("retry: ID %s seq %d, want %s seq %d", again.ID(), again.Seq(), x, first.Seq())
	}
	fanoutAgain, err := srv.SendMany(ctx, []string{"dev-b", "dev-a"}, reliable.OutgoingMessage{ID: y, Payload: []byte("y")})
	if err != nil {
		t.Fatal(err)
	}
	if fanoutAgain[0].ID() != fanout[1].ID() || fanoutAgain[1].Seq() != fanout[0].Seq() || fanout[0].ID() == fanout[1].ID() {
		t.Fatalf("fan-out retry: IDs %s %s seqs %d, first %s %s seqs %d %d", fanoutAgain[0].ID(), fanoutAgain[1].ID(),
			fanoutAgain[1].Seq(), fanout[0].ID(), fanout[1].ID(), fanout[0].Seq(), fanout[1].Seq())
	}
	if _, err := srv.SendMessage(ctx, "dev-b", reliable.OutgoingMessage{ID: x, Payload: []byte("x")}); !errors.Is(err, reliable.ErrInvalid) {
		t.Fatalf("dev-a's ID pushed to dev-b: %v, want ErrInvalid", err)
	}

	a, b := newInboxSink(), newInboxSink()
	newClient(t, url, &reliable.ClientOptions{ClientID: "dev-a", Handler: a.handle})
	newClient(t, url, &reliable.ClientOptions{ClientID: "dev-b", Handler: b.handle})
	for _, r := range []*reliable.Receipt{first, again, fanout[0], fanout[1], fanoutAgain[0], fanoutAgain[1]} {
		if err := r.Wait(ctx); err != nil {
			t.Fatalf("receipt %s: %v", r.ID(), err)
		}
	}
	// A retry after the ack queues nothing either: a message pushed after
	// it is the next thing each client sees.
	late, err := srv.SendMessage(ctx, "dev-a", reliable.OutgoingMessage{ID: x, Payload: []byte("x")})
	if err != nil {
		t.Fatalf("retry after the ack: %v", err)
	}
	if late.Seq() != first.Seq() || late.Wait(ctx) != nil {
		t.Fatalf("retry after the ack: seq %d, want %d; receipt %v", late.Seq(), first.Seq(), late.Wait(ctx))
	}
	if _, err := srv.Send(ctx, "dev-a", []byte("end")); err != nil {
		t.Fatal(err)
	}
	checkSequence(t, a.waitFor(t, ctx, 3), []string{"x", "y", "end"})
	checkSequence(t, b.got(), []string{"y"})
}

// TestLateReceiptsSettleRight: receipts first looked at after their
// pushes settled report how each settled, acknowledged or rejected, also
// past the outbox's in-memory record of rejections (maxUnhandled).
func TestLateReceiptsSettleRight(t *testing.T) {
	ctx := testCtx(t)
	var s sink
	srv, url := startServer(t, s.handle, nil)
	const n = 401 // every third rejected: more rejections than an outbox remembers; the last acked
	newClient(t, url, &reliable.ClientOptions{ClientID: "dev", Handler: func(_ context.Context, m *reliable.Message) error {
		if k, _ := strconv.Atoi(string(m.Payload)); k%3 == 0 {
			return reliable.ErrRejected
		}
		return nil
	}})
	// One batch, so that one ack settles many (and overflows the
	// outbox's record of rejections within a settlement).
	msgs, _ := numbered(0, n)
	rs, err := srv.SendBatch(ctx, "dev", msgs)
	if err != nil {
		t.Fatal(err)
	}
	// Settlements are reported in order: once the last settled, all have.
	if err := rs[n-1].Wait(ctx); err != nil {
		t.Fatalf("last receipt: %v", err)
	}
	for k, r := range rs[:n-1] {
		err := r.Wait(ctx)
		if rejected := errors.Is(err, reliable.ErrRejected); rejected != (k%3 == 0) || !rejected && err != nil {
			t.Fatalf("receipt of push %d: %v", k, err)
		}
	}
}
