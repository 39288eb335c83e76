package reliable_test

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/reliable"
)

// attackSession dials url as identity (with extra headers) and sends a
// hello for clientID on stream. It returns the connection, or the HTTP
// response of a refused handshake.
func attackSession(tb testing.TB, url string, hdr http.Header, clientID string, stream protocol.StreamID) (*websocket.Conn, *http.Response, error) {
	tb.Helper()
	ws, resp, err := dialRaw(tb, url, []string{protocol.Subprotocol}, hdr)
	if err != nil {
		return nil, resp, err
	}
	_ = ws.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Hello{ClientID: clientID, Stream: stream})); err != nil {
		return nil, nil, err
	}
	return ws, nil, nil
}

// checkTooMany checks that a refused handshake was answered 429 with a
// Retry-After of at least a second.
func checkTooMany(resp *http.Response, err error) error {
	if resp == nil {
		return err
	}
	if resp.StatusCode != http.StatusTooManyRequests {
		return errors.New("HTTP " + resp.Status + ", want 429")
	}
	if ra, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr != nil || ra < 1 {
		return errors.New("Retry-After " + strconv.Quote(resp.Header.Get("Retry-After")) + ", want whole seconds, at least 1")
	}
	return nil
}

// churn is the connection-churn attack: it connects again and again as
// hdr's identity, each time with a fresh client ID, one message each,
// until stop is closed (once at least minRefused handshakes were
// refused) or maxTries. Refusals must be 429 with Retry-After.
type churn struct {
	accepted, refused atomic.Int64
	start, end        time.Time
}

func (c *churn) run(t *testing.T, url string, hdr http.Header, minRefused int64, maxTries int, stop <-chan struct{}) {
	c.start = time.Now()
	defer func() { c.end = time.Now() }()
	for i := 0; i < maxTries; i++ {
		if c.refused.Load() >= minRefused {
			select {
			case <-stop:
				return
			default:
			}
		}
		stream := newStream()
		ws, resp, err := attackSession(t, url, hdr, "churn-"+strconv.Itoa(i), stream)
		if err != nil {
			if cerr := checkTooMany(resp, err); cerr != nil {
				t.Errorf("attempt %d refused: %v", i, cerr)
				return
			}
			c.refused.Add(1)
			continue
		}
		c.accepted.Add(1)
		_ = ws.SetWriteDeadline(time.Now().Add(ioTimeout))
		_ = ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(dataFrame(stream, 1, "churn")))
		ws.Close()
	}
}

// maxAllowed is what a bucket of rate a second and burst allows over
// elapsed, with a token of slack for rounding.
func maxAllowed(rate float64, burst int, elapsed time.Duration) int64 {
	return int64(math.Floor(float64(burst)+rate*elapsed.Seconds())) + 1
}

// churnWhileHonest churns handshakes on url with hdr while honest (alice's
// "device") sends 100 messages, then checks that they all arrived, in
// order, and that the churn was refused, its accepted handshakes within
// a bucket of rate a second and a second's burst. It returns the churn.
func churnWhileHonest(t *testing.T, ctx context.Context, url string, hdr http.Header, honest *reliable.Client, s *sink, rate float64) *churn {
	t.Helper()
	var (
		c    churn
		wg   sync.WaitGroup
		stop = make(chan struct{})
	)
	wg.Go(func() { c.run(t, url, hdr, 20, 5_000, stop) })
	want := names("m", 1, 100)
	sendAll(t, ctx, honest, want...)
	close(stop)
	wg.Wait()
	if got := s.got(reliable.Address("alice", "device")); !slices.Equal(got, want) {
		t.Errorf("the honest client's messages: got %d, want %d in order", len(got), len(want))
	}
	if c.refused.Load() == 0 {
		t.Fatalf("no handshake refused: %d accepted", c.accepted.Load())
	}
	if bound := maxAllowed(rate, int(rate), c.end.Sub(c.start)); c.accepted.Load() > bound {
		t.Errorf("%d handshakes accepted in %v, over the bucket's %d", c.accepted.Load(), c.end.Sub(c.start), bound)
	}
	return &c
}

