package reliable_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
)

// addrSink records what a server's handler saw, per address, with the
// stream and identity of each message.
type addrSink struct {
	mu      sync.Mutex
	seen    map[string][]string
	streams map[string]protocol.StreamID
	bad     []string
}

func (s *addrSink) handle(_ context.Context, m *reliable.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen, s.streams = map[string][]string{}, map[string]protocol.StreamID{}
	}
	if want := reliable.Address(m.Identity, m.ClientID); m.Address != want {
		s.bad = append(s.bad, fmt.Sprintf("Message.Address %q, want %q", m.Address, want))
	}
	s.seen[m.Address] = append(s.seen[m.Address], string(m.Payload))
	s.streams[m.Address] = m.Stream
	return nil
}

func (s *addrSink) got(addr string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen[addr])
}

func (s *addrSink) stream(addr string) protocol.StreamID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[addr]
}

func (s *addrSink) check(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.bad {
		tb.Error(b)
	}
}

// sendAll sends payloads on c and waits for every receipt.
func sendAll(tb testing.TB, ctx context.Context, c *reliable.Client, payloads ...string) {
	tb.Helper()
	rs := make([]*reliable.Receipt, len(payloads))
	for i, p := range payloads {
		r, err := c.Send(ctx, []byte(p))
		if err != nil {
			tb.Fatalf("send %q: %v", p, err)
		}
		rs[i] = r
	}
	for i, r := range rs {
		if err := r.Wait(ctx); err != nil {
			tb.Fatalf("receipt of %q: %v", payloads[i], err)
		}
	}
}

func names(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

// TestAttackClientIDOfAnotherIdentity is the first two rows: a
// second identity presents the victim's client ID, sends under it, and
// injects sequences 6 to 10 of the victim's own stream ID (copied from a
// log) with a hello that claims the stream starts at 6. Before client IDs
// were namespaced, its lines were printed under the victim's ID, and the
// victim's own 6 to 10 were then dropped as duplicates while its send
// reported success. Now every one of the victim's messages reaches the
// handler under the victim's address before its receipt settles, the
// attacker's land under its own address, and the victim is never
// disconnected.
func TestAttackClientIDOfAnotherIdentity(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	var s addrSink
	srv, url := startServer(t, s.handle, &reliable.ServerOptions{Authenticate: authByHeader})
	aliceAddr, bobAddr := reliable.Address("alice", "shared"), reliable.Address("bob", "shared")

	var aliceDrops atomic.Int32
	alice := newClient(t, url, &reliable.ClientOptions{
		ClientID: "shared",
		Header:   asIdentity("alice"),
		OnStateChange: func(st reliable.State, _ error) {
			if st == reliable.StateDisconnected {
				aliceDrops.Add(1)
			}
		},
	})
	sendAll(t, ctx, alice, names("a", 1, 5)...)
	victimStream := s.stream(aliceAddr)
	if victimStream.IsZero() {
		t.Fatal("no stream recorded for alice")
	}

	// Bob, a real client with the same client ID, sends under it.
	bob := newClient(t, url, &reliable.ClientOptions{ClientID: "shared", Header: asIdentity("bob")})
	sendAll(t, ctx, bob, "b1", "b2")
	// Bob's client is done. The injector below is bob too, on the same
	// address: a client still running would reconnect and take over
	// from it (4001) before its ack came, on a slow enough machine.
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}

	// Bob, by hand, injects 6..10 on alice's stream ID.
	ws, _, err := dialRaw(t, url, []string{protocol.Subprotocol}, http.Header{identityHeader: {"bob"}})
	if err != nil {
		t.Fatal(err)
	}
	sendFrames(t, ws, &protocol.Hello{ClientID: "shared", Stream: victimStream, StreamLow: 6})
	if w := readWelcome(t, ws); w.Watermark != 5 {
		t.Fatalf("the injector's welcome: watermark %d, want 5 (its own, fresh state resumed from its StreamLow)", w.Watermark)
	}
	var inject []protocol.Frame
	for seq := uint64(6); seq <= 10; seq++ {
		inject = append(inject, dataFrame(victimStream, seq, fmt.Sprintf("x%d", seq)))
	}
	sendFrames(t, ws, inject...)
	waitAck(t, ws, victimStream, 10)
	closeRawConn(ws)

	// Alice's own 6..10: every one is handled before its receipt settles.
	sendAll(t, ctx, alice, names("a", 6, 10)...)

	if got, want := s.got(aliceAddr), names("a", 1, 10); !slices.Equal(got, want) {
		t.Errorf("alice's address %q saw %q, want %q", aliceAddr, got, want)
	}
	if got, want := s.got(bobAddr), []string{"b1", "b2", "x6", "x7", "x8", "x9", "x10"}; !slices.Equal(got, want) {
		t.Errorf("bob's address %q saw %q, want %q", bobAddr, got, want)
	}
	if got := s.got("shared"); len(got) != 0 {
		t.Errorf("the bare client ID saw %q: an authenticated client's state must be under its address", got)
	}
	s.check(t)
	if alice.State() != reliable.StateConnected || aliceDrops.Load() != 0 {
		t.Errorf("alice is %v after %d disconnects; bob must not take over her session", alice.State(), aliceDrops.Load())
	}
	if st := srv.Stats(); st.Duplicates != 0 {
		t.Errorf("%d messages dropped as duplicates; none were", st.Duplicates)
	}

	// Pushes reach each by its address, and Client reports both.
	for _, c := range []struct {
		addr, identity string
		client         *reliable.Client
	}{{aliceAddr, "alice", alice}, {bobAddr, "bob", bob}} {
		info, err := srv.Client(c.addr)
		if err != nil {
			t.Fatal(err)
		}
		if info.Address != c.addr || info.ClientID != "shared" || info.Identity != c.identity {
			t.Errorf("Client(%q) = %+v", c.addr, info)
		}
	}
}

