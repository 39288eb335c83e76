package reliable_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
)

// fleetDB is the store a fleet shares, in one process: one queue.Memory
// with the claims and push hints a shared database gives. Each server
// sees it through a fleetNode. The PostgreSQL store (store/postgres) is
// the real thing; this one lets the server's side of a fleet be tested
// without a database.
type fleetDB struct {
	mem *queue.Memory

	mu        sync.Mutex // serialises claims and fenced writes
	owners    map[string]fleetClaim
	listeners []func(string)
	history   map[string][]uint64 // peer/stream → every watermark written, in order
}

type fleetClaim struct {
	node  int
	epoch uint64
}

func newFleetDB() *fleetDB {
	return &fleetDB{mem: queue.NewMemory(nil), owners: map[string]fleetClaim{}, history: map[string][]uint64{}}
}

// fleetNode is one server's view of a fleetDB: a queue.ServerStore that is
// also a queue.Owner and a queue.Notifier.
type fleetNode struct {
	*queue.Memory
	db     *fleetDB
	id     int
	fenced atomic.Int64 // writes refused

	mu     sync.Mutex
	claims map[string]uint64
}

func (db *fleetDB) node(id int) *fleetNode {
	return &fleetNode{Memory: db.mem, db: db, id: id, claims: map[string]uint64{}}
}

func (n *fleetNode) Claim(_ context.Context, peer string) error {
	n.db.mu.Lock()
	defer n.db.mu.Unlock()
	c := fleetClaim{node: n.id, epoch: n.db.owners[peer].epoch + 1}
	n.db.owners[peer] = c
	n.mu.Lock()
	n.claims[peer] = c.epoch
	n.mu.Unlock()
	return nil
}

func (n *fleetNode) Release(peer string) {
	n.mu.Lock()
	delete(n.claims, peer)
	n.mu.Unlock()
}

// fenced runs write if this node holds the current claim on peer, under
// the database's lock, as a transaction with the claim check would.
func (n *fleetNode) fencedWrite(peer string, write func() error) error {
	n.db.mu.Lock()
	defer n.db.mu.Unlock()
	n.mu.Lock()
	epoch, ok := n.claims[peer]
	n.mu.Unlock()
	if c := n.db.owners[peer]; !ok || c.node != n.id || c.epoch != epoch {
		n.fenced.Add(1)
		return fmt.Errorf("node %d writing for %s: %w", n.id, peer, queue.ErrFenced)
	}
	return write()
}

func (n *fleetNode) SetWatermark(ctx context.Context, peer string, stream protocol.StreamID, seq uint64) error {
	return n.fencedWrite(peer, func() error {
		key := peer + "/" + stream.String()
		n.db.history[key] = append(n.db.history[key], seq)
		return n.Memory.SetWatermark(ctx, peer, stream, seq)
	})
}

func (n *fleetNode) Bind(ctx context.Context, peer, identity string) error {
	return n.fencedWrite(peer, func() error { return n.Memory.Bind(ctx, peer, identity) })
}

func (n *fleetNode) Touch(ctx context.Context, peer string) error {
	return n.fencedWrite(peer, func() error { return n.Memory.Touch(ctx, peer) })
}

func (n *fleetNode) AckOutbox(ctx context.Context, client string, upTo uint64, outcomes []queue.Outcome) error {
	return n.fencedWrite(client, func() error { return n.Memory.AckOutbox(ctx, client, upTo, outcomes) })
}

func (n *fleetNode) Push(ctx context.Context, msgs []queue.Push) ([]uint64, []queue.Evicted, error) {
	seqs, evicted, err := n.Memory.Push(ctx, msgs)
	if err == nil {
		n.db.mu.Lock()
		ls := append([]func(string){}, n.db.listeners...)
		n.db.mu.Unlock()
		for _, m := range msgs {
			for _, l := range ls {
				l(m.Client)
			}
		}
	}
	return seqs, evicted, err
}

func (n *fleetNode) Notify(fn func(string)) {
	n.db.mu.Lock()
	defer n.db.mu.Unlock()
	n.db.listeners = append(n.db.listeners, fn)
}

// Close leaves the shared memory store open for the other nodes.
func (n *fleetNode) Close() error { return nil }

// fleetServer is one running node.
type fleetServer struct {
	srv   *reliable.Server
	hs    *httptest.Server
	url   string
	store *fleetNode
	once  sync.Once
}

// kill stops the node at once: connections cut, sessions closed.
func (f *fleetServer) kill() {
	f.once.Do(func() {
		f.hs.CloseClientConnections()
		f.hs.Close()
		_ = f.srv.Close()
	})
}

