package reliable_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
)

// testTimeout bounds every test in this file.
const testTimeout = 20 * time.Second

// TestBadFrameAfterHello sends one bad message after a valid session has
// delivered a message, expects the given close code, and checks that the
// delivered message survives and the client can resume.
func TestBadFrameAfterHello(t *testing.T) {
	other := newStream()
	tests := []struct {
		name string
		typ  int // websocket.BinaryMessage unless set
		msg  func(stream protocol.StreamID) []byte
		want protocol.CloseCode
	}{
		{"malformed data body", 0, func(protocol.StreamID) []byte {
			return []byte{protocol.Version, byte(protocol.TypeData), 5, 1, 2, 3, 4, 5}
		}, protocol.CloseProtocolError},
		{"truncated frame", 0, func(s protocol.StreamID) []byte {
			b := protocol.Encode(dataFrame(s, 2, "truncated payload"))
			return b[:len(b)-5]
		}, protocol.CloseProtocolError},
		{"length beyond message", 0, func(protocol.StreamID) []byte {
			return []byte{protocol.Version, byte(protocol.TypeData), 0xff, 0xff, 0xff, 0xff, 0x0f, 1}
		}, protocol.CloseProtocolError},
		{"bad length varint", 0, func(protocol.StreamID) []byte {
			return []byte{protocol.Version, byte(protocol.TypeData), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		}, protocol.CloseProtocolError},
		{"unknown frame type", 0, func(protocol.StreamID) []byte {
			return []byte{protocol.Version, 99, 0}
		}, protocol.CloseProtocolError},
		{"valid frame then unknown type", 0, func(s protocol.StreamID) []byte {
			return append(protocol.Encode(dataFrame(s, 2, "x")), 99, 0)
		}, protocol.CloseProtocolError},
		{"empty message", 0, func(protocol.StreamID) []byte { return nil }, protocol.CloseProtocolError},
		{"version byte only", 0, func(protocol.StreamID) []byte { return []byte{protocol.Version} }, protocol.CloseProtocolError},
		{"other codec version", 0, func(s protocol.StreamID) []byte {
			b := protocol.Encode(dataFrame(s, 2, "x"))
			b[0] = protocol.Version + 1
			return b
		}, protocol.CloseProtocolError},
		{"second hello", 0, func(s protocol.StreamID) []byte {
			return protocol.Encode(&protocol.Hello{ClientID: "again", Stream: s})
		}, protocol.CloseProtocolError},
		{"ack from client", 0, func(s protocol.StreamID) []byte {
			return protocol.Encode(&protocol.Ack{Stream: s, Seq: 1})
		}, protocol.CloseProtocolError},
		{"too many headers", 0, func(s protocol.StreamID) []byte {
			d := dataFrame(s, 2, "x")
			d.Headers = make([]protocol.Header, protocol.MaxHeaders+1)
			return protocol.Encode(d)
		}, protocol.CloseProtocolError},
		{"header not UTF-8", 0, func(s protocol.StreamID) []byte {
			d := dataFrame(s, 2, "x")
			d.Headers = []protocol.Header{{Key: "\xff\xfe", Value: "v"}}
			return protocol.Encode(d)
		}, protocol.CloseProtocolError},
		// Case 8: a data frame for a stream other than the hello's.
		{"data for another stream", 0, func(protocol.StreamID) []byte {
			return protocol.Encode(dataFrame(other, 2, "x"))
		}, protocol.CloseProtocolError},
		{"good frame then another stream", 0, func(s protocol.StreamID) []byte {
			return protocol.Encode(dataFrame(s, 2, "x"), dataFrame(other, 3, "y"))
		}, protocol.CloseProtocolError},
		{"text message", websocket.TextMessage, func(s protocol.StreamID) []byte {
			return protocol.Encode(dataFrame(s, 2, "x"))
		}, protocol.CloseProtocolError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s sink
			_, url := startServer(t, s.handle, nil)
			id, stream := "bad-frame", newStream()
			ws, w := handshake(t, url, id, stream)
			if w.Watermark != 0 {
				t.Fatalf("new stream has watermark %d", w.Watermark)
			}
			sendFrames(t, ws, dataFrame(stream, 1, "first"))
			waitAck(t, ws, stream, 1)

			typ := tt.typ
			if typ == 0 {
				typ = websocket.BinaryMessage
			}
			writeRaw(t, ws, typ, tt.msg(stream))
			expectClose(t, ws, tt.want)

			if got := s.got(id); len(got) != 1 || got[0] != "first" {
				t.Fatalf("handler saw %q, want [first]", got)
			}
			assertResumes(t, url, id, stream, 1)
			if got := s.got(id); len(got) != 2 || got[1] != "after" {
				t.Fatalf("handler saw %q after resuming", got)
			}
		})
	}
}

