package wsconn_test

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/internal/wsconn"
	"github.com/wsreliable/wsreliable/protocol"
)

// Every test runs in a synctest bubble over a memPipe (pipe_test.go), so
// times below are exact fake-clock durations and nothing sleeps for real.
// PingInterval and Timeout differ so that a failure message shows which
// of them a measured duration came from.
const (
	interval = 5 * time.Second
	timeout  = 3 * time.Second
)

var cfg = wsconn.Config{PingInterval: interval, Timeout: timeout}

// reader runs the single ReadMessage loop a Conn allows and records how it
// ended.
type reader struct {
	msgs chan []byte
	done chan struct{}
	err  error     // valid after done is closed
	at   time.Time // when err was returned
}

func startReader(c *wsconn.Conn) *reader {
	r := &reader{msgs: make(chan []byte, 16), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			msg, err := c.ReadMessage()
			if err != nil {
				r.err, r.at = err, time.Now()
				return
			}
			r.msgs <- msg
		}
	}()
	return r
}

// running reports whether the read loop is still going.
func (r *reader) running() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// open wraps ws and aborts the Conn at cleanup, which also waits for its
// writer goroutine.
func open(tb testing.TB, ws *websocket.Conn, cfg wsconn.Config) *wsconn.Conn {
	tb.Helper()
	c := wsconn.New(ws, cfg)
	tb.Cleanup(func() { c.Abort(nil) })
	return c
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isDone(c *wsconn.Conn) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

func wantCloseError(tb testing.TB, err error, code protocol.CloseCode, text string) {
	tb.Helper()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		tb.Fatalf("error = %v (%T), want *websocket.CloseError", err, err)
	}
	if ce.Code != int(code) || ce.Text != text {
		tb.Fatalf("close = %d %q, want %d %q", ce.Code, ce.Text, code, text)
	}
}

func TestHealthyLinkStaysUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const latency = 10 * time.Millisecond
		l := newLink(t)
		l.clientNet.latency = latency
		l.serverNet.latency = latency
		c := open(t, l.client, cfg)
		// The server pings less often than the client's read deadline
		// (interval + timeout), so the client stays up only if pongs
		// extend it. The two schedules also coincide now and then.
		s := open(t, l.server, wsconn.Config{PingInterval: 11 * time.Second, Timeout: timeout})
		if got := c.RTT(); got != 0 {
			t.Fatalf("RTT before any pong = %v, want 0", got)
		}
		cr, sr := startReader(c), startReader(s)

		// Ten minutes of nothing but heartbeats: 120 pings one way, 54
		// the other. Every pong must land before the read deadline.
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		for name, r := range map[string]*reader{"client": cr, "server": sr} {
			if !r.running() {
				t.Fatalf("%s ReadMessage failed at %v: %v", name, r.at, r.err)
			}
		}
		for name, conn := range map[string]*wsconn.Conn{"client": c, "server": s} {
			if isDone(conn) || conn.Err() != nil {
				t.Fatalf("%s closed: %v", name, conn.Err())
			}
			// A ping and its pong each cross the link once; the pong
			// may also wait behind one ping of the answering side.
			if rtt := conn.RTT(); rtt < 2*latency || rtt > 4*latency {
				t.Errorf("%s RTT = %v, want between %v and %v", name, rtt, 2*latency, 4*latency)
			}
		}

		// Data still flows both ways.
		if err := c.Write([]byte("ping from client")); err != nil {
			t.Fatal(err)
		}
		if err := s.Write([]byte("hello from server")); err != nil {
			t.Fatal(err)
		}
		if got := string(<-sr.msgs); got != "ping from client" {
			t.Errorf("server got %q", got)
		}
		if got := string(<-cr.msgs); got != "hello from server" {
			t.Errorf("client got %q", got)
		}

		c.Close(protocol.CloseNormal, "bye")
		<-sr.done
		<-cr.done
		wantCloseError(t, sr.err, protocol.CloseNormal, "bye")
		wantCloseError(t, cr.err, protocol.CloseNormal, "")
	})
}

