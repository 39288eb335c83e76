// Package wsconn wraps a gorilla WebSocket connection with the rules every
// wsreliable session follows: one reader goroutine (the caller's), one
// writer goroutine (owned here), a deadline on every write, a read deadline
// pushed forward by every frame received (data, ping or pong), and pings at
// a fixed interval, so a half-open link is found within interval + timeout.
//
// An idle connection holds no goroutine of its own, which matters to a
// server with many of them: the writer goroutine runs only while messages
// wait to be written (it starts on Write and exits when the queue is
// empty), and each ping is written by a timer's function. Pings are
// control frames, which gorilla lets one goroutine write while another
// writes a message.
package wsconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/protocol"
)

// ErrClosed is returned by Write after the connection closed.
var ErrClosed = errors.New("wsconn: connection closed")

// Config sets the heartbeat of a connection.
type Config struct {
	// PingInterval is how often a ping is sent. Zero: 5 s.
	PingInterval time.Duration
	// Timeout bounds every write and is added to PingInterval to form
	// the read deadline. Zero: 5 s.
	Timeout time.Duration
	// ReadLimit is the largest message accepted; a larger one closes the
	// connection with 1009. Zero: no limit beyond gorilla's.
	ReadLimit int64
	// QueueLen is the number of outgoing messages that may wait for the
	// writer. Zero: 16.
	QueueLen int
	// MaxPingRate is the most pings per second the peer may send,
	// averaged over a burst of as many; beyond it the connection is closed
	// with protocol.ClosePolicy (a ping flood costs a pong each). Zero: 10.
	// Negative: no limit.
	MaxPingRate int
}

// ErrPingFlood reports a peer that sent pings faster than MaxPingRate.
var ErrPingFlood = errors.New("wsconn: peer sent pings too fast")

// Conn is a WebSocket connection with heartbeats. ReadMessage must be
// called from a single goroutine; Write and Close are safe for concurrent
// use.
type Conn struct {
	ws      *websocket.Conn
	cfg     Config
	out     chan []byte
	done    chan struct{}
	wg      sync.WaitGroup // the writer and a ping being written
	once    sync.Once
	rtt     atomic.Int64
	closing atomic.Bool
	epoch   time.Time

	// inMessage is set while a message is partly read: then no frame
	// extends the read deadline, which is fixed at the message's start
	// plus PingInterval + Timeout (a slow or endless message cannot hold
	// the reader).
	inMessage atomic.Bool
	// Ping budget (token bucket), touched only by the reader's handlers.
	pingTokens float64
	pingAt     time.Time

	mu      sync.Mutex
	closed  bool        // done is closed: no writer or ping starts any more
	writing bool        // the writer goroutine is running
	ping    *time.Timer // writes the next ping; stopped when closed
	err     error
	linger  *time.Timer
}

// New takes over ws and starts its ping timer. The caller must not use ws
// afterwards except through the returned Conn.
func New(ws *websocket.Conn, cfg Config) *Conn {
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 16
	}
	if cfg.MaxPingRate == 0 {
		cfg.MaxPingRate = 10
	}
	c := &Conn{
		ws:    ws,
		cfg:   cfg,
		out:   make(chan []byte, cfg.QueueLen),
		done:  make(chan struct{}),
		epoch: time.Now(),
	}
	if cfg.ReadLimit > 0 {
		ws.SetReadLimit(cfg.ReadLimit)
	}
	c.pingTokens, c.pingAt = float64(cfg.MaxPingRate), time.Now()
	ws.SetPingHandler(func(data string) error {
		if !c.allowPing() {
			c.Close(protocol.ClosePolicy, "ping flood")
			return ErrPingFlood
		}
		c.extendRead()
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.cfg.Timeout))
		if err != nil && !errors.Is(err, websocket.ErrCloseSent) && !isTimeout(err) {
			return err
		}
		return nil
	})
	ws.SetPongHandler(func(data string) error {
		c.extendRead()
		if len(data) == 8 {
			sent := time.Duration(binary.BigEndian.Uint64([]byte(data)))
			if d := time.Since(c.epoch) - sent; d >= 0 {
				c.rtt.Store(int64(d))
			}
		}
		return nil
	})
	c.mu.Lock()
	c.ping = time.AfterFunc(cfg.PingInterval, c.sendPing)
	c.mu.Unlock()
	return c
}

