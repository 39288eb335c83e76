package wsproxy_test

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/internal/wsproxy"
	"github.com/wsreliable/wsreliable/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait bounds every single receive in these tests.
const wait = 5 * time.Second

// echoServer is a trivial WebSocket server speaking wsreliable.v1: it
// records every message it receives and echoes it back. A text message
// "close <code>" makes it start a closing handshake with that code.
type echoServer struct {
	addr    string
	got     chan []byte        // every data message received, in order
	pings   chan string        // every ping payload received
	request chan *http.Request // every upgrade request

	mu    sync.Mutex
	conns map[*websocket.Conn]struct{}
	wg    sync.WaitGroup
}

func startEcho(tb testing.TB) *echoServer {
	tb.Helper()
	es := &echoServer{
		got:     make(chan []byte, 1024),
		pings:   make(chan string, 64),
		request: make(chan *http.Request, 64),
		conns:   make(map[*websocket.Conn]struct{}),
	}
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		es.wg.Add(1)
		defer es.wg.Done()
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		es.request <- r
		es.mu.Lock()
		es.conns[ws] = struct{}{}
		es.mu.Unlock()
		defer ws.Close()
		ws.SetPingHandler(func(data string) error {
			es.pings <- data
			return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(wait))
		})
		for {
			typ, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			es.got <- msg
			if code, ok := strings.CutPrefix(string(msg), "close "); ok && typ == websocket.TextMessage {
				n, _ := strconv.Atoi(code)
				_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(n, "asked to"), time.Now().Add(wait))
				continue // read the answer
			}
			_ = ws.SetWriteDeadline(time.Now().Add(wait))
			if err := ws.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	}))
	tb.Cleanup(func() {
		es.mu.Lock()
		for ws := range es.conns {
			ws.Close()
		}
		es.mu.Unlock()
		es.wg.Wait()
		hs.Close()
	})
	es.addr = strings.TrimPrefix(hs.URL, "http://")
	return es
}

// next returns the next message the echo server received.
func (es *echoServer) next(tb testing.TB) []byte {
	tb.Helper()
	select {
	case m := <-es.got:
		return m
	case <-time.After(wait):
		tb.Fatal("echo server received nothing")
		return nil
	}
}

func listen(tb testing.TB, target string, cfg wsproxy.Config) *wsproxy.Proxy {
	tb.Helper()
	p, err := wsproxy.Listen(target, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Error(err)
		}
	})
	return p
}

func dial(tb testing.TB, p *wsproxy.Proxy, path string, hdr http.Header) *websocket.Conn {
	tb.Helper()
	d := websocket.Dialer{HandshakeTimeout: wait, Subprotocols: []string{protocol.Subprotocol}}
	ws, resp, err := d.Dial(p.URL()+path, hdr)
	if err != nil {
		tb.Fatalf("dial through proxy: %v (response %v)", err, resp)
	}
	tb.Cleanup(func() { ws.Close() })
	return ws
}

func read(tb testing.TB, ws *websocket.Conn) []byte {
	tb.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(wait))
	_, msg, err := ws.ReadMessage()
	if err != nil {
		tb.Fatalf("client read: %v", err)
	}
	return msg
}

func write(tb testing.TB, ws *websocket.Conn, msg string) {
	tb.Helper()
	_ = ws.SetWriteDeadline(time.Now().Add(wait))
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte(msg)); err != nil {
		tb.Fatalf("client write: %v", err)
	}
}

// handshake exchanges the first message of each direction, which the
// proxy never faults by default.
func handshake(tb testing.TB, ws *websocket.Conn, es *echoServer) {
	tb.Helper()
	write(tb, ws, "hello")
	if got := es.next(tb); string(got) != "hello" {
		tb.Fatalf("server got %q, want hello", got)
	}
	if got := read(tb, ws); string(got) != "hello" {
		tb.Fatalf("client got %q, want hello", got)
	}
}