// TestHalfOpenDetected checks that a link on which nothing arrives any
// more is declared dead by the read deadline exactly interval + timeout
// after the last bytes were received, never earlier, even though our own
// pings still leave without error.
func TestHalfOpenDetected(t *testing.T) {
	tests := []struct {
		name string
		// fault breaks the link after healthy traffic; peer is nil
		// when the peer never ran a wsconn at all.
		run func(t *testing.T, l *link) (faultAt time.Time)
	}{
		{
			// The peer lost power after 13 s of healthy pinging: our
			// writes vanish into the network, nothing comes back.
			name: "peer gone",
			run: func(t *testing.T, l *link) time.Time {
				s := open(t, l.server, wsconn.Config{PingInterval: 4 * time.Second, Timeout: timeout})
				startReader(s)
				time.Sleep(13 * time.Second)
				l.clientNet.halfOpen()
				return time.Now()
			},
		},
		{
			// The peer's process hung right after the handshake: it
			// never reads or writes again, and the socket buffer
			// absorbs our pings.
			name: "peer hung",
			run: func(t *testing.T, l *link) time.Time {
				return time.Now()
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newLink(t)
				c := open(t, l.client, cfg)
				r := startReader(c)
				faultAt := tt.run(t, l)
				if !r.running() {
					t.Fatalf("ReadMessage failed before the fault: %v", r.err)
				}

				<-r.done
				if !isTimeout(r.err) {
					t.Fatalf("ReadMessage error = %v, want a timeout", r.err)
				}
				last := l.clientNet.lastReadAt()
				if got, want := r.at.Sub(last), interval+timeout; got != want {
					t.Errorf("detected %v after the last frame, want exactly %v", got, want)
				}
				if got := r.at.Sub(faultAt); got > interval+timeout {
					t.Errorf("detected %v after the fault, want at most %v", got, interval+timeout)
				}
				// Our side never failed a write: only the read deadline
				// could have found this.
				if isDone(c) {
					t.Errorf("writer failed first: %v", c.Err())
				}
				c.Abort(r.err)
				if !errors.Is(c.Err(), r.err) {
					t.Errorf("Err() = %v, want the reader's error", c.Err())
				}
			})
		})
	}
}

// TestEveryFrameExtendsDeadline checks each way the read deadline moves:
// a peer that sends one frame of a kind a little more often than
// interval + timeout keeps the connection up on that kind alone (it never
// answers our pings), and once it stops, the reader fails exactly
// interval + timeout after its last frame.
func TestEveryFrameExtendsDeadline(t *testing.T) {
	tests := []struct {
		name string
		send func(ws *websocket.Conn) error
	}{
		{"binary", func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.BinaryMessage, []byte("data"))
		}},
		{"ping", func(ws *websocket.Conn) error {
			return ws.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(timeout))
		}},
		{"pong", func(ws *websocket.Conn) error {
			return ws.WriteControl(websocket.PongMessage, []byte("unsolicited"), time.Now().Add(timeout))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newLink(t)
				c := open(t, l.client, cfg)
				r := startReader(c)
				gap := interval + timeout - time.Second
				var last time.Time
				for range 10 {
					time.Sleep(gap)
					if err := tt.send(l.server); err != nil {
						t.Fatal(err)
					}
					last = time.Now()
				}
				synctest.Wait()
				if !r.running() {
					t.Fatalf("ReadMessage failed at %v: %v", r.at, r.err)
				}
				for range len(r.msgs) {
					<-r.msgs
				}
				<-r.done
				if got, want := r.at.Sub(last), interval+timeout; got != want || !isTimeout(r.err) {
					t.Errorf("failed %v after the last frame with %v, want a timeout after exactly %v", got, r.err, want)
				}
			})
		})
	}
}

