package wsreliable_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/internal/wsproxy"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
)

// Frame-level fault tests: reliable clients talk to a reliable server
// through internal/wsproxy, which keeps the TCP link healthy but
// duplicates, reorders, drops, truncates and injects WebSocket messages.
// Each test sends part of the traffic with faults on, observes how the
// receivers reacted (the close codes the proxy saw), then turns faults off,
// sends the rest and checks that everything drained: nothing lost, nothing
// doubled, every queue empty.

// faultyPhase bounds how long a test keeps faults on while waiting for
// them to fire. A lost final message stalls a client until more traffic
// comes (see TestFrameFaultLostTail), so the phase may end by this timeout
// rather than by its condition; the clean phase then recovers.
const faultyPhase = 10 * time.Second

// Close codes the proxy may see at any time: the client's own orderly
// close, and a server closing a session a reconnect took over.
var (
	okServerCloses = []protocol.CloseCode{protocol.CloseSuperseded}
	okClientCloses = []protocol.CloseCode{protocol.CloseNormal}
)

// ffRig is a server behind a fault proxy and reliable clients sending to
// it through the proxy.
type ffRig struct {
	led      *ledger
	proxy    *wsproxy.Proxy
	clients  []*reliable.Client
	paths    []string
	receipts [][]*reliable.Receipt
}

func newFFRig(t *testing.T, clients int, cfg wsproxy.Config) *ffRig {
	t.Helper()
	r := &ffRig{led: newLedger()}
	_, addr := startServer(t, r.led.handle)
	p, err := wsproxy.Listen(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("proxy close: %v", err)
		}
	})
	r.proxy = p
	for range clients {
		path := filepath.Join(t.TempDir(), "client.db")
		c, err := reliable.NewClient(p.URL()+"/", path, clientOptions())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		r.clients = append(r.clients, c)
		r.paths = append(r.paths, path)
	}
	r.receipts = make([][]*reliable.Receipt, clients)
	return r
}

// send has every client send payloads from..to-1.
func (r *ffRig) send(ctx context.Context, t *testing.T, from, to int) {
	t.Helper()
	for i, c := range r.clients {
		for n := from; n < to; n++ {
			rc, err := c.Send(ctx, []byte(strconv.Itoa(n)))
			if err != nil {
				t.Fatalf("client %d send %d: %v", i, n, err)
			}
			r.receipts[i] = append(r.receipts[i], rc)
		}
	}
}

func (r *ffRig) allDelivered(n int) bool {
	for _, c := range r.clients {
		if r.led.delivered(c.ID()) < n {
			return false
		}
	}
	return true
}

// run sends messages 0..faulty-1 with the proxy's faults on and waits
// until enough(stats) holds (or everything was delivered, or faultyPhase
// passed); then it turns faults off, sends faulty..total-1, drains and
// checks the outcome. It returns the proxy's stats.
func (r *ffRig) run(t *testing.T, faulty, total int, enough func(wsproxy.Stats) bool) wsproxy.Stats {
	t.Helper()
	ctx := testkit.Deadline(t, 2*time.Minute)
	r.send(ctx, t, 0, faulty)

	phase := time.NewTimer(faultyPhase)
	defer phase.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !enough(r.proxy.Stats()) && !r.allDelivered(faulty) {
		select {
		case <-tick.C:
			continue
		case <-phase.C:
			t.Logf("faulty phase timed out (stats %+v); going on without faults", r.proxy.Stats())
		}
		break
	}
	faults := r.proxy.Stats()
	if err := r.proxy.SetConfig(wsproxy.Config{}); err != nil {
		t.Fatal(err)
	}

	r.send(ctx, t, faulty, total)
	for i, c := range r.clients {
		if err := c.Drain(ctx); err != nil {
			t.Fatalf("client %d drain: %v (client %+v, proxy %+v)", i, err, c.Stats(), r.proxy.Stats())
		}
		for _, rc := range r.receipts[i] {
			if err := rc.Wait(ctx); err != nil {
				t.Fatalf("client %d receipt %d: %v", i, rc.Seq(), err)
			}
		}
	}
	for i, c := range r.clients {
		id := c.ID()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		_, st, err := queue.Inspect(r.paths[i])
		if err != nil {
			t.Fatal(err)
		}
		if st.Messages != 0 || st.LastSeq != uint64(total) {
			t.Errorf("client %d store: %d messages left, last seq %d, want 0 and %d", i, st.Messages, st.LastSeq, total)
		}
		if err := queue.Check(r.paths[i]); err != nil {
			t.Errorf("client %d store: %v", i, err)
		}
		if got := r.led.delivered(id); got != total {
			t.Errorf("client %d: handler saw %d distinct messages, want %d", i, got, total)
		}
	}
	r.led.mu.Lock()
	defer r.led.mu.Unlock()
	if r.led.dups != 0 || len(r.led.gaps) != 0 {
		t.Fatalf("handler saw %d duplicates, gaps %v", r.led.dups, r.led.gaps)
	}
	if r.led.total != len(r.clients)*total {
		t.Fatalf("handler calls %d, want %d", r.led.total, len(r.clients)*total)
	}
	return faults
}