func TestForward(t *testing.T) {
	es := startEcho(t)
	p := listen(t, es.addr, wsproxy.Config{})
	ws := dial(t, p, "/ws?x=1", http.Header{"Authorization": {"Bearer t0k"}, "X-Trace": {"abc"}})
	if ws.Subprotocol() != protocol.Subprotocol {
		t.Fatalf("client negotiated %q, want %q", ws.Subprotocol(), protocol.Subprotocol)
	}
	r := <-es.request
	if got := r.URL.RequestURI(); got != "/ws?x=1" {
		t.Errorf("target saw %q, want /ws?x=1", got)
	}
	if got := r.Header.Get("Authorization"); got != "Bearer t0k" {
		t.Errorf("target saw Authorization %q", got)
	}
	if got := r.Header.Get("X-Trace"); got != "abc" {
		t.Errorf("target saw X-Trace %q", got)
	}
	if got := websocket.Subprotocols(r); len(got) != 1 || got[0] != protocol.Subprotocol {
		t.Errorf("target was offered subprotocols %q", got)
	}

	const n = 100
	for i := range n {
		write(t, ws, strconv.Itoa(i))
	}
	for i := range n {
		if got := es.next(t); string(got) != strconv.Itoa(i) {
			t.Fatalf("server got %q, want %d", got, i)
		}
		if got := read(t, ws); string(got) != strconv.Itoa(i) {
			t.Fatalf("client got %q, want %d", got, i)
		}
	}
	// The writer counts a message just after the receiver may have read it.
	testkit.Eventually(t, wait, func() bool {
		s := p.Stats()
		for _, d := range []wsproxy.DirStats{s.ClientToServer, s.ServerToClient} {
			if d.Messages != n || d.Forwarded != n || d.Faults() != 0 {
				return false
			}
		}
		return true
	}, "stats %+v, want %d messages forwarded each way without faults", p.Stats(), n)
	s := p.Stats()
	if s.Accepted != 1 || s.Open != 1 {
		t.Errorf("accepted %d, open %d, want 1, 1", s.Accepted, s.Open)
	}
}

func TestNoSubprotocolOffered(t *testing.T) {
	es := startEcho(t)
	p := listen(t, es.addr, wsproxy.Config{})
	d := websocket.Dialer{HandshakeTimeout: wait}
	ws, _, err := d.Dial(p.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if ws.Subprotocol() != "" {
		t.Fatalf("negotiated %q although the client offered none", ws.Subprotocol())
	}
}

func TestPingsForwarded(t *testing.T) {
	es := startEcho(t)
	p := listen(t, es.addr, wsproxy.Config{ClientToServer: wsproxy.Faults{Drop: 1}, ServerToClient: wsproxy.Faults{Drop: 1}})
	ws := dial(t, p, "/", nil)
	pongs := make(chan string, 1)
	ws.SetPongHandler(func(data string) error {
		pongs <- data
		return nil
	})
	if err := ws.WriteControl(websocket.PingMessage, []byte("stamp"), time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-es.pings:
		if got != "stamp" {
			t.Fatalf("server got ping %q", got)
		}
	case <-time.After(wait):
		t.Fatal("ping not forwarded")
	}
	// The pong is handled while reading; the hello echo follows it.
	write(t, ws, "hello")
	read(t, ws)
	select {
	case got := <-pongs:
		if got != "stamp" {
			t.Fatalf("client got pong %q", got)
		}
	default:
		t.Fatal("pong not forwarded before the next message")
	}
}

func TestRefusalPassedOn(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer hs.Close()
	p := listen(t, strings.TrimPrefix(hs.URL, "http://"), wsproxy.Config{})
	d := websocket.Dialer{HandshakeTimeout: wait, Subprotocols: []string{protocol.Subprotocol}}
	ws, resp, err := d.Dial(p.URL(), nil)
	if err == nil {
		ws.Close()
		t.Fatal("dial succeeded through a refusing target")
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "7" {
		t.Fatalf("got %v, want 503 with Retry-After 7", resp)
	}
	if s := p.Stats(); s.DialFailures != 1 || s.Accepted != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestTargetDown(t *testing.T) {
	addr := testkit.FreeAddr(t)
	p := listen(t, addr, wsproxy.Config{DialTimeout: time.Second})
	d := websocket.Dialer{HandshakeTimeout: wait}
	ws, resp, err := d.Dial(p.URL(), nil)
	if err == nil {
		ws.Close()
		t.Fatal("dial succeeded to a closed port")
	}
	if resp == nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("got %v, want 502", resp)
	}
}

// faultRig is one connection through a proxy faulting one direction:
// send writes toward the faulted receiver, recv reads what it received.
type faultRig struct {
	p    *wsproxy.Proxy
	send func(msg string)
	recv func() []byte
}

func newFaultRig(t *testing.T, d wsproxy.Direction, f wsproxy.Faults, tweak func(*wsproxy.Config)) *faultRig {
	t.Helper()
	es := startEcho(t)
	cfg := wsproxy.Config{Seed: 7}
	if d == wsproxy.ClientToServer {
		cfg.ClientToServer = f
	} else {
		cfg.ServerToClient = f
	}
	if tweak != nil {
		tweak(&cfg)
	}
	p := listen(t, es.addr, cfg)
	ws := dial(t, p, "/", nil)
	handshake(t, ws, es)
	r := &faultRig{p: p, send: func(msg string) { write(t, ws, msg) }}
	if d == wsproxy.ClientToServer {
		// The echoes travel back unfaulted; drain them so the client's
		// receive buffer never fills.
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
			}
		})
		t.Cleanup(func() {
			ws.Close()
			wg.Wait()
		})
		r.recv = func() []byte { return es.next(t) }
	} else {
		r.recv = func() []byte { return read(t, ws) }
	}
	return r
}