// TestAttackSquatClientID is the issue's row "an identity claims an
// unused client ID first": mallory uses "alice-phone" before alice does.
// Before, alice was then refused for ever with 4004; now mallory's use
// is its own client, and alice's phone works, receives its pushes, and
// mallory receives none of them.
func TestAttackSquatClientID(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	var s addrSink
	srv, url := startServer(t, s.handle, &reliable.ServerOptions{Authenticate: authByHeader})

	var mallorySaw atomic.Int32
	mallory := newClient(t, url, &reliable.ClientOptions{
		ClientID: "alice-phone", Header: asIdentity("mallory"),
		Handler: func(context.Context, *reliable.Message) error { mallorySaw.Add(1); return nil },
	})
	sendAll(t, ctx, mallory, "m1")

	pushed := make(chan string, 1)
	alice := newClient(t, url, &reliable.ClientOptions{
		ClientID: "alice-phone", Header: asIdentity("alice"),
		Handler: func(_ context.Context, m *reliable.Message) error {
			select {
			case pushed <- string(m.Payload):
			default:
			}
			return nil
		},
	})
	sendAll(t, ctx, alice, "a1", "a2")
	addr := reliable.Address("alice", "alice-phone")
	if got := s.got(addr); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Fatalf("alice's phone delivered %q", got)
	}
	r, err := srv.Send(ctx, addr, []byte("for alice"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-pushed:
		if p != "for alice" {
			t.Errorf("alice received %q", p)
		}
	case <-ctx.Done():
		t.Fatal("alice never received her push")
	}
	if n := mallorySaw.Load(); n != 0 {
		t.Errorf("mallory received %d of alice's pushes", n)
	}
	if st := alice.State(); st != reliable.StateConnected {
		t.Errorf("alice is %v", st)
	}
	s.check(t)
}