// checkCloses fails the test if the proxy saw a close code outside the
// expected ones (plus those that may always occur).
func checkCloses(t *testing.T, s wsproxy.Stats, server, client []protocol.CloseCode) {
	t.Helper()
	for code, n := range s.ServerToClient.Closes {
		if !slices.Contains(server, code) && !slices.Contains(okServerCloses, code) {
			t.Errorf("server closed %d time(s) with %d (%s), expected only %v", n, code, code, server)
		}
	}
	for code, n := range s.ClientToServer.Closes {
		if !slices.Contains(client, code) && !slices.Contains(okClientCloses, code) {
			t.Errorf("client closed %d time(s) with %d (%s), expected only %v", n, code, code, client)
		}
	}
}

func logFigures(t *testing.T, s wsproxy.Stats) {
	t.Helper()
	for _, d := range []struct {
		name string
		s    wsproxy.DirStats
	}{{"client→server", s.ClientToServer}, {"server→client", s.ServerToClient}} {
		t.Logf("%s: %d messages, %d dropped, %d duplicated, %d reordered, %d truncated, %d garbage; closes started %s",
			d.name, d.s.Messages, d.s.Dropped, d.s.Duplicated, d.s.Reordered, d.s.Truncated, d.s.Garbage, closes(d.s.Closes))
	}
	t.Logf("connections proxied: %d", s.Accepted)
}

func closes(m map[protocol.CloseCode]int) string {
	codes := slices.Sorted(func(yield func(protocol.CloseCode) bool) {
		for c := range m {
			if !yield(c) {
				return
			}
		}
	})
	out := "{"
	for i, c := range codes {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%d: %d", c, m[c])
	}
	return out + "}"
}

// TestFrameFaultAll: three clients send 2,000 messages each through a
// proxy applying every fault in both directions for the first 1,800, then
// none. (a) The handler sees each message once, in order, although
// duplicates reached the server. (b) The server closed garbage and
// truncation with 1002 and sequence gaps with 4005. (c) After the faults
// stop everything drains and every queue is empty.
func TestFrameFaultAll(t *testing.T) {
	const (
		clients  = 3
		messages = 2000
		faulty   = 1800
	)
	f := wsproxy.Faults{Drop: 0.02, Duplicate: 0.04, Reorder: 0.03, Truncate: 0.02, Garbage: 0.02}
	r := newFFRig(t, clients, wsproxy.Config{Seed: 1, ClientToServer: f, ServerToClient: f})
	s := r.run(t, faulty, messages, func(s wsproxy.Stats) bool {
		c, v := s.ClientToServer, s.ServerToClient
		return c.Duplicated >= 3 && c.Garbage+c.Truncated >= 3 && c.Dropped+c.Reordered >= 3 &&
			v.Faults() >= 3 && s.ServerToClient.Closes[protocol.CloseSequenceGap] >= 1
	})
	logFigures(t, s)
	c := s.ClientToServer
	if c.Duplicated == 0 {
		t.Errorf("no duplicate reached the server, (a) is untested: %+v", c)
	}
	if c.Garbage+c.Truncated > 0 && s.ServerToClient.Closes[protocol.CloseProtocolError] == 0 {
		t.Errorf("%d garbage and %d truncated messages, but the server never closed with 1002: %v",
			c.Garbage, c.Truncated, s.ServerToClient.Closes)
	}
	if c.Garbage+c.Truncated == 0 || c.Dropped+c.Reordered == 0 {
		t.Errorf("faults did not fire, (b) is untested: %+v", c)
	}
	if s.ServerToClient.Closes[protocol.CloseSequenceGap] == 0 {
		t.Errorf("%d dropped and %d reordered messages, but the server never closed with 4005: %v",
			c.Dropped, c.Reordered, s.ServerToClient.Closes)
	}
	checkCloses(t, s,
		[]protocol.CloseCode{protocol.CloseProtocolError, protocol.CloseSequenceGap},
		[]protocol.CloseCode{protocol.CloseProtocolError})
}