// TestWriteTimeout checks that a peer which stops reading fails the
// connection within Timeout of the stuck write, and that writers blocked
// on the full queue are released with ErrClosed.
func TestWriteTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLink(t)
		l.serverNet.freeze()
		c := open(t, l.client, wsconn.Config{PingInterval: interval, Timeout: timeout, QueueLen: 1})
		big := make([]byte, 4*pipeBuffer)

		start := time.Now()
		// The first message is taken by the writer and stalls once the
		// socket buffer is full; the second waits in the queue; the
		// third blocks in Write.
		for range 2 {
			if err := c.Write(big); err != nil {
				t.Fatal(err)
			}
		}
		blocked := make(chan error, 1)
		go func() { blocked <- c.Write(big) }()
		synctest.Wait()
		select {
		case err := <-blocked:
			t.Fatalf("Write on a full queue returned %v, want it to block", err)
		default:
		}

		<-c.Done()
		if got := time.Since(start); got != timeout {
			t.Errorf("Done after %v, want exactly the timeout %v", got, timeout)
		}
		if err := c.Err(); !isTimeout(err) {
			t.Errorf("Err() = %v, want a write timeout", err)
		}
		if err := <-blocked; !errors.Is(err, wsconn.ErrClosed) {
			t.Errorf("blocked Write = %v, want ErrClosed", err)
		}
		if err := c.Write([]byte("late")); !errors.Is(err, wsconn.ErrClosed) {
			t.Errorf("Write after failure = %v, want ErrClosed", err)
		}
		// Close after a failure neither blocks nor replaces the cause.
		c.Close(protocol.CloseNormal, "")
		if err := c.Err(); !isTimeout(err) {
			t.Errorf("Err() after Close = %v, want the write timeout", err)
		}
	})
}

func TestClose(t *testing.T) {
	t.Run("handshake", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := newLink(t)
			c, s := open(t, l.client, cfg), open(t, l.server, cfg)
			cr, sr := startReader(c), startReader(s)

			start := time.Now()
			var wg sync.WaitGroup
			for range 3 {
				wg.Go(func() { c.Close(protocol.CloseGoingAway, "restarting") })
			}
			wg.Wait()
			c.Close(protocol.CloseInternal, "second close is ignored")

			<-sr.done
			wantCloseError(t, sr.err, protocol.CloseGoingAway, "restarting")
			// The peer's answer ends our reader without waiting out the
			// linger timeout.
			<-cr.done
			wantCloseError(t, cr.err, protocol.CloseGoingAway, "")
			if got := cr.at.Sub(start); got != 0 {
				t.Errorf("close handshake took %v, want no wait", got)
			}

			if !isDone(c) {
				t.Error("Done not closed after Close")
			}
			wantCloseError(t, c.Err(), protocol.CloseGoingAway, "restarting")
			if err := c.Write([]byte("late")); !errors.Is(err, wsconn.ErrClosed) {
				t.Errorf("Write after Close = %v, want ErrClosed", err)
			}
			c.Abort(errors.New("abort after close"))
			c.Abort(nil)
			wantCloseError(t, c.Err(), protocol.CloseGoingAway, "restarting")
		})
	})

	t.Run("peer silent", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			// The peer never reads our close frame, so it never
			// answers: the socket is torn down after the timeout.
			l := newLink(t)
			c := open(t, l.client, cfg)
			time.Sleep(interval / 2)

			start := time.Now()
			c.Close(protocol.CloseNormal, "")
			if got := time.Since(start); got != 0 {
				t.Errorf("Close blocked for %v", got)
			}
			// Nobody reads on our side either: the linger timer alone
			// must release the socket, exactly at the timeout.
			time.Sleep(timeout - time.Nanosecond)
			synctest.Wait()
			if l.clientNet.closed() {
				t.Fatalf("socket closed %v after Close, before the timeout", time.Since(start))
			}
			time.Sleep(time.Nanosecond)
			synctest.Wait()
			if !l.clientNet.closed() {
				t.Fatalf("socket still open %v after Close", time.Since(start))
			}
			if _, err := c.ReadMessage(); err == nil {
				t.Error("ReadMessage after the linger succeeded")
			}
		})
	})

	t.Run("long reason", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			// Truncating the reason must keep it valid UTF-8, or the
			// peer rejects the close frame as a protocol error and
			// never learns the code.
			reason := "x" + strings.Repeat("é", 100)
			l := newLink(t)
			c, s := open(t, l.client, cfg), open(t, l.server, cfg)
			sr := startReader(s)
			c.Close(protocol.ClosePolicy, reason)
			<-sr.done
			var ce *websocket.CloseError
			if !errors.As(sr.err, &ce) || ce.Code != int(protocol.ClosePolicy) {
				t.Fatalf("peer got %v, want close %d", sr.err, protocol.ClosePolicy)
			}
			if !utf8.ValidString(ce.Text) || !strings.HasPrefix(reason, ce.Text) || len(ce.Text) > 123 {
				t.Errorf("reason = %q, want a valid prefix of at most 123 bytes", ce.Text)
			}
		})
	})
}