// startFleetServer starts node id of db; heartbeat is its interval, and
// five of them its timeout.
func startFleetServer(t *testing.T, db *fleetDB, id int, heartbeat time.Duration, h reliable.Handler) *fleetServer {
	t.Helper()
	node := db.node(id)
	srv, err := reliable.NewServer("", h, &reliable.ServerOptions{
		Store:             node,
		HeartbeatInterval: heartbeat,
		HeartbeatTimeout:  5 * heartbeat,
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fleetServer{srv: srv, hs: httptest.NewServer(srv), store: node}
	f.url = "ws" + strings.TrimPrefix(f.hs.URL, "http")
	t.Cleanup(f.kill)
	return f
}

// firstSeen is the sequence of first sightings of each payload and how
// many were seen again.
func firstSeen(got []string) (first []string, dups int) {
	seen := map[string]bool{}
	for _, p := range got {
		if seen[p] {
			dups++
			continue
		}
		seen[p] = true
		first = append(first, p)
	}
	return first, dups
}

// TestFleetNodesDie: three servers share one store; clients spread over
// them send and receive pushes (made on any node). Two of the nodes are
// killed mid-stream: every client resumes on a node still up, nothing is
// lost either way, pushes arrive exactly once, and a client message is
// handled again only if a killed node handled it without committing.
func TestFleetNodesDie(t *testing.T) {
	ctx := testkit.Deadline(t, 60*time.Second)
	const clients, perClient = 6, 300
	db := newFleetDB()
	t.Cleanup(func() { _ = db.mem.Close() })

	var mu sync.Mutex
	handled := map[string][]string{} // client → payloads, in handling order
	handler := func(_ context.Context, m *reliable.Message) error {
		mu.Lock()
		handled[m.ClientID] = append(handled[m.ClientID], string(m.Payload))
		mu.Unlock()
		return nil
	}
	nodes := make([]*fleetServer, 3)
	for i := range nodes {
		nodes[i] = startFleetServer(t, db, i, 200*time.Millisecond, handler)
	}

	cs := make([]*reliable.Client, clients)
	sinks := make([]*inboxSink, clients)
	for i := range cs {
		sinks[i] = newInboxSink()
		var fallback []string
		for k := 1; k < len(nodes); k++ {
			fallback = append(fallback, nodes[(i+k)%len(nodes)].url)
		}
		c, err := reliable.NewClient(nodes[i%len(nodes)].url, filepath.Join(t.TempDir(), "c.db"), &reliable.ClientOptions{
			ClientID:          fmt.Sprintf("device-%d", i),
			FallbackURLs:      fallback,
			Handler:           sinks[i].handle,
			HeartbeatInterval: 200 * time.Millisecond,
			HeartbeatTimeout:  time.Second,
			BackoffMax:        200 * time.Millisecond,
			AckBatch:          16,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		cs[i] = c
	}

	// Senders and pushers run while the nodes die.
	var wg sync.WaitGroup
	var sent, pushed atomic.Int64
	errs := make(chan error, 2*clients)
	for i, c := range cs {
		wg.Go(func() {
			for k := range perClient {
				if _, err := c.Send(ctx, []byte(strconv.Itoa(k))); err != nil {
					errs <- fmt.Errorf("client %d send %d: %w", i, k, err)
					return
				}
				sent.Add(1)
			}
		})
		wg.Go(func() {
			for k, skip := 0, 0; k < perClient; {
				node := nodes[(i+k+skip)%len(nodes)]
				_, err := node.srv.Send(ctx, c.ID(), []byte(strconv.Itoa(k)))
				switch {
				case errors.Is(err, reliable.ErrClosed): // that node is dead: the next one
					skip++
					continue
				case err != nil:
					errs <- fmt.Errorf("push %d to client %d: %w", k, i, err)
					return
				}
				pushed.Add(1)
				k++
			}
		})
	}
	total := int64(clients * perClient)
	for _, victim := range nodes[:2] {
		// Kill once traffic is well under way, between a third and two
		// thirds of it.
		target := total / 3
		if victim == nodes[1] {
			target = 2 * total / 3
		}
		testkit.Eventually(t, 30*time.Second, func() bool { return sent.Load() >= target && pushed.Load() >= target },
			"traffic reaching %d (sent %d, pushed %d)", target, sent.Load(), pushed.Load())
		victim.kill()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	for i, c := range cs {
		if err := c.Drain(ctx); err != nil {
			t.Fatalf("client %d: drain: %v", i, err)
		}
		got := sinks[i].waitFor(t, ctx, perClient)
		for k, p := range got {
			if p != strconv.Itoa(k) {
				t.Fatalf("client %d: push %d is %q: pushes must arrive once, in order", i, k, p)
			}
		}
	}
	totalDups := 0
	for i, c := range cs {
		mu.Lock()
		got := append([]string(nil), handled[c.ID()]...)
		mu.Unlock()
		first, dups := firstSeen(got)
		if len(first) != perClient {
			t.Fatalf("client %d: %d distinct messages handled, want %d", i, len(first), perClient)
		}
		for k, p := range first {
			if p != strconv.Itoa(k) {
				t.Fatalf("client %d: message %d handled first is %q: out of order", i, k, p)
			}
		}
		// Each kill can cost at most what a node handled and had not
		// committed: one ack batch.
		if dups > 2*16 {
			t.Errorf("client %d: %d messages handled twice, more than two kills' worth of ack batches", i, dups)
		}
		totalDups += dups
	}
	for key, h := range db.history {
		for j := 1; j < len(h); j++ {
			if h[j] < h[j-1] {
				t.Fatalf("watermark of %s moved backwards: %v", key, h)
			}
		}
	}
	t.Logf("%d clients × %d messages each way over 3 nodes, 2 killed: 0 lost, pushes exactly once, %d client messages handled twice",
		clients, perClient, totalDups)
}

// TestFleetFencesStaleNode: a node whose session of a client lives on
// after the client moved to another node (a half-open link) writes
// nothing once the other node has claimed the client: its late watermark
// commit is refused, the watermark never moves backwards, and the
// stale session ends.
func TestFleetFencesStaleNode(t *testing.T) {
	ctx := testkit.Deadline(t, 60*time.Second)
	db := newFleetDB()
	t.Cleanup(func() { _ = db.mem.Close() })

	// Node A's handler blocks on message 5 until the test releases it,
	// so A handles it after the client has moved on.
	release := make(chan struct{})
	blocked := make(chan struct{})
	var bOnce sync.Once
	var sa, sb sink
	// A's heartbeat is slow, so its session outlives the silent link
	// until the test releases the handler.
	a := startFleetServer(t, db, 0, 2*time.Second, func(ctx context.Context, m *reliable.Message) error {
		if string(m.Payload) == "5" {
			bOnce.Do(func() { close(blocked) })
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return sa.handle(ctx, m)
	})
	b := startFleetServer(t, db, 1, 200*time.Millisecond, sb.handle)

	proxy := testkit.NewProxy(t, strings.TrimPrefix(a.url, "ws://"))
	c, err := reliable.NewClient("ws://"+proxy.Addr(), filepath.Join(t.TempDir(), "c.db"), &reliable.ClientOptions{
		FallbackURLs:      []string{b.url},
		HeartbeatInterval: 100 * time.Millisecond,
		HeartbeatTimeout:  300 * time.Millisecond,
		BackoffMax:        100 * time.Millisecond,
		AckBatch:          1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	const n = 20
	// 0-4 are acknowledged, so committed on A, before 5 is sent: in one
	// batch with 5 they would be committed only after 5's handler
	// returns, and B would rightly handle them again.
	for k := range n {
		if k == 5 {
			if err := c.Drain(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Send(ctx, []byte(strconv.Itoa(k))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-blocked:
	case <-ctx.Done():
		t.Fatal("node A never got message 5")
	}
	// The link to A goes silent: the client moves to B, which claims it
	// and handles 5 onwards.
	proxy.Stall()
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	fencedBefore := a.store.fenced.Load()
	close(release) // A's handler returns: A tries to commit 5
	testkit.Eventually(t, 10*time.Second, func() bool { return a.store.fenced.Load() > fencedBefore },
		"node A's late commit to be fenced out")
	testkit.Eventually(t, 30*time.Second, func() bool { return a.srv.Stats().Sessions == 0 },
		"node A's stale session to end")
	for key, h := range db.history {
		for j := 1; j < len(h); j++ {
			if h[j] < h[j-1] {
				t.Fatalf("watermark of %s moved backwards: %v", key, h)
			}
		}
	}
	if got := sb.count(c.ID()); got != n-5 {
		t.Errorf("node B handled %d messages, want %d (5 onwards): %v", got, n-5, sb.got(c.ID()))
	}
}

// TestHandlerFencedEndsSession: a handler error wrapping queue.ErrFenced
// (a fleet's transactional handler finding the client owned elsewhere)
// is not retried on the session: the session ends with 1001 at once, the
// client reconnects, and the message is handled on the next session.
func TestHandlerFencedEndsSession(t *testing.T) {
	ctx := testkit.Deadline(t, 30*time.Second)
	var (
		srv      *reliable.Server
		mu       sync.Mutex
		calls    []int64 // the server's Connects at each call for "3"
		fencedOK atomic.Bool
		s        sink
	)
	srv, url := startServer(t, func(ctx context.Context, m *reliable.Message) error {
		if string(m.Payload) == "3" {
			mu.Lock()
			calls = append(calls, int64(srv.Stats().Connects))
			mu.Unlock()
			if !fencedOK.Swap(true) {
				return fmt.Errorf("test: %w", queue.ErrFenced)
			}
		}
		return s.handle(ctx, m)
	}, &reliable.ServerOptions{HeartbeatInterval: 200 * time.Millisecond, HeartbeatTimeout: time.Second})
	c := newClient(t, url, &reliable.ClientOptions{BackoffMax: 100 * time.Millisecond})
	for k := range 6 {
		if _, err := c.Send(ctx, []byte(strconv.Itoa(k))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 || calls[1] <= calls[0] {
		t.Fatalf("handler calls for the fenced message at connects %v: want one, then one on a later session", calls)
	}
	if got := s.got(c.ID()); strings.Join(got, ",") != "0,1,2,3,4,5" {
		t.Fatalf("handled %v", got)
	}
	if n := srv.Stats().Disconnects[protocol.CloseGoingAway]; n < 1 {
		t.Fatalf("no session closed with 1001 (%v)", srv.Stats().Disconnects)
	}
}