// RTT returns the round trip of the last answered ping, 0 before any.
func (c *Conn) RTT() time.Duration { return time.Duration(c.rtt.Load()) }

// Subprotocol returns the negotiated subprotocol.
func (c *Conn) Subprotocol() string { return c.ws.Subprotocol() }

// RemoteAddr returns the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

func (c *Conn) extendRead() {
	if c.closing.Load() || c.inMessage.Load() {
		return
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(c.cfg.PingInterval + c.cfg.Timeout))
}

// allowPing takes one ping from the peer's budget: MaxPingRate a second,
// in bursts of as many. Only the reader's ping handler calls it.
func (c *Conn) allowPing() bool {
	if c.cfg.MaxPingRate < 0 {
		return true
	}
	now := time.Now()
	rate := float64(c.cfg.MaxPingRate)
	c.pingTokens = min(rate, c.pingTokens+now.Sub(c.pingAt).Seconds()*rate)
	c.pingAt = now
	if c.pingTokens < 1 {
		return false
	}
	c.pingTokens--
	return true
}

// ReadMessage returns the next binary message. Waiting for a message, any
// frame received (a ping or pong) extends the read deadline; once a
// message has begun, it must be complete within PingInterval + Timeout,
// whatever frames come meanwhile (empty continuation frames or pings do
// not extend it).
// Text messages are an error (the protocol is binary). After an error the
// connection is unusable; close it.
func (c *Conn) ReadMessage() ([]byte, error) {
	c.extendRead()
	typ, r, err := c.ws.NextReader()
	if err != nil {
		return nil, err
	}
	if !c.closing.Load() {
		_ = c.ws.SetReadDeadline(time.Now().Add(c.cfg.PingInterval + c.cfg.Timeout))
	}
	c.inMessage.Store(true)
	msg, err := readAll(r)
	c.inMessage.Store(false)
	if err != nil {
		return nil, err
	}
	c.extendRead()
	if typ != websocket.BinaryMessage {
		return nil, ErrTextMessage
	}
	return msg, nil
}

// readBufs lends readAll its buffers.
var readBufs sync.Pool

// maxPooledRead is the largest read buffer readAll returns to readBufs.
const maxPooledRead = 4 << 20

// readAll reads r to its end into a buffer borrowed from readBufs and
// returns an exact-size copy. io.ReadAll would grow its slice from 512
// bytes by doubling, allocating and zeroing about twice the message on
// every read: under a flood of large messages that was most of the
// server's CPU. The copy is needed anyway, since callers keep parts of
// the message (payloads) after the next read.
func readAll(r io.Reader) ([]byte, error) {
	b, _ := readBufs.Get().(*bytes.Buffer)
	if b == nil {
		b = new(bytes.Buffer)
	}
	defer func() {
		if b.Cap() <= maxPooledRead {
			b.Reset()
			readBufs.Put(b)
		}
	}()
	if _, err := b.ReadFrom(r); err != nil {
		return nil, err
	}
	return append([]byte(nil), b.Bytes()...), nil
}

// ErrTextMessage reports a text message on a binary-only connection.
var ErrTextMessage = errors.New("wsconn: text message on a binary protocol")

// Write queues msg for the writer goroutine, starting it if it is not
// running, and blocks while the queue is full. The connection owns msg
// afterwards. It returns ErrClosed once the connection is closing.
func (c *Conn) Write(msg []byte) error {
	select {
	case <-c.done:
		return ErrClosed
	default:
	}
	select {
	case c.out <- msg:
	case <-c.done:
		return ErrClosed
	}
	// Whoever fills the empty queue starts the writer: a writer that
	// found the queue empty has cleared writing under mu before this
	// check, or finds msg in its own check after it.
	c.mu.Lock()
	if !c.writing && !c.closed {
		c.writing = true
		c.wg.Go(c.writeLoop)
	}
	c.mu.Unlock()
	return nil
}

// Done is closed when the connection starts closing, for whatever reason.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns the error that closed the connection, nil while it is open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// writerLinger is how long the writer goroutine waits for another message
// before it exits (at most half the ping interval).
const writerLinger = 100 * time.Millisecond