func TestTextMessageRejected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLink(t)
		c := open(t, l.client, cfg)
		r := startReader(c)
		if err := l.server.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		<-r.done
		if !errors.Is(r.err, wsconn.ErrTextMessage) {
			t.Errorf("ReadMessage = %v, want ErrTextMessage", r.err)
		}
	})
}

func TestReadLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 1024
		l := newLink(t)
		c := open(t, l.client, wsconn.Config{PingInterval: interval, Timeout: timeout, ReadLimit: limit})
		s := open(t, l.server, cfg)
		cr, sr := startReader(c), startReader(s)

		if err := s.Write(make([]byte, limit)); err != nil {
			t.Fatal(err)
		}
		if got := len(<-cr.msgs); got != limit {
			t.Fatalf("got %d bytes, want %d", got, limit)
		}
		if err := s.Write(make([]byte, limit+1)); err != nil {
			t.Fatal(err)
		}
		<-cr.done
		if !errors.Is(cr.err, websocket.ErrReadLimit) {
			t.Errorf("ReadMessage = %v, want ErrReadLimit", cr.err)
		}
		<-sr.done
		wantCloseError(t, sr.err, protocol.CloseTooBig, "")
	})
}

// rawFrame is one unmasked WebSocket frame (server to client) of up to
// 125 payload bytes.
func rawFrame(fin bool, opcode byte, payload []byte) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	return append([]byte{b0, byte(len(payload))}, payload...)
}

// TestPartialMessageDeadline: a message begun and never finished, kept
// alive with empty continuation frames and pings, fails the reader at its
// start plus interval + timeout; nothing extends that deadline.
func TestPartialMessageDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLink(t)
		c := open(t, l.client, cfg)
		r := startReader(c)
		raw := l.server.UnderlyingConn()
		if _, err := raw.Write(rawFrame(false, 0x2, []byte("a"))); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for range 60 {
			time.Sleep(500 * time.Millisecond)
			if !r.running() {
				break
			}
			// An empty continuation and a ping: neither ends the message.
			if _, err := raw.Write(append(rawFrame(false, 0x0, nil), rawFrame(true, 0x9, nil)...)); err != nil {
				break
			}
		}
		<-r.done
		if got, want := r.at.Sub(start), interval+timeout; got != want || !isTimeout(r.err) {
			t.Fatalf("reader ended %v after the message began, with %v; want a timeout after %v", got, r.err, want)
		}
	})
}

// TestPingFlood: a peer pinging faster than MaxPingRate is closed with
// 1008 before it can make the connection answer pongs without end.
func TestPingFlood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLink(t)
		c := open(t, l.client, wsconn.Config{PingInterval: interval, Timeout: timeout, MaxPingRate: 5})
		r := startReader(c)
		// A steady 4 a second is within the rate.
		for range 20 {
			if err := l.server.WriteControl(websocket.PingMessage, nil, time.Now().Add(timeout)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(250 * time.Millisecond)
		}
		synctest.Wait()
		if !r.running() {
			t.Fatalf("closed at a ping rate within the limit: %v", r.err)
		}
		for range 50 {
			if err := l.server.WriteControl(websocket.PingMessage, nil, time.Now().Add(timeout)); err != nil {
				break
			}
		}
		<-r.done
		if !errors.Is(r.err, wsconn.ErrPingFlood) {
			t.Fatalf("reader ended with %v, want ErrPingFlood", r.err)
		}
		wantCloseError(t, c.Err(), protocol.ClosePolicy, "ping flood")
	})
}