// TestFrameFaultSingle applies one fault type in one direction, so a
// failure points at its cause, and checks the receiver's reaction: the
// close codes it must use and those it must not.
func TestFrameFaultSingle(t *testing.T) {
	const (
		messages = 800
		faulty   = 700
		p        = 0.1
	)
	c2s, s2c := wsproxy.ClientToServer, wsproxy.ServerToClient
	protoErr, gap := protocol.CloseProtocolError, protocol.CloseSequenceGap
	for _, tc := range []struct {
		name   string
		dir    wsproxy.Direction
		faults wsproxy.Faults
		count  func(wsproxy.DirStats) uint64
		// must: a close code the receiver must have used at least once;
		// zero when the fault is harmless. may: codes it may also use.
		must protocol.CloseCode
		may  []protocol.CloseCode
	}{
		{"c2s-duplicate", c2s, wsproxy.Faults{Duplicate: p}, func(s wsproxy.DirStats) uint64 { return s.Duplicated }, 0, nil},
		{"c2s-reorder", c2s, wsproxy.Faults{Reorder: p}, func(s wsproxy.DirStats) uint64 { return s.Reordered }, gap, nil},
		{"c2s-drop", c2s, wsproxy.Faults{Drop: p}, func(s wsproxy.DirStats) uint64 { return s.Dropped }, gap, nil},
		// A cut at a frame boundary leaves a valid, shorter batch: the
		// next message then shows a gap.
		{"c2s-truncate", c2s, wsproxy.Faults{Truncate: p}, func(s wsproxy.DirStats) uint64 { return s.Truncated }, protoErr, []protocol.CloseCode{gap}},
		{"c2s-garbage", c2s, wsproxy.Faults{Garbage: p}, func(s wsproxy.DirStats) uint64 { return s.Garbage }, protoErr, nil},
		{"s2c-duplicate", s2c, wsproxy.Faults{Duplicate: p}, func(s wsproxy.DirStats) uint64 { return s.Duplicated }, 0, nil},
		{"s2c-reorder", s2c, wsproxy.Faults{Reorder: p}, func(s wsproxy.DirStats) uint64 { return s.Reordered }, 0, nil},
		{"s2c-drop", s2c, wsproxy.Faults{Drop: p}, func(s wsproxy.DirStats) uint64 { return s.Dropped }, 0, nil},
		{"s2c-truncate", s2c, wsproxy.Faults{Truncate: p}, func(s wsproxy.DirStats) uint64 { return s.Truncated }, protoErr, nil},
		{"s2c-garbage", s2c, wsproxy.Faults{Garbage: p}, func(s wsproxy.DirStats) uint64 { return s.Garbage }, protoErr, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := wsproxy.Config{Seed: 2}
			dirOf := func(s wsproxy.Stats) wsproxy.DirStats { return s.ClientToServer }
			// The receiver of faulted client messages is the server, whose
			// closes travel server→client, and vice versa.
			receiverCloses := func(s wsproxy.Stats) map[protocol.CloseCode]int { return s.ServerToClient.Closes }
			if tc.dir == c2s {
				cfg.ClientToServer = tc.faults
			} else {
				cfg.ServerToClient = tc.faults
				dirOf = func(s wsproxy.Stats) wsproxy.DirStats { return s.ServerToClient }
				receiverCloses = func(s wsproxy.Stats) map[protocol.CloseCode]int { return s.ClientToServer.Closes }
			}
			r := newFFRig(t, 1, cfg)
			s := r.run(t, faulty, messages, func(s wsproxy.Stats) bool {
				return tc.count(dirOf(s)) >= 3 && (tc.must == 0 || receiverCloses(s)[tc.must] >= 1)
			})
			logFigures(t, s)
			d := dirOf(s)
			if n := tc.count(d); n == 0 || n != d.Faults() {
				t.Fatalf("%s: %d faults of the kind under test, %d in all: %+v", tc.name, n, d.Faults(), d)
			}
			if tc.must != 0 && receiverCloses(s)[tc.must] == 0 {
				t.Errorf("%s: %d faults, but the receiver never closed with %d (%s): %v",
					tc.name, tc.count(d), tc.must, tc.must, receiverCloses(s))
			}
			want := tc.may
			if tc.must != 0 {
				want = append(want, tc.must)
			}
			if tc.dir == c2s {
				checkCloses(t, s, want, nil)
			} else {
				checkCloses(t, s, nil, want)
			}
		})
	}
}