// TestHandshakeRatePerIdentity is connection churn by an authenticated
// identity: fresh client IDs, one message each, as fast as it can. Its
// handshakes beyond MaxHandshakeRatePerIdentity are answered 429 with
// Retry-After before the upgrade; those accepted stay within the
// bucket's burst + rate × elapsed; the server stays up, and another
// identity's client connected meanwhile delivers everything, in order.
func TestHandshakeRatePerIdentity(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	const rate = 20.0 // burst: one second's worth
	var s sink
	srv, url := startServer(t, s.handle, &reliable.ServerOptions{Authenticate: authByHeader, MaxHandshakeRatePerIdentity: rate})
	honest := newClient(t, url, &reliable.ClientOptions{ClientID: "device", Header: asIdentity("alice")})

	c := churnWhileHonest(t, ctx, url, http.Header{identityHeader: {"mallory"}}, honest, &s, rate)
	st := srv.Stats()
	if n := st.Refused["handshakes per identity"]; n != uint64(c.refused.Load()) {
		t.Errorf("Refused[handshakes per identity] = %d, the attacker saw %d refusals", n, c.refused.Load())
	}
	if st.Disconnects[protocol.CloseSuperseded] != 0 {
		t.Errorf("sessions superseded: %v", st.Disconnects)
	}
	// The server is up: the honest identity connects again at once.
	ws, resp, err := attackSession(t, url, http.Header{identityHeader: {"alice"}}, "second", newStream())
	if err != nil {
		t.Fatalf("alice after the attack: %v (%v)", err, resp)
	}
	readWelcome(t, ws)
	t.Logf("churn: %d handshakes accepted, %d refused in %v", c.accepted.Load(), c.refused.Load(), c.end.Sub(c.start).Round(time.Millisecond))
}