func (r *faultRig) dir(d wsproxy.Direction) wsproxy.DirStats {
	if d == wsproxy.ClientToServer {
		return r.p.Stats().ClientToServer
	}
	return r.p.Stats().ServerToClient
}

// forEachDirection runs fn once per direction as a subtest.
func forEachDirection(t *testing.T, fn func(t *testing.T, d wsproxy.Direction)) {
	for _, d := range []wsproxy.Direction{wsproxy.ClientToServer, wsproxy.ServerToClient} {
		t.Run(map[wsproxy.Direction]string{wsproxy.ClientToServer: "c2s", wsproxy.ServerToClient: "s2c"}[d], func(t *testing.T) {
			fn(t, d)
		})
	}
}

// settle waits until the counters of direction d satisfy ok: the writer
// counts a message just after the receiver may have read it.
func settle(t *testing.T, r *faultRig, d wsproxy.Direction, ok func(wsproxy.DirStats) bool) {
	t.Helper()
	testkit.Eventually(t, wait, func() bool { return ok(r.dir(d)) }, "stats %+v", r.dir(d))
}

func expect(t *testing.T, r *faultRig, want ...string) {
	t.Helper()
	for _, w := range want {
		if got := r.recv(); string(got) != w {
			t.Fatalf("received %q, want %q (sequence %q)", got, w, want)
		}
	}
}

func TestDuplicate(t *testing.T) {
	forEachDirection(t, func(t *testing.T, d wsproxy.Direction) {
		r := newFaultRig(t, d, wsproxy.Faults{Duplicate: 1}, nil)
		r.send("a")
		r.send("b")
		expect(t, r, "a", "a", "b", "b")
		settle(t, r, d, func(s wsproxy.DirStats) bool { return s.Duplicated == 2 && s.Forwarded == 1+4 && s.Faults() == 2 })
	})
}

func TestReorder(t *testing.T) {
	forEachDirection(t, func(t *testing.T, d wsproxy.Direction) {
		r := newFaultRig(t, d, wsproxy.Faults{Reorder: 1}, nil)
		for i := 1; i <= 4; i++ {
			r.send(strconv.Itoa(i))
		}
		expect(t, r, "2", "1", "4", "3")
		// A held message with no successor is released, not lost.
		r.send("5")
		expect(t, r, "5")
		settle(t, r, d, func(s wsproxy.DirStats) bool { return s.Reordered == 2 && s.Faults() == 2 })
	})
}

