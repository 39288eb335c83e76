package reliable

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/ack"
	"github.com/wsreliable/wsreliable/internal/backoff"
	"github.com/wsreliable/wsreliable/internal/wsconn"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// Limits of one outgoing WebSocket message built by the sender.
const (
	maxFramesPerMessage = 256
	maxBatchBytes       = 256 << 10
)

// run is the connection goroutine: dial, run a session, back off, repeat.
func (c *Client) run() {
	b := backoff.New(backoff.Policy{
		Min:     c.opts.BackoffMin,
		Max:     c.opts.BackoffMax,
		Healthy: c.opts.HealthyAfter,
	})
	for {
		c.setState(StateConnecting, nil)
		err := c.connect(b)
		if c.ctx.Err() != nil {
			return
		}
		if isFatal(err) {
			c.stop(err)
			return
		}
		delay := b.Next()
		var ce *CloseError
		if errors.As(err, &ce) && ce.RetryAfter > 0 {
			delay = max(delay, ce.RetryAfter)
		}
		c.log.Info("disconnected", "client", c.clientID, "error", err, "retry_in", delay)
		c.setState(StateDisconnected, err)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return
		}
	}
}

// isFatal reports whether err means the server will keep refusing this
// client, so retrying would only hammer it.
func isFatal(err error) bool {
	if errors.Is(err, ErrUnauthorized) || errors.Is(err, errStoreMismatch) {
		return true
	}
	var ce *CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case protocol.ClosePolicy, protocol.CloseUnsupported, protocol.CloseIdentity:
			return true
		}
	}
	return false
}

// errAckTimeout: sent messages saw no acknowledgement on a live link.
var errAckTimeout = errors.New("reliable: no acknowledgement progress")

// errStoreMismatch: the server has seen more of our stream than the store
// ever assigned (a store restored from an old backup). Sending would have
// new messages dropped as duplicates, so the client stops.
var errStoreMismatch = errors.New("reliable: server acknowledged sequences this store never assigned")

func (c *Client) stop(err error) {
	err = fmt.Errorf("%w: %w", ErrStopped, err)
	c.mu.Lock()
	if c.state == StateClosed {
		c.mu.Unlock()
		return
	}
	c.err = err
	close(c.ackedCh)
	c.ackedCh = make(chan struct{})
	c.mu.Unlock()
	c.log.Error("client stopped", "client", c.clientID, "error", err)
	c.setState(StateStopped, err)
	c.settleAll(err)
}

// connect dials, handshakes and runs one session until it ends.
func (c *Client) connect(b *backoff.Backoff) error {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.HandshakeTimeout)
	defer cancel()
	hdr := http.Header{}
	if c.opts.Header != nil {
		h, err := c.opts.Header(ctx)
		if err != nil {
			return fmt.Errorf("reliable: header provider: %w", err)
		}
		for k, v := range h {
			hdr[k] = v
		}
	}
	d := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: c.opts.HandshakeTimeout,
		TLSClientConfig:  c.opts.TLSConfig,
		Subprotocols:     []string{protocol.Subprotocol},
		ReadBufferSize:   64 << 10,
		WriteBufferSize:  64 << 10,
	}
	ws, resp, err := d.DialContext(ctx, c.url, hdr)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			he := &HandshakeError{StatusCode: resp.StatusCode}
			if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests {
				if d, perr := time.ParseDuration(resp.Header.Get("Retry-After") + "s"); perr == nil {
					return &CloseError{Code: protocol.CloseTryAgainLater, Reason: he.Error(), RetryAfter: d}
				}
			}
			return he
		}
		return fmt.Errorf("reliable: dial: %w", err)
	}
	if ws.Subprotocol() != protocol.Subprotocol {
		closeRaw(ws, protocol.CloseUnsupported, "subprotocol "+protocol.Subprotocol+" required", c.opts.HeartbeatTimeout)
		return &CloseError{Code: protocol.CloseUnsupported, Reason: "server did not select " + protocol.Subprotocol}
	}
	deadline, _ := ctx.Deadline()
	_ = ws.SetWriteDeadline(deadline)
	hello := &protocol.Hello{ClientID: c.clientID, Stream: c.stream}
	if err := ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(hello)); err != nil {
		ws.Close()
		return fmt.Errorf("reliable: send hello: %w", err)
	}
	_ = ws.SetReadDeadline(deadline)
	welcome, err := readWelcome(ws)
	if err != nil {
		if ce, ok := closeErrorFrom(err); ok {
			ws.Close()
			return ce
		}
		closeRaw(ws, protocol.CloseProtocolError, err.Error(), c.opts.HeartbeatTimeout)
		return err
	}
	_ = ws.SetWriteDeadline(time.Time{})
	if last := c.store.Stats().LastSeq; welcome.Watermark > last {
		closeRaw(ws, protocol.CloseNormal, "", c.opts.HeartbeatTimeout)
		return fmt.Errorf("%w: server has %d, store assigned up to %d", errStoreMismatch, welcome.Watermark, last)
	}
	conn := wsconn.New(ws, wsconn.Config{
		PingInterval: c.opts.HeartbeatInterval,
		Timeout:      c.opts.HeartbeatTimeout,
		ReadLimit:    1 << 20,
	})
	b.Connected(time.Now())
	defer b.Disconnected(time.Now())
	c.nConnects.Add(1)
	return c.session(conn, welcome)
}