// TestHelloAddressRefused: a client ID with '/' (which would make
// addresses ambiguous) and an identity and client ID whose address is
// longer than protocol.MaxClientIDLen are closed with 1008, and a client
// configured with '/' fails at NewClient.
func TestHelloAddressRefused(t *testing.T) {
	var s addrSink
	srv, url := startServer(t, s.handle, &reliable.ServerOptions{Authenticate: authByHeader})
	for _, tc := range []struct {
		name, identity, clientID string
	}{
		{"slash", "alice", "a/b"},
		{"slash only", "alice", "/"},
		{"address too long", strings.Repeat("i", 200), strings.Repeat("c", 100)},
		{"escaped identity too long", strings.Repeat("/", 90), "c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws, _, err := dialRaw(t, url, []string{protocol.Subprotocol}, http.Header{identityHeader: {tc.identity}})
			if err != nil {
				t.Fatal(err)
			}
			sendFrames(t, ws, &protocol.Hello{ClientID: tc.clientID, Stream: newStream()})
			expectClose(t, ws, protocol.ClosePolicy)
		})
	}
	testkit.Eventually(t, ioTimeout, func() bool { return srv.Stats().Refused["client address"] == 4 },
		"Refused = %v, want 4 client addresses", srv.Stats().Refused)
	if st := srv.Stats(); st.Sessions != 0 || st.Clients != 0 {
		t.Errorf("stats after refused hellos: %+v", st)
	}
	_, err := reliable.NewClient(url, filepath.Join(t.TempDir(), "c.db"), &reliable.ClientOptions{ClientID: "a/b"})
	if err == nil {
		t.Fatal("NewClient with a client ID containing '/' succeeded")
	}
}

// TestLegacyBinding: a bare client ID bound to an identity by a server
// from before addresses held identities is still refused (4004) to the
// empty identity, which would otherwise resume its state.
func TestLegacyBinding(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	path := filepath.Join(t.TempDir(), "server.db")
	st, err := queue.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Bind(ctx, "old-device", "alice"); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	var s addrSink
	_, url := startServerAt(t, path, s.handle, nil)
	ws, _, err := dialRaw(t, url, []string{protocol.Subprotocol}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sendFrames(t, ws, &protocol.Hello{ClientID: "old-device", Stream: newStream()})
	expectClose(t, ws, protocol.CloseIdentity)
	// Another client ID of the empty identity works.
	ws2, _ := handshake(t, url, "new-device", newStream())
	closeRawConn(ws2)
}

// TestAddressDistinct: distinct (identity, client ID) pairs never share
// an address, whatever '%' and '/' the identity holds.
func TestAddressDistinct(t *testing.T) {
	pairs := [][2]string{
		{"", "c"}, {"", "a%2Fb"}, {"a", "b"}, {"a/b", "c"}, {"a%2Fb", "c"}, {"a%252Fb", "c"},
		{"a", "b%2Fc"}, {"%", "c"}, {"%25", "c"}, {"/", "c"}, {"%2F", "c"}, {"a/", "c"}, {"a", "/c"[1:]},
	}
	seen := map[string][2]string{}
	for _, p := range pairs {
		addr := reliable.Address(p[0], p[1])
		if prev, dup := seen[addr]; dup && prev != p {
			t.Errorf("Address%q and Address%q are both %q", prev, p, addr)
		}
		seen[addr] = p
	}
	if got := reliable.Address("", "device-1"); got != "device-1" {
		t.Errorf("the empty identity's address is %q, want the client ID", got)
	}
}

// FuzzAddress: an address gives back the identity and client ID it was
// made of, for any identity and any client ID without '/'.
func FuzzAddress(f *testing.F) {
	for _, p := range [][2]string{{"", "c"}, {"a/b", "c"}, {"%2F", "x"}, {"%", "%"}, {"spiffe://e.org/a", "gw-1"}, {"a%", "b"}} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, identity, clientID string) {
		if clientID == "" || strings.Contains(clientID, "/") {
			return
		}
		addr := reliable.Address(identity, clientID)
		if gi, gc := reliable.SplitAddress(addr); gi != identity || gc != clientID {
			t.Fatalf("Address(%q, %q) = %q splits into (%q, %q)", identity, clientID, addr, gi, gc)
		}
	})
}