func TestDrop(t *testing.T) {
	forEachDirection(t, func(t *testing.T, d wsproxy.Direction) {
		r := newFaultRig(t, d, wsproxy.Faults{Drop: 1}, nil)
		r.send("a")
		r.send("b")
		testkit.Eventually(t, wait, func() bool { return r.dir(d).Dropped == 2 }, "drops not counted: %+v", r.dir(d))
		if err := r.p.SetConfig(wsproxy.Config{}); err != nil {
			t.Fatal(err)
		}
		r.send("c")
		expect(t, r, "c")
		settle(t, r, d, func(s wsproxy.DirStats) bool { return s.Dropped == 2 && s.Messages == 1+3 && s.Forwarded == 1+1 })
	})
}

func TestTruncate(t *testing.T) {
	forEachDirection(t, func(t *testing.T, d wsproxy.Direction) {
		r := newFaultRig(t, d, wsproxy.Faults{Truncate: 1}, nil)
		const n = 20
		msg := strings.Repeat("0123456789abcdef", 4)
		for range n {
			r.send(msg)
		}
		for range n {
			got := r.recv()
			if len(got) >= len(msg) || !strings.HasPrefix(msg, string(got)) {
				t.Fatalf("received %q, want a strict prefix of %q", got, msg)
			}
		}
		settle(t, r, d, func(s wsproxy.DirStats) bool { return s.Truncated == n })
	})
}

func TestGarbage(t *testing.T) {
	forEachDirection(t, func(t *testing.T, d wsproxy.Direction) {
		r := newFaultRig(t, d, wsproxy.Faults{Garbage: 1}, nil)
		const n = 20
		var version, unknown int
		for i := range n {
			r.send("m" + strconv.Itoa(i))
		}
		for i := range n {
			g := r.recv()
			err := protocol.Decode(g, func(protocol.Frame) error { return nil })
			switch {
			case errors.Is(err, protocol.ErrVersion):
				version++
			case errors.Is(err, protocol.ErrUnknownFrame):
				unknown++
			default:
				t.Fatalf("garbage %x decodes with %v, want a version or unknown-frame error", g, err)
			}
			expect(t, r, "m"+strconv.Itoa(i))
		}
		if version == 0 || unknown == 0 {
			t.Fatalf("garbage kinds: %d bad version, %d unknown frame; want both", version, unknown)
		}
		settle(t, r, d, func(s wsproxy.DirStats) bool { return s.Garbage == n && s.Forwarded == 1+n })
	})
}

func TestFaultHandshake(t *testing.T) {
	es := startEcho(t)
	p := listen(t, es.addr, wsproxy.Config{ClientToServer: wsproxy.Faults{Duplicate: 1}, FaultHandshake: true})
	ws := dial(t, p, "/", nil)
	write(t, ws, "hello")
	for range 2 {
		if got := es.next(t); string(got) != "hello" {
			t.Fatalf("server got %q", got)
		}
	}
}

func TestMixedFaultsDeterministic(t *testing.T) {
	f := wsproxy.Faults{Drop: 0.1, Duplicate: 0.1, Truncate: 0.1, Garbage: 0.1}
	run := func() wsproxy.DirStats {
		r := newFaultRig(t, wsproxy.ClientToServer, f, nil)
		for i := range 200 {
			r.send(strconv.Itoa(i))
		}
		r.send("end") // may be faulted; wait on the counters instead
		testkit.Eventually(t, wait, func() bool { return r.dir(wsproxy.ClientToServer).Messages == 1+201 },
			"messages not all read")
		return r.dir(wsproxy.ClientToServer)
	}
	a, b := run(), run()
	// Forwarded depends on how far the writer got; the choices do not.
	a.Closes, b.Closes, a.Forwarded, b.Forwarded = nil, nil, 0, 0
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("same seed, different faults:\n%+v\n%+v", a, b)
	}
	if a.Dropped == 0 || a.Duplicated == 0 || a.Truncated == 0 || a.Garbage == 0 {
		t.Fatalf("some fault never fired: %+v", a)
	}
}