// writeMessage writes one message with the write deadline; a failure
// fails the connection.
func (c *Conn) writeMessage(msg []byte) error {
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.cfg.Timeout))
	err := c.ws.WriteMessage(websocket.BinaryMessage, msg)
	if err != nil {
		c.fail(err)
	}
	return err
}

// writeLoop writes queued messages until the queue has stayed empty for
// writerLinger or the connection closes.
func (c *Conn) writeLoop() {
	var linger *time.Timer
	for {
		select {
		case msg := <-c.out:
			if err := c.writeMessage(msg); err != nil {
				return
			}
			continue
		case <-c.done:
			return
		default:
		}
		// Wait a moment for the next message before exiting: a busy
		// connection then keeps its writer instead of starting one per
		// message, an idle one still ends up with none.
		wait := min(writerLinger, c.cfg.PingInterval/2)
		if linger == nil {
			linger = time.NewTimer(wait)
			defer linger.Stop()
		} else {
			linger.Reset(wait)
		}
		select {
		case msg := <-c.out:
			if err := c.writeMessage(msg); err != nil {
				return
			}
			continue
		case <-c.done:
			return
		case <-linger.C:
		}
		c.mu.Lock()
		if len(c.out) == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// sendPing is the ping timer's function: it schedules the next ping, one
// interval after this one was due, and writes this one, stamped with the
// time since the connection opened so that the pong yields the RTT.
func (c *Conn) sendPing() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.ping.Reset(c.cfg.PingInterval)
	c.wg.Add(1)
	c.mu.Unlock()
	defer c.wg.Done()
	var stamp [8]byte
	binary.BigEndian.PutUint64(stamp[:], uint64(time.Since(c.epoch)))
	if err := c.ws.WriteControl(websocket.PingMessage, stamp[:], time.Now().Add(c.cfg.Timeout)); err != nil {
		c.fail(err)
	}
}

// fail records err as the reason the connection ends and starts closing it
// without a close frame (the link is broken).
func (c *Conn) fail(err error) {
	c.shutdown(err, nil)
}

func (c *Conn) shutdown(err error, closeFrame []byte) {
	c.once.Do(func() {
		c.mu.Lock()
		c.err = err
		c.closed = true
		c.ping.Stop()
		c.mu.Unlock()
		close(c.done)
		if closeFrame == nil {
			_ = c.ws.Close()
			return
		}
		// Closing handshake: send our close frame, then give the peer
		// up to Timeout to answer (its answer ends the reader's loop)
		// before the socket is torn down. Closing at once could turn
		// into an RST that discards the close frame at the peer.
		c.closing.Store(true)
		deadline := time.Now().Add(c.cfg.Timeout)
		if err := c.ws.WriteControl(websocket.CloseMessage, closeFrame, deadline); err != nil {
			_ = c.ws.Close()
			return
		}
		_ = c.ws.SetReadDeadline(deadline)
		c.mu.Lock()
		c.linger = time.AfterFunc(c.cfg.Timeout, func() { _ = c.ws.Close() })
		c.mu.Unlock()
	})
}

// Close sends a close frame with code and reason and waits for the writer
// goroutine and a ping being written. The socket is closed when the peer answers (the reader then
// sees the close) or after the timeout, whichever is first; call Abort once
// the reader is done to release it at once. Messages still queued are
// dropped. Close is idempotent.
func (c *Conn) Close(code protocol.CloseCode, reason string) {
	if len(reason) > 120 {
		// Cut on a rune boundary: a close reason must be valid UTF-8,
		// or the peer rejects the frame and never sees the code.
		n := 120
		for n > 0 && !utf8.RuneStart(reason[n]) {
			n--
		}
		reason = reason[:n]
	}
	c.shutdown(&websocket.CloseError{Code: int(code), Text: reason},
		websocket.FormatCloseMessage(int(code), reason))
	c.wg.Wait()
}

// Abort closes the socket (without a close frame if none was sent yet) and
// waits for the writer and a ping being written. It is safe after Close.
func (c *Conn) Abort(err error) {
	c.shutdown(err, nil)
	c.wg.Wait()
	c.mu.Lock()
	t := c.linger
	c.mu.Unlock()
	if t != nil {
		t.Stop()
	}
	_ = c.ws.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