// TestBadHello sends a bad first message instead of a hello.
func TestBadHello(t *testing.T) {
	tests := []struct {
		name string
		typ  int
		msg  []byte
		want protocol.CloseCode
	}{
		{"unknown codec version", websocket.BinaryMessage, func() []byte {
			b := protocol.Encode(&protocol.Hello{ClientID: "c", Stream: newStream()})
			b[0] = 0x7f
			return b
		}(), protocol.CloseUnsupported},
		{"version zero", websocket.BinaryMessage, func() []byte {
			b := protocol.Encode(&protocol.Hello{ClientID: "c", Stream: newStream()})
			b[0] = 0
			return b
		}(), protocol.CloseUnsupported},
		{"truncated hello", websocket.BinaryMessage, func() []byte {
			b := protocol.Encode(&protocol.Hello{ClientID: "c", Stream: newStream()})
			return b[:len(b)-3]
		}(), protocol.CloseProtocolError},
		{"garbage", websocket.BinaryMessage, []byte{protocol.Version, 0xde, 0xad, 0xbe, 0xef}, protocol.CloseProtocolError},
		{"empty message", websocket.BinaryMessage, nil, protocol.CloseProtocolError},
		{"text hello", websocket.TextMessage,
			protocol.Encode(&protocol.Hello{ClientID: "c", Stream: newStream()}), protocol.CloseProtocolError},
		{"data instead of hello", websocket.BinaryMessage,
			protocol.Encode(dataFrame(newStream(), 1, "x")), protocol.CloseProtocolError},
		{"two hellos", websocket.BinaryMessage, protocol.Encode(
			&protocol.Hello{ClientID: "c", Stream: newStream()},
			&protocol.Hello{ClientID: "c", Stream: newStream()}), protocol.CloseProtocolError},
		{"empty client ID", websocket.BinaryMessage,
			protocol.Encode(&protocol.Hello{Stream: newStream()}), protocol.CloseProtocolError},
		{"zero stream", websocket.BinaryMessage,
			protocol.Encode(&protocol.Hello{ClientID: "c"}), protocol.CloseProtocolError},
		{"client ID too long", websocket.BinaryMessage,
			protocol.Encode(&protocol.Hello{ClientID: strings.Repeat("x", protocol.MaxClientIDLen+1), Stream: newStream()}),
			protocol.CloseProtocolError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, url := startServer(t, func(context.Context, *reliable.Message) error {
				t.Error("handler called")
				return nil
			}, nil)
			ws, _, err := dialRaw(t, url, []string{protocol.Subprotocol}, nil)
			if err != nil {
				t.Fatal(err)
			}
			writeRaw(t, ws, tt.typ, tt.msg)
			expectClose(t, ws, tt.want)
			if st := srv.Stats(); st.Clients != 0 {
				t.Fatalf("a bad hello registered a client: %+v", st)
			}
		})
	}
}