// readWelcome reads the server's answer to the hello.
func readWelcome(ws *websocket.Conn) (*protocol.Welcome, error) {
	typ, msg, err := ws.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("reliable: read welcome: %w", err)
	}
	if typ != websocket.BinaryMessage {
		return nil, fmt.Errorf("%w: text message instead of welcome", protocol.ErrMalformed)
	}
	frames, err := protocol.DecodeAll(msg)
	if err != nil {
		return nil, fmt.Errorf("reliable: welcome: %w", err)
	}
	w, ok := frames[0].(*protocol.Welcome)
	if !ok || len(frames) != 1 {
		return nil, fmt.Errorf("%w: expected a single welcome frame, got %s", protocol.ErrMalformed, frames[0].Type())
	}
	return w, nil
}

// closeRaw runs a bounded closing handshake on a connection that has no
// reader goroutine: send the close frame, wait briefly for the answer.
func closeRaw(ws *websocket.Conn, code protocol.CloseCode, reason string, timeout time.Duration) {
	reason = truncate(reason, 120)
	deadline := time.Now().Add(timeout)
	if ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(code), reason), deadline) == nil {
		_ = ws.SetReadDeadline(deadline)
		for {
			if _, _, err := ws.NextReader(); err != nil {
				break
			}
		}
	}
	ws.Close()
}

// session sends queued messages and applies acks until the connection
// ends. It returns why it ended.
func (c *Client) session(conn *wsconn.Conn, w *protocol.Welcome) error {
	maxIn := c.opts.MaxInFlight
	if w.MaxInFlight > 0 && int(w.MaxInFlight) < maxIn {
		maxIn = int(w.MaxInFlight)
	}
	batchBytes := maxBatchBytes
	if w.MaxMessageSize > 0 && int(w.MaxMessageSize)/2 < batchBytes {
		batchBytes = int(w.MaxMessageSize) / 2
	}
	c.mu.Lock()
	c.applyAckLocked(w.Watermark)
	win := ack.NewWindow(maxIn, c.acked)
	replay := c.sentMax > c.acked
	c.mu.Unlock()
	c.inFlight.Store(0)
	c.log.Info("connected", "client", c.clientID, "watermark", w.Watermark, "replay", replay)
	c.setState(StateConnected, nil)

	readerErr := make(chan error, 1)
	done := make(chan struct{})
	c.conn.Store(conn)
	defer func() {
		c.conn.Store(nil)
		close(done)
		conn.Abort(nil)
		<-readerErr
	}()
	go func() { readerErr <- c.readLoop(conn, win) }()

	stall := time.NewTicker(max(c.opts.AckTimeout/4, 10*time.Millisecond))
	defer stall.Stop()
	var buf []byte
	for {
		c.mu.Lock()
		room, next := win.Room(), win.Next()
		c.mu.Unlock()
		if room > 0 {
			entries, err := c.store.Read(next, min(room, maxFramesPerMessage), batchBytes)
			if err != nil {
				conn.Close(protocol.CloseNormal, "")
				return fmt.Errorf("reliable: read queue: %w", err)
			}
			if len(entries) > 0 {
				if entries[0].Seq != next {
					conn.Close(protocol.CloseNormal, "")
					return fmt.Errorf("%w: queue has seq %d where %d was expected", queue.ErrCorrupt, entries[0].Seq, next)
				}
				buf = buf[:0]
				buf = protocol.AppendMessageStart(buf)
				for i := range entries {
					e := &entries[i]
					buf = protocol.AppendFrame(buf, &protocol.Data{
						Stream: c.stream, Seq: e.Seq, ID: e.ID, Headers: e.Headers, Payload: e.Payload,
					})
				}
				last := entries[len(entries)-1].Seq
				c.mu.Lock()
				for i := range entries {
					e := &entries[i]
					if e.Seq > c.sentMax {
						c.inflight = append(c.inflight, sentEntry{seq: e.Seq, id: e.ID})
						c.sentMax = e.Seq
					} else {
						c.nRedelivered.Add(1)
					}
				}
				if win.InFlight() == 0 {
					c.progress = time.Now()
				}
				err := win.MarkSent(last)
				c.inFlight.Store(int64(win.InFlight()))
				c.mu.Unlock()
				if err != nil {
					conn.Close(protocol.CloseInternal, "")
					return err
				}
				msg := make([]byte, len(buf))
				copy(msg, buf)
				if err := conn.Write(msg); err != nil {
					return c.connErr(conn, readerErr)
				}
				continue
			}
		}
		select {
		case <-c.wake:
		case <-c.room:
		case <-stall.C:
			c.mu.Lock()
			stuck := win.InFlight() > 0 && time.Since(c.progress) > c.opts.AckTimeout
			c.mu.Unlock()
			if stuck {
				conn.Close(protocol.CloseNormal, "no acknowledgement within the ack timeout")
				return fmt.Errorf("%w (%v)", errAckTimeout, c.opts.AckTimeout)
			}
		case <-conn.Done():
			return c.connErr(conn, readerErr)
		case err := <-readerErr:
			readerErr <- err
			return err
		case <-c.ctx.Done():
			conn.Close(protocol.CloseNormal, "client closing")
			return ErrClosed
		}
	}
}

