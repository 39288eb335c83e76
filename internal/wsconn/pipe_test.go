package wsconn_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// This file holds the in-memory transport the wsconn tests run on inside
// testing/synctest bubbles.
//
// Why not net.Pipe: its deadlines do work on the bubble's fake clock, and
// a gorilla handshake over it works too, but net.Pipe has no buffer: a
// Write returns only once the peer has Read every byte. gorilla answers a
// ping from inside ReadMessage (the ping handler writes the pong), so when
// both ends ping at the same instant, as two connections with the same
// interval do, each reader blocks writing its pong into a pipe whose other
// reader is blocked the same way. Both pongs time out, the write error is
// sticky in gorilla, and a perfectly healthy link dies after one
// interval + timeout. A TCP socket has a send buffer, so memPipe gives
// each direction one too.

// pipeBuffer is how many bytes each direction of a memPipe holds before
// Write blocks, in the range of a small TCP socket buffer.
const pipeBuffer = 64 << 10

// stream is one direction of a memPipe.
type stream struct {
	mu     sync.Mutex
	buf    []byte
	data   chan struct{} // poked (cap 1) when buf grows
	space  chan struct{} // poked (cap 1) when buf shrinks
	frozen atomic.Bool   // the reader stops draining buf
}

func newStream() *stream {
	return &stream{data: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// deadline is a resettable deadline whose wait channel closes when it
// passes, the same shape net.Pipe uses. Timers started inside a bubble run
// on its fake clock.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
}

func newDeadline() *deadline { return &deadline{cancel: make(chan struct{})} }

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired; wait for it to close cancel
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

// memConn is one end of a memPipe: a net.Conn with a send buffer,
// deadlines, and switches to break the link the way networks break.
type memConn struct {
	rx, tx     *stream
	localDone  chan struct{}
	remoteDone chan struct{}
	closeOnce  *sync.Once
	rdl, wdl   *deadline

	latency  time.Duration // each Write waits this long before its bytes land
	cut      atomic.Bool   // writes vanish, nothing more is read: half-open
	lastRead atomic.Int64  // UnixNano of the last Read that returned data
}

// memPipe returns the two ends of a buffered in-memory connection.
func memPipe() (*memConn, *memConn) {
	ab, ba := newStream(), newStream()
	aDone, bDone := make(chan struct{}), make(chan struct{})
	a := &memConn{rx: ba, tx: ab, localDone: aDone, remoteDone: bDone,
		closeOnce: new(sync.Once), rdl: newDeadline(), wdl: newDeadline()}
	b := &memConn{rx: ab, tx: ba, localDone: bDone, remoteDone: aDone,
		closeOnce: new(sync.Once), rdl: newDeadline(), wdl: newDeadline()}
	return a, b
}

// freeze makes this end stop reading, like a hung process: bytes sent to
// it pile up in the buffer until the peer's writes block.
func (c *memConn) freeze() { c.rx.frozen.Store(true) }

// halfOpen makes the link silent from this end's point of view, like a
// peer that lost power: this end's writes are absorbed and vanish, and
// nothing more arrives.
func (c *memConn) halfOpen() {
	c.cut.Store(true)
	c.freeze()
}

// closed reports whether this end has been closed.
func (c *memConn) closed() bool { return isClosed(c.localDone) }

// lastReadAt is when a Read on this end last returned data.
func (c *memConn) lastReadAt() time.Time { return time.Unix(0, c.lastRead.Load()) }

func (c *memConn) Read(b []byte) (int, error) {
	for {
		switch {
		case isClosed(c.localDone):
			return 0, net.ErrClosed
		case isClosed(c.rdl.wait()):
			return 0, os.ErrDeadlineExceeded
		}
		if !c.rx.frozen.Load() {
			c.rx.mu.Lock()
			n := copy(b, c.rx.buf)
			c.rx.buf = c.rx.buf[n:]
			c.rx.mu.Unlock()
			if n > 0 || len(b) == 0 {
				poke(c.rx.space)
				c.lastRead.Store(time.Now().UnixNano())
				return n, nil
			}
			if isClosed(c.remoteDone) {
				return 0, io.EOF
			}
		}
		select {
		case <-c.rx.data:
		case <-c.localDone:
		case <-c.remoteDone:
		case <-c.rdl.wait():
		}
	}
}

func (c *memConn) Write(b []byte) (int, error) {
	if c.latency > 0 {
		time.Sleep(c.latency)
	}
	n := 0
	for {
		switch {
		case isClosed(c.localDone):
			return n, net.ErrClosed
		case isClosed(c.remoteDone):
			return n, io.ErrClosedPipe
		case isClosed(c.wdl.wait()):
			return n, os.ErrDeadlineExceeded
		case c.cut.Load():
			return len(b), nil
		case n == len(b):
			return n, nil
		}
		c.tx.mu.Lock()
		k := min(pipeBuffer-len(c.tx.buf), len(b)-n)
		c.tx.buf = append(c.tx.buf, b[n:n+k]...)
		c.tx.mu.Unlock()
		if k > 0 {
			n += k
			poke(c.tx.data)
			continue
		}
		select {
		case <-c.tx.space:
		case <-c.localDone:
		case <-c.remoteDone:
		case <-c.wdl.wait():
		}
	}
}

func (c *memConn) Close() error {
	c.closeOnce.Do(func() { close(c.localDone) })
	c.rdl.set(time.Time{})
	c.wdl.set(time.Time{})
	return nil
}

func (c *memConn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}
func (c *memConn) SetReadDeadline(t time.Time) error  { c.rdl.set(t); return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

func (c *memConn) LocalAddr() net.Addr  { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr { return memAddr{} }

// hijacker is the http.ResponseWriter the Upgrader sees: the handshake's
// server side, already holding the connection it will hand over.
type hijacker struct {
	conn net.Conn
	brw  *bufio.ReadWriter
	hdr  http.Header
}

func (h *hijacker) Header() http.Header         { return h.hdr }
func (h *hijacker) Write(b []byte) (int, error) { return h.brw.Write(b) }
func (h *hijacker) WriteHeader(int)             {}
func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, h.brw, nil
}

// link is a WebSocket connection over a memPipe: the client and server
// gorilla connections and the transport ends under them.
type link struct {
	client, server       *websocket.Conn
	clientNet, serverNet *memConn
}

// newLink runs a real WebSocket handshake over a fresh memPipe. Call it
// inside a synctest bubble; the cleanup closes both transport ends.
func newLink(tb testing.TB) *link {
	tb.Helper()
	cn, sn := memPipe()
	tb.Cleanup(func() {
		cn.Close()
		sn.Close()
	})
	type result struct {
		ws  *websocket.Conn
		err error
	}
	srv := make(chan result, 1)
	go func() {
		br := bufio.NewReader(sn)
		req, err := http.ReadRequest(br)
		if err != nil {
			sn.Close()
			srv <- result{err: err}
			return
		}
		w := &hijacker{conn: sn, brw: bufio.NewReadWriter(br, bufio.NewWriter(sn)), hdr: http.Header{}}
		ws, err := (&websocket.Upgrader{}).Upgrade(w, req, nil)
		if err != nil {
			sn.Close()
		}
		srv <- result{ws, err}
	}()
	d := websocket.Dialer{
		NetDialContext: func(context.Context, string, string) (net.Conn, error) { return cn, nil },
	}
	cws, resp, err := d.Dial("ws://mem/", nil)
	if err == nil {
		resp.Body.Close()
	}
	s := <-srv
	if err != nil || s.err != nil {
		tb.Fatalf("handshake: client %v, server %v", err, s.err)
	}
	return &link{client: cws, server: s.ws, clientNet: cn, serverNet: sn}
}