// TestOversizeMessage: a message above ServerOptions.MaxMessageSize closes
// the connection with 1009; what was delivered before stays.
func TestOversizeMessage(t *testing.T) {
	const limit = 1024
	var s sink
	_, url := startServer(t, s.handle, &reliable.ServerOptions{MaxMessageSize: limit})
	id, stream := "oversize", newStream()
	ws, w := handshake(t, url, id, stream)
	if w.MaxMessageSize != limit {
		t.Fatalf("welcome announces MaxMessageSize %d, want %d", w.MaxMessageSize, limit)
	}
	sendFrames(t, ws, dataFrame(stream, 1, "small"))
	waitAck(t, ws, stream, 1)

	sendFrames(t, ws, dataFrame(stream, 2, strings.Repeat("x", limit+1)))
	expectClose(t, ws, protocol.CloseTooBig)
	if got := s.got(id); len(got) != 1 || got[0] != "small" {
		t.Fatalf("handler saw %q, want [small]", got)
	}
	assertResumes(t, url, id, stream, 1)
}

// TestOversizeHello: even the first message is bounded.
func TestOversizeHello(t *testing.T) {
	var s sink
	_, url := startServer(t, s.handle, &reliable.ServerOptions{MaxMessageSize: 256})
	ws, _, err := dialRaw(t, url, []string{protocol.Subprotocol}, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeRaw(t, ws, websocket.BinaryMessage, make([]byte, 4096))
	expectClose(t, ws, protocol.CloseTooBig)
}

// TestSubprotocolRefused: gorilla completes the upgrade without a
// subprotocol when the client offers none we speak; the server then
// closes with 4002 before reading anything.
func TestSubprotocolRefused(t *testing.T) {
	for _, tt := range []struct {
		name   string
		offers []string
	}{
		{"none offered", nil},
		{"wrong one offered", []string{"wsreliable.v0", "mqtt"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var s sink
			_, url := startServer(t, s.handle, nil)
			ws, resp, err := dialRaw(t, url, tt.offers, nil)
			if err != nil {
				t.Fatalf("dial: %v (response %v)", err, resp)
			}
			if ws.Subprotocol() != "" {
				t.Fatalf("server selected subprotocol %q", ws.Subprotocol())
			}
			ce := expectClose(t, ws, protocol.CloseUnsupported)
			if !strings.Contains(ce.Text, protocol.Subprotocol) {
				t.Errorf("close reason %q does not name %s", ce.Text, protocol.Subprotocol)
			}
		})
	}
}

// TestHelloTimeout: a client that upgrades and stays silent is closed with
// 4003 after HelloTimeout.
func TestHelloTimeout(t *testing.T) {
	var s sink
	srv, url := startServer(t, s.handle, &reliable.ServerOptions{HelloTimeout: 200 * time.Millisecond})
	ws, _, err := dialRaw(t, url, []string{protocol.Subprotocol}, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	expectClose(t, ws, protocol.CloseHelloTimeout)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v, HelloTimeout is 200ms", d)
	}
	if st := srv.Stats(); st.Sessions != 0 || st.Clients != 0 {
		t.Fatalf("stats after hello timeout: %+v", st)
	}
}

// identityHeader authenticates by a header, as a token check would.
const identityHeader = "X-Test-Identity"

func authByHeader(r *http.Request) (string, error) {
	id := r.Header.Get(identityHeader)
	if id == "" {
		return "", errors.New("no identity")
	}
	return id, nil
}

func asIdentity(id string) func(context.Context) (http.Header, error) {
	return func(context.Context) (http.Header, error) {
		return http.Header{identityHeader: {id}}, nil
	}
}

// TestAuthenticateRefused: an Authenticate error answers 401 (403 when it
// wraps ErrForbidden) without an upgrade. A Client stops on 403; on 401 it
// keeps retrying with backoff, calling Header before every dial, and
// reports each refusal to OnStateChange.
func TestAuthenticateRefused(t *testing.T) {
	for _, tt := range []struct {
		name   string
		err    error
		status int
	}{
		{"unauthorized", errors.New("bad token"), http.StatusUnauthorized},
		{"forbidden", fmt.Errorf("not allowed here: %w", reliable.ErrForbidden), http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testkit.Deadline(t, testTimeout)
			var calls atomic.Int32
			var s sink
			srv, url := startServer(t, s.handle, &reliable.ServerOptions{
				Authenticate: func(*http.Request) (string, error) {
					calls.Add(1)
					return "", tt.err
				},
			})

			ws, resp, err := dialRaw(t, url, []string{protocol.Subprotocol}, nil)
			if ws != nil || !errors.Is(err, websocket.ErrBadHandshake) {
				t.Fatalf("dial: conn %v, error %v; want ErrBadHandshake", ws, err)
			}
			if resp == nil || resp.StatusCode != tt.status {
				t.Fatalf("response %v, want HTTP %d", resp, tt.status)
			}

			var headers, refusals atomic.Int32
			c := newClient(t, url, &reliable.ClientOptions{
				BackoffMin: time.Millisecond, BackoffMax: 20 * time.Millisecond,
				Header: func(context.Context) (http.Header, error) {
					headers.Add(1)
					return http.Header{"Authorization": {"Bearer t"}}, nil
				},
				OnStateChange: func(st reliable.State, err error) {
					if st == reliable.StateDisconnected && errors.Is(err, reliable.ErrUnauthorized) {
						refusals.Add(1)
					}
				},
			})
			r, err := c.Send(ctx, []byte("never delivered"))
			if err != nil && !errors.Is(err, reliable.ErrStopped) {
				t.Fatal(err)
			}
			if tt.status == http.StatusUnauthorized {
				testkit.Eventually(t, 10*time.Second, func() bool { return refusals.Load() >= 3 },
					"client refused %d times, want it to keep retrying", refusals.Load())
				if c.Err() != nil || c.State() == reliable.StateStopped {
					t.Fatalf("client stopped after a 401: %v", c.Err())
				}
				if h := headers.Load(); h < refusals.Load() {
					t.Errorf("Header called %d times for %d refusals: not before every dial", h, refusals.Load())
				}
				if r.Err() != nil {
					t.Errorf("receipt settled: %v", r.Err())
				}
				return
			}
			testkit.Eventually(t, 10*time.Second, func() bool { return c.State() == reliable.StateStopped },
				"client state %v, want stopped", c.State())
			err = c.Err()
			if !errors.Is(err, reliable.ErrStopped) || !errors.Is(err, reliable.ErrForbidden) || !errors.Is(err, reliable.ErrUnauthorized) {
				t.Fatalf("client error %v, want ErrStopped, ErrForbidden and ErrUnauthorized", err)
			}
			var he *reliable.HandshakeError
			if !errors.As(err, &he) || he.StatusCode != tt.status {
				t.Fatalf("client error %v, want a *HandshakeError with HTTP %d", err, tt.status)
			}
			if r != nil {
				if err := r.Wait(ctx); !errors.Is(err, reliable.ErrForbidden) {
					t.Errorf("receipt: %v, want ErrForbidden", err)
				}
			}
			// One refusal is enough: the client does not hammer the server.
			if n := calls.Load(); n != 2 {
				t.Errorf("Authenticate called %d times, want 2 (raw dial and one client dial)", n)
			}
			if st := srv.Stats(); st.Sessions != 0 || st.Clients != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestSequenceGap: a data frame beyond watermark+1 closes with 4005 and
// never reaches the handler.
func TestSequenceGap(t *testing.T) {
	for _, tt := range []struct {
		name    string
		prefix  int // messages delivered before the gap
		gapSeqs []uint64
	}{
		{"first frame is seq 2", 0, []uint64{2}},
		{"seq watermark+2", 1, []uint64{3}},
		{"gap inside a batch", 1, []uint64{2, 4}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var s sink
			_, url := startServer(t, s.handle, nil)
			id, stream := "gap", newStream()
			ws, _ := handshake(t, url, id, stream)
			for i := 1; i <= tt.prefix; i++ {
				sendFrames(t, ws, dataFrame(stream, uint64(i), fmt.Sprint("m", i)))
				waitAck(t, ws, stream, uint64(i))
			}
			var frames []protocol.Frame
			for _, seq := range tt.gapSeqs {
				frames = append(frames, dataFrame(stream, seq, fmt.Sprint("m", seq)))
			}
			sendFrames(t, ws, frames...)
			expectClose(t, ws, protocol.CloseSequenceGap)

			// Frames before the gap in the same batch may be delivered;
			// the one after the gap never is.
			want := uint64(tt.prefix)
			if len(tt.gapSeqs) > 1 && tt.gapSeqs[0] == want+1 {
				want++
			}
			got := s.got(id)
			if uint64(len(got)) != want {
				t.Fatalf("handler saw %q, want %d messages", got, want)
			}
			for i, p := range got {
				if p != fmt.Sprint("m", i+1) {
					t.Fatalf("handler saw %q", got)
				}
			}
			assertResumes(t, url, id, stream, want)
		})
	}
}

// TestLockedStore: a second client or server on a file in use fails fast
// with queue.ErrLocked, and the first keeps working.
func TestLockedStore(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	var s sink
	_, url := startServer(t, s.handle, nil)

	t.Run("client", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "client.db")
		first, err := reliable.NewClient(url, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		start := time.Now()
		second, err := reliable.NewClient(url, path, nil)
		if err == nil {
			second.Close()
			t.Fatal("second client opened a store in use")
		}
		if !errors.Is(err, queue.ErrLocked) {
			t.Fatalf("second client: %v, want queue.ErrLocked", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("second client failed after %v", d)
		}
		r, err := first.Send(ctx, []byte("still here"))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("server", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "server.db")
		first, err := reliable.NewServer(path, s.handle, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		start := time.Now()
		second, err := reliable.NewServer(path, s.handle, nil)
		if err == nil {
			second.Close()
			t.Fatal("second server opened a store in use")
		}
		if !errors.Is(err, queue.ErrLocked) {
			t.Fatalf("second server: %v, want queue.ErrLocked", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("second server failed after %v", d)
		}
	})
}

// TestBadStoreFile: a corrupt or truncated file fails NewClient and
// NewServer with queue.ErrCorrupt and is left as it was.
func TestBadStoreFile(t *testing.T) {
	var s sink
	_, url := startServer(t, s.handle, nil)

	// A real store with some content, to truncate.
	valid := filepath.Join(t.TempDir(), "valid.db")
	q, err := queue.Open(valid, &queue.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testkit.Deadline(t, testTimeout)
	for i := range 200 {
		if _, err := q.Append(ctx, queue.Entry{Payload: bytes.Repeat([]byte{byte(i)}, 1024)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(valid)
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i*7 + i>>8)
	}

	files := []struct {
		name string
		data []byte
	}{
		{"garbage", garbage},
		{"short garbage", []byte("this is not a bbolt file")},
		{"truncated within the first page", good[:1000]},
		{"truncated after the meta pages", good[:3*4096+100]},
		{"truncated to half", good[:len(good)/2]},
	}
	opens := []struct {
		name string
		open func(path string) (func() error, error)
	}{
		{"client", func(path string) (func() error, error) {
			c, err := reliable.NewClient(url, path, nil)
			if err != nil {
				return nil, err
			}
			return c.Close, nil
		}},
		{"server", func(path string) (func() error, error) {
			srv, err := reliable.NewServer(path, s.handle, nil)
			if err != nil {
				return nil, err
			}
			return srv.Close, nil
		}},
	}
	for _, f := range files {
		for _, o := range opens {
			t.Run(o.name+"/"+f.name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "bad.db")
				if err := os.WriteFile(path, f.data, 0o600); err != nil {
					t.Fatal(err)
				}
				closeFn, err := o.open(path)
				if err == nil {
					closeFn()
					t.Fatalf("%s opened a bad store file", o.name)
				}
				if !errors.Is(err, queue.ErrCorrupt) {
					t.Fatalf("%s: %v, want queue.ErrCorrupt", o.name, err)
				}
				after, rerr := os.ReadFile(path)
				if rerr != nil {
					t.Fatal(rerr)
				}
				if !bytes.Equal(after, f.data) {
					t.Fatalf("the failed open changed the file")
				}
				// The failed open released the file: a second attempt
				// reports corruption again, not a lock.
				if _, err := o.open(path); !errors.Is(err, queue.ErrCorrupt) {
					t.Fatalf("second open: %v, want queue.ErrCorrupt", err)
				}
			})
		}
	}
}

// TestHandlerOutcomes: a reject settles the receipt with a *RejectError, an
// error or a panic retries until the handler succeeds, and order holds.
func TestHandlerOutcomes(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	var (
		mu        sync.Mutex
		calls     = map[string]int{}
		delivered []string
	)
	h := func(_ context.Context, m *reliable.Message) error {
		p := string(m.Payload)
		mu.Lock()
		calls[p]++
		n := calls[p]
		mu.Unlock()
		switch {
		case p == "reject":
			return fmt.Errorf("payload refused: %w", reliable.ErrRejected)
		case p == "fail" && n <= 2:
			return errors.New("temporary failure")
		case p == "panic" && n == 1:
			panic("handler bug")
		}
		mu.Lock()
		delivered = append(delivered, p)
		mu.Unlock()
		return nil
	}
	_, url := startServer(t, h, nil)
	c := newClient(t, url, nil)

	payloads := []string{"m0", "reject", "m1", "fail", "m2", "panic", "m3"}
	receipts := make([]*reliable.Receipt, len(payloads))
	for i, p := range payloads {
		r, err := c.Send(ctx, []byte(p))
		if err != nil {
			t.Fatal(err)
		}
		receipts[i] = r
	}
	for i, r := range receipts {
		err := r.Wait(ctx)
		if payloads[i] != "reject" {
			if err != nil {
				t.Fatalf("receipt of %s: %v", payloads[i], err)
			}
			continue
		}
		var re *reliable.RejectError
		if !errors.As(err, &re) {
			t.Fatalf("receipt of the rejected message: %v, want *RejectError", err)
		}
		if !errors.Is(err, reliable.ErrRejected) {
			t.Errorf("%v does not match ErrRejected", err)
		}
		if re.ID != r.ID() || re.Seq != r.Seq() || !strings.Contains(re.Reason, "payload refused") {
			t.Errorf("reject error %+v for receipt %s seq %d", re, r.ID(), r.Seq())
		}
	}
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(delivered) != "[m0 m1 fail m2 panic m3]" {
		t.Fatalf("delivered %q", delivered)
	}
	want := map[string]int{"m0": 1, "reject": 1, "m1": 1, "fail": 3, "m2": 1, "panic": 2, "m3": 1}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Fatalf("handler calls %v, want %v", calls, want)
	}
	if st := c.Stats(); st.Rejected != 1 || st.Queued != 0 {
		t.Errorf("client stats %+v", st)
	}
}

// TestTakeover: a second session for the same client ID closes the first
// with 4001 and resumes from what the first delivered.
func TestTakeover(t *testing.T) {
	var s sink
	_, url := startServer(t, s.handle, nil)
	id, stream := "taken", newStream()
	older, _ := handshake(t, url, id, stream)
	sendFrames(t, older, dataFrame(stream, 1, "m1"))
	waitAck(t, older, stream, 1)

	newer, _, err := dialRaw(t, url, []string{protocol.Subprotocol}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sendFrames(t, newer, &protocol.Hello{ClientID: id, Stream: stream})
	expectClose(t, older, protocol.CloseSuperseded)
	w := readWelcome(t, newer)
	if w.Watermark != 1 {
		t.Fatalf("newer session's watermark %d, want 1", w.Watermark)
	}
	sendFrames(t, newer, dataFrame(stream, 2, "m2"))
	waitAck(t, newer, stream, 2)
	if got := s.got(id); fmt.Sprint(got) != "[m1 m2]" {
		t.Fatalf("handler saw %q", got)
	}
}

// TestInFlightWindowExceeded: a client that sends more unacknowledged data
// frames than Welcome.MaxInFlight is closed with 1002.
func TestInFlightWindowExceeded(t *testing.T) {
	const window = 4
	for _, tt := range []struct {
		name     string
		perWrite int // data frames per WebSocket message
		writes   int
	}{
		{"one frame per message", 1, 3 * window},
		{"one message over the window", window + 1, 1},
		{"several messages within, together over", 2, 3 * window},
	} {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			var calls atomic.Int32
			h := func(ctx context.Context, m *reliable.Message) error {
				calls.Add(1)
				select {
				case <-release:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			_, url := startServer(t, h, &reliable.ServerOptions{MaxInFlight: window})
			t.Cleanup(func() { close(release) })
			id, stream := "greedy", newStream()
			ws, w := handshake(t, url, id, stream)
			if w.MaxInFlight != window {
				t.Fatalf("welcome MaxInFlight %d, want %d", w.MaxInFlight, window)
			}
			seq := uint64(0)
			for range tt.writes {
				frames := make([]protocol.Frame, tt.perWrite)
				for i := range frames {
					seq++
					frames[i] = dataFrame(stream, seq, fmt.Sprint("m", seq))
				}
				_ = ws.SetWriteDeadline(time.Now().Add(ioTimeout))
				if err := ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(frames...)); err != nil {
					break // the server has already closed
				}
			}
			expectClose(t, ws, protocol.CloseProtocolError)
			if n := calls.Load(); n > 1 {
				t.Fatalf("handler called %d times while the first call blocked", n)
			}
		})
	}
}

// TestInFlightWindowHonoured: a client that stays within the window is
// never closed, even against a slow handler.
func TestInFlightWindowHonoured(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	const window = 4
	var s sink
	slow := func(ctx context.Context, m *reliable.Message) error {
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		return s.handle(ctx, m)
	}
	_, url := startServer(t, slow, &reliable.ServerOptions{MaxInFlight: window})
	var reconnects atomic.Int32
	c := newClient(t, url, &reliable.ClientOptions{
		OnStateChange: func(st reliable.State, _ error) {
			if st == reliable.StateDisconnected {
				reconnects.Add(1)
			}
		},
	})
	const n = 200
	for i := range n {
		if _, err := c.Send(ctx, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.count(c.ID()); got != n {
		t.Fatalf("handler saw %d messages, want %d", got, n)
	}
	if r := reconnects.Load(); r != 0 {
		t.Fatalf("client was disconnected %d times", r)
	}
}

// TestShutdownGoingAway: Server.Shutdown closes sessions with 1001, lets
// clients reconnect later, and refuses new connections meanwhile.
func TestShutdownGoingAway(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	var s sink
	srv, url := startServer(t, s.handle, nil)
	id, stream := "raw", newStream()
	ws, _ := handshake(t, url, id, stream)
	sendFrames(t, ws, dataFrame(stream, 1, "m1"))
	waitAck(t, ws, stream, 1)

	type change struct {
		state reliable.State
		err   error
	}
	changes := make(chan change, 64)
	c := newClient(t, url, &reliable.ClientOptions{
		OnStateChange: func(st reliable.State, err error) {
			select {
			case changes <- change{st, err}:
			default:
			}
		},
	})
	r, err := c.Send(ctx, []byte("c1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	expectClose(t, ws, protocol.CloseGoingAway)
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Shutdown did not return")
	}

	// The client saw 1001 (Disconnected), then tried again (Connecting);
	// it did not stop.
	for sawGoingAway, reconnecting := false, false; !reconnecting; {
		select {
		case ch := <-changes:
			var ce *reliable.CloseError
			switch {
			case ch.state == reliable.StateDisconnected && errors.As(ch.err, &ce) && ce.Code == protocol.CloseGoingAway:
				sawGoingAway = true
			case ch.state == reliable.StateConnecting && sawGoingAway:
				reconnecting = true
			case ch.state == reliable.StateStopped:
				t.Fatalf("client stopped: %v", ch.err)
			}
		case <-ctx.Done():
			t.Fatal("client did not report a going-away disconnect followed by a reconnect attempt")
		}
	}
	if c.Err() != nil {
		t.Fatalf("client error %v", c.Err())
	}

	// New connections are refused while the server is shut down.
	_, resp, err := dialRaw(t, url, []string{protocol.Subprotocol}, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after shutdown: %v, response %v; want HTTP 503", err, resp)
	}
	if got := s.got(id); fmt.Sprint(got) != "[m1]" {
		t.Fatalf("handler saw %q", got)
	}
}