// TestHandshakeRatePerIP is connection churn from one IP (as a trusted
// reverse proxy reports it, through RemoteAddr), without credentials:
// beyond MaxHandshakeRatePerIP its attempts are answered 429 before
// Authenticate even runs. A client from another IP delivers everything;
// loopback peers are not counted.
func TestHandshakeRatePerIP(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	const (
		rate     = 10.0
		attacker = "203.0.113.7"
	)
	var (
		s     sink
		mu    sync.Mutex
		calls = map[string]int{} // Authenticate calls by IP
	)
	srv, err := reliable.NewServer(filepath.Join(t.TempDir(), "server.db"), s.handle, &reliable.ServerOptions{
		MaxHandshakeRatePerIP: rate,
		Authenticate: func(r *http.Request) (string, error) {
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			mu.Lock()
			calls[host]++
			mu.Unlock()
			return authByHeader(r)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The proxy: X-Test-IP becomes the request's remote address.
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ip := r.Header.Get("X-Test-IP"); ip != "" {
			r.RemoteAddr = net.JoinHostPort(ip, "1")
		}
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		hs.Close()
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	url := "ws" + strings.TrimPrefix(hs.URL, "http")

	honest := newClient(t, url, &reliable.ClientOptions{ClientID: "device", Header: func(context.Context) (http.Header, error) {
		return http.Header{identityHeader: {"alice"}, "X-Test-IP": {"198.51.100.1"}}, nil
	}})
	c := churnWhileHonest(t, ctx, url, http.Header{identityHeader: {"mallory"}, "X-Test-IP": {attacker}}, honest, &s, rate)
	mu.Lock()
	authCalls := calls[attacker]
	mu.Unlock()
	if int64(authCalls) != c.accepted.Load() {
		t.Errorf("Authenticate ran %d times for the attacker's IP, which had %d handshakes accepted: refusals must come first", authCalls, c.accepted.Load())
	}
	if n := srv.Stats().Refused["handshakes per IP"]; n != uint64(c.refused.Load()) {
		t.Errorf("Refused[handshakes per IP] = %d, the attacker saw %d refusals", n, c.refused.Load())
	}
	// Loopback (a local proxy, these tests) is not counted: three
	// bursts' worth of handshakes in a row all go through.
	for i := range 3 * int(rate) {
		ws, resp, err := attackSession(t, url, http.Header{identityHeader: {"bob"}}, "loop", newStream())
		if err != nil {
			t.Fatalf("loopback handshake %d: %v (%v)", i, err, resp)
		}
		ws.Close()
	}
}

// TestHandshakeRateClientRetries: a Client refused by a handshake rate
// (429 with Retry-After) is not stopped: it reports the refusal as a
// *CloseError with code 1013 and the hint, waits at least the hint and
// connects, and its messages are delivered.
func TestHandshakeRateClientRetries(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	var s sink
	// Half a handshake a second: the second client comes within the
	// 2 s the first one's token takes to come back.
	srv, url := startServer(t, s.handle, &reliable.ServerOptions{Authenticate: authByHeader, MaxHandshakeRatePerIdentity: 0.5})
	first := newClient(t, url, &reliable.ClientOptions{ClientID: "first", Header: asIdentity("alice")})
	sendAll(t, ctx, first, "1")

	refusedCh := make(chan error, 16)
	second := newClient(t, url, &reliable.ClientOptions{ClientID: "second", Header: asIdentity("alice"),
		OnStateChange: func(st reliable.State, err error) {
			var ce *reliable.CloseError
			if errors.As(err, &ce) {
				select {
				case refusedCh <- err:
				default:
				}
			}
		}})
	sendAll(t, ctx, second, "2")
	select {
	case err := <-refusedCh:
		var ce *reliable.CloseError
		if !errors.As(err, &ce) || ce.Code != protocol.CloseTryAgainLater || ce.RetryAfter < time.Second {
			t.Errorf("refusal %v (%+v), want 1013 with a hint of at least 1s", err, ce)
		}
		if n := srv.Stats().Refused["handshakes per identity"]; n == 0 {
			t.Errorf("the refusal was not the handshake rate's: Refused %v", srv.Stats().Refused)
		}
	default:
		t.Errorf("the second client was never refused (Refused %v)", srv.Stats().Refused)
	}
	if got := s.got(reliable.Address("alice", "second")); !slices.Equal(got, []string{"2"}) {
		t.Errorf("handler saw %q from the second client", got)
	}
}

// TestByteRate is the large-message flood: one identity sends 32 KiB
// messages on two connections without waiting for acknowledgements. Its
// bytes reach the handler no faster than MaxByteRate allows the identity
// (both connections share one bucket: by the time each is handled, at
// most burst + rate × elapsed), every one of them is delivered, and
// another identity's client, sending meanwhile, delivers everything.
func TestByteRate(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	const (
		rate  = 384 << 10
		burst = 128 << 10
		size  = 32 << 10
		each  = 8 // messages per connection
		conns = 2
	)
	var (
		s     sink
		mu    sync.Mutex
		bytes int64 // mallory's wire bytes handled so far (payload + frame header, at least)
		over  []string
		start time.Time
	)
	srv, url := startServer(t, func(ctx context.Context, m *reliable.Message) error {
		if m.Identity == "mallory" {
			mu.Lock()
			bytes += int64(len(m.Payload))
			if bound := burst + rate*time.Since(start).Seconds(); float64(bytes) > bound {
				over = append(over, strconv.FormatInt(bytes, 10)+" bytes at "+time.Since(start).String())
			}
			mu.Unlock()
		}
		return s.handle(ctx, m)
	}, &reliable.ServerOptions{Authenticate: authByHeader, MaxByteRate: rate, ByteBurst: burst, MaxMessageSize: 64 << 10, MaxInFlightBytes: 1 << 20})
	honest := newClient(t, url, &reliable.ClientOptions{ClientID: "device", Header: asIdentity("alice")})
	sendAll(t, ctx, honest, "warm-up")

	mu.Lock()
	start = time.Now() // before mallory's bucket exists
	mu.Unlock()
	var wg sync.WaitGroup
	payload := strings.Repeat("x", size)
	for i := range conns {
		stream := newStream()
		ws, resp, err := attackSession(t, url, http.Header{identityHeader: {"mallory"}}, "big-"+strconv.Itoa(i), stream)
		if err != nil {
			t.Fatalf("mallory's connection %d: %v (%v)", i, err, resp)
		}
		readWelcome(t, ws)
		wg.Go(func() {
			for seq := uint64(1); seq <= each; seq++ {
				_ = ws.SetWriteDeadline(time.Now().Add(testTimeout))
				if err := ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(dataFrame(stream, seq, payload))); err != nil {
					t.Errorf("mallory's write %d on connection %d: %v", seq, i, err)
					return
				}
			}
		})
	}
	want := names("m", 1, 50)
	sendAll(t, ctx, honest, want...)
	wg.Wait()
	testkit.Eventually(t, testTimeout, func() bool {
		return s.count(reliable.Address("mallory", "big-0"))+s.count(reliable.Address("mallory", "big-1")) == conns*each
	}, "mallory's messages were not all delivered")

	if got := s.got(reliable.Address("alice", "device")); !slices.Equal(got, append([]string{"warm-up"}, want...)) {
		t.Errorf("the honest client's messages: got %d, want %d in order", len(got), len(want)+1)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(over) > 0 {
		t.Errorf("mallory's bytes reached the handler faster than %d B/s (burst %d): %q", rate, burst, over)
	}
	st := srv.Stats()
	if st.ByteRateWaits == 0 {
		t.Errorf("no session ever waited for its byte rate: %+v", st)
	}
	t.Logf("%d bytes from 2 connections of one identity at %d B/s (burst %d) in %v; %d waits, %v waited",
		bytes, rate, burst, time.Since(start).Round(time.Millisecond), st.ByteRateWaits, st.ByteRateWaited.Round(time.Millisecond))
}

// TestRateLimitOptions: a NaN rate or a negative burst is a configuration
// error naming the field.
func TestRateLimitOptions(t *testing.T) {
	for _, tt := range []struct {
		field string
		o     reliable.ServerOptions
	}{
		{"MaxByteRate", reliable.ServerOptions{MaxByteRate: math.NaN()}},
		{"ByteBurst", reliable.ServerOptions{ByteBurst: -1}},
		{"MaxHandshakeRatePerIP", reliable.ServerOptions{MaxHandshakeRatePerIP: math.NaN()}},
		{"MaxHandshakeRatePerIdentity", reliable.ServerOptions{MaxHandshakeRatePerIdentity: math.NaN()}},
	} {
		_, err := reliable.NewServer(filepath.Join(t.TempDir(), "s.db"), func(context.Context, *reliable.Message) error { return nil }, &tt.o)
		if err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: NewServer error %v, want one naming the field", tt.field, err)
		}
	}
}