func TestCloseCodes(t *testing.T) {
	t.Run("server", func(t *testing.T) {
		es := startEcho(t)
		p := listen(t, es.addr, wsproxy.Config{})
		ws := dial(t, p, "/", nil)
		handshake(t, ws, es)
		_ = ws.SetWriteDeadline(time.Now().Add(wait))
		if err := ws.WriteMessage(websocket.TextMessage, []byte("close 4005")); err != nil {
			t.Fatal(err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(wait))
		_, _, err := ws.ReadMessage()
		if !websocket.IsCloseError(err, 4005) {
			t.Fatalf("client read %v, want close 4005", err)
		}
		testkit.Eventually(t, wait, func() bool { return p.Stats().Open == 0 }, "connection not closed: %+v", p.Stats())
		s := p.Stats()
		if !maps.Equal(s.ServerToClient.Closes, map[protocol.CloseCode]int{protocol.CloseSequenceGap: 1}) || len(s.ClientToServer.Closes) != 0 {
			t.Fatalf("closes: server %v, client %v; want the server's 4005 only (the echo is not counted)",
				s.ServerToClient.Closes, s.ClientToServer.Closes)
		}
	})
	t.Run("client", func(t *testing.T) {
		es := startEcho(t)
		p := listen(t, es.addr, wsproxy.Config{})
		ws := dial(t, p, "/", nil)
		handshake(t, ws, es)
		msg := websocket.FormatCloseMessage(int(protocol.CloseNormal), "bye")
		if err := ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(wait))
		_, _, err := ws.ReadMessage()
		if !websocket.IsCloseError(err, int(protocol.CloseNormal)) {
			t.Fatalf("client read %v, want the echoed close 1000", err)
		}
		testkit.Eventually(t, wait, func() bool { return p.Stats().Open == 0 }, "connection not closed: %+v", p.Stats())
		s := p.Stats()
		if !maps.Equal(s.ClientToServer.Closes, map[protocol.CloseCode]int{protocol.CloseNormal: 1}) || len(s.ServerToClient.Closes) != 0 {
			t.Fatalf("closes: client %v, server %v; want the client's 1000 only",
				s.ClientToServer.Closes, s.ServerToClient.Closes)
		}
	})
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  wsproxy.Config
		want string
	}{
		{"probability above 1", wsproxy.Config{ClientToServer: wsproxy.Faults{Drop: 1.5}}, "ClientToServer.Drop"},
		{"negative probability", wsproxy.Config{ServerToClient: wsproxy.Faults{Garbage: -0.1}}, "ServerToClient.Garbage"},
		{"sum above 1", wsproxy.Config{ClientToServer: wsproxy.Faults{Drop: 0.6, Reorder: 0.6}}, "sum"},
		{"negative timeout", wsproxy.Config{WriteTimeout: -time.Second}, "WriteTimeout"},
		{"negative size", wsproxy.Config{MaxMessageSize: -1}, "MaxMessageSize"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := wsproxy.Listen("127.0.0.1:1", tc.cfg)
			if err == nil {
				p.Close()
				t.Fatal("Listen accepted an invalid config")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %q", err, tc.want)
			}
		})
	}
	p := listen(t, "127.0.0.1:1", wsproxy.Config{ClientToServer: wsproxy.Faults{Drop: 0.5}})
	if err := p.SetConfig(wsproxy.Config{ClientToServer: wsproxy.Faults{Drop: 2}}); err == nil {
		t.Fatal("SetConfig accepted an invalid config")
	}
	if got := p.Config().ClientToServer.Drop; got != 0.5 {
		t.Fatalf("invalid SetConfig changed the config: Drop %v", got)
	}
}

func TestCloseAbortsConnections(t *testing.T) {
	es := startEcho(t)
	p, err := wsproxy.Listen(es.addr, wsproxy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ws := dial(t, p, "/", nil)
	handshake(t, ws, es)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := p.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	_ = ws.SetReadDeadline(time.Now().Add(wait))
	if _, _, err := ws.ReadMessage(); err == nil || isTimeout(err) {
		t.Fatalf("read after Close: %v, want a broken connection", err)
	}
	d := websocket.Dialer{HandshakeTimeout: wait}
	if ws2, _, err := d.Dial(p.URL(), nil); err == nil {
		ws2.Close()
		t.Fatal("dial succeeded after Close")
	}
	if !strings.HasPrefix(p.URL(), "ws://127.0.0.1:") {
		t.Fatalf("URL %q is not on 127.0.0.1", p.URL())
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