// TestFrameFaultLostTail drops the last message of a burst, with the link
// otherwise healthy, then stops all faults: the client must still get its
// message through (by an ack timeout, a retransmission or a reconnect).
//
// TestFrameFaultLostTail: when the final data message (c2s) or the final
// ack (s2c) is lost on a link that stays healthy, nothing that follows
// reveals the loss by itself. The server repeats its ack while idle (a lost
// ack) and the client reconnects after AckTimeout without ack progress (a
// lost data message); either way the message is delivered once.
func TestFrameFaultLostTail(t *testing.T) {
	// Ten heartbeat periods: far more than the client needs to notice
	// a dead link, so also enough to notice a missing ack.
	const patience = 10 * (hbInterval + hbTimeout)
	for _, dir := range []wsproxy.Direction{wsproxy.ClientToServer, wsproxy.ServerToClient} {
		name := map[wsproxy.Direction]string{wsproxy.ClientToServer: "c2s-data", wsproxy.ServerToClient: "s2c-ack"}[dir]
		t.Run(name, func(t *testing.T) {
			r := newFFRig(t, 1, wsproxy.Config{})
			c := r.clients[0]
			ctx := testkit.Deadline(t, time.Minute)
			testkit.Eventually(t, 10*time.Second, func() bool { return c.State() == reliable.StateConnected },
				"client never connected: %+v", c.Stats())
			drop := wsproxy.Config{ClientToServer: wsproxy.Faults{Drop: 1}}
			if dir == wsproxy.ServerToClient {
				drop = wsproxy.Config{ServerToClient: wsproxy.Faults{Drop: 1}}
			}
			if err := r.proxy.SetConfig(drop); err != nil {
				t.Fatal(err)
			}
			r.send(ctx, t, 0, 1)
			testkit.Eventually(t, 10*time.Second, func() bool {
				s := r.proxy.Stats()
				return s.ClientToServer.Dropped+s.ServerToClient.Dropped == 1
			}, "nothing dropped: %+v", r.proxy.Stats())
			if err := r.proxy.SetConfig(wsproxy.Config{}); err != nil {
				t.Fatal(err)
			}
			dctx, cancel := context.WithTimeout(ctx, patience)
			defer cancel()
			if err := c.Drain(dctx); err != nil {
				t.Fatalf("lost final %s never recovered within %v with the link healthy: "+
					"drain: %v; client %+v; handler saw %d; proxy %+v",
					name, patience, err, c.Stats(), r.led.delivered(c.ID()), r.proxy.Stats())
			}
		})
	}
}