// connErr returns the best explanation of a connection's end: the reader's
// error (it holds the peer's close code) if it ends soon, else the
// connection's own.
func (c *Client) connErr(conn *wsconn.Conn, readerErr chan error) error {
	t := time.NewTimer(c.opts.HeartbeatTimeout)
	defer t.Stop()
	select {
	case err := <-readerErr:
		readerErr <- err
		return err
	case <-t.C:
		return conn.Err()
	}
}

// readLoop applies the server's acks and rejects.
func (c *Client) readLoop(conn *wsconn.Conn, win *ack.Window) error {
	for {
		msg, err := conn.ReadMessage()
		if err != nil {
			if ce, ok := closeErrorFrom(err); ok {
				return ce
			}
			if errors.Is(err, wsconn.ErrTextMessage) {
				conn.Close(protocol.CloseProtocolError, "text message")
			}
			return fmt.Errorf("reliable: read: %w", err)
		}
		err = protocol.Decode(msg, func(f protocol.Frame) error {
			switch f := f.(type) {
			case *protocol.Ack:
				if f.Stream != c.stream {
					return fmt.Errorf("%w: ack for stream %s", protocol.ErrMalformed, f.Stream)
				}
				c.mu.Lock()
				_, err := win.Ack(f.Seq)
				if err == nil {
					c.applyAckLocked(f.Seq)
					c.inFlight.Store(int64(win.InFlight()))
				}
				c.mu.Unlock()
				if err != nil {
					return err
				}
				notify(c.room)
				notify(c.ackWake)
			case *protocol.Reject:
				if f.Stream != c.stream {
					return fmt.Errorf("%w: reject for stream %s", protocol.ErrMalformed, f.Stream)
				}
				c.mu.Lock()
				for i := range c.inflight {
					if e := &c.inflight[i]; e.seq == f.Seq {
						e.rej = &RejectError{ID: e.id, Seq: e.seq, Code: f.Code, Reason: f.Reason}
						break
					}
				}
				c.mu.Unlock()
			default:
				return fmt.Errorf("%w: unexpected %s frame from server", protocol.ErrMalformed, f.Type())
			}
			return nil
		})
		if err != nil {
			conn.Close(protocol.CloseProtocolError, err.Error())
			return fmt.Errorf("reliable: from server: %w", err)
		}
	}
}

// applyAckLocked records that the server has everything up to seq and
// settles the receipts it covers. c.mu must be held.
func (c *Client) applyAckLocked(seq uint64) {
	if seq <= c.acked {
		return
	}
	c.nAcked.Add(seq - c.acked)
	c.acked = seq
	c.progress = time.Now()
	n := 0
	for n < len(c.inflight) && c.inflight[n].seq <= seq {
		e := c.inflight[n]
		if e.rej != nil {
			c.nRejected.Add(1)
		}
		if r := c.receipts[e.id]; r != nil {
			delete(c.receipts, e.id)
			if e.rej != nil {
				r.settle(e.rej)
			} else {
				r.settle(nil)
			}
		}
		n++
	}
	c.inflight = append(c.inflight[:0], c.inflight[n:]...)
	close(c.ackedCh)
	c.ackedCh = make(chan struct{})
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
