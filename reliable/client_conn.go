package reliable

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/internal/backoff"
	"github.com/wsreliable/wsreliable/internal/wsconn"
	"github.com/wsreliable/wsreliable/protocol"
)

// clientReadLimit is the largest WebSocket message a client reads, as
// announced in its hello: the server settles a push that would not fit as
// rejected instead of sending it. It leaves room for a push as large as a
// server accepts by default (ServerOptions.MaxMessageSize, 2 MiB) with its
// framing and headers.
const clientReadLimit = 4 << 20

// inboxPeer is the peer name under which a client's store keeps its
// watermarks for the server's streams.
const inboxPeer = "server"

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
		c.urlIdx = (c.urlIdx + 1) % len(c.urls)
		if isFatal(err) {
			c.stop(err)
			return
		}
		var hint time.Duration
		var ce *CloseError
		if errors.As(err, &ce) {
			hint = ce.RetryAfter
		}
		delay := b.NextAtLeast(hint)
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
// client, so retrying would only hammer it. A 401 is not: the token may
// have expired or the auth service hiccupped, and Header is called again
// before the next dial.
func isFatal(err error) bool {
	if errors.Is(err, ErrForbidden) || errors.Is(err, errStoreMismatch) {
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
	c.mu.Unlock()
	c.log.Error("client stopped", "client", c.clientID, "error", err)
	c.setState(StateStopped, err)
	c.receipts.settleAll(err)
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
	ws, resp, err := d.DialContext(ctx, c.urls[c.urlIdx], hdr)
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
	st := c.store.Stats()
	low := st.LastSeq + 1
	if st.FirstSeq > 0 {
		low = st.FirstSeq
	}
	hello := &protocol.Hello{
		ClientID:       c.clientID,
		Stream:         c.stream,
		StreamLow:      low,
		InStream:       c.in.stream,
		InWatermark:    c.in.durable,
		MaxMessageSize: clientReadLimit,
		MaxInFlight:    uint32(c.opts.MaxInFlight),
	}
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
		closeRaw(ws, protocol.CloseProtocolError, "malformed welcome", c.opts.HeartbeatTimeout)
		return err
	}
	_ = ws.SetWriteDeadline(time.Time{})
	// What this process sent was read from the store, so it was assigned,
	// even if Stats does not show its commit yet (the writer updates its
	// counters just after the commit that Read already sees).
	if last := max(c.store.Stats().LastSeq, c.out.sentHigh()); welcome.Watermark > last {
		closeRaw(ws, protocol.CloseNormal, "", c.opts.HeartbeatTimeout)
		return fmt.Errorf("%w: server has %d, store assigned up to %d", errStoreMismatch, welcome.Watermark, last)
	}
	hb := c.heartbeat(welcome)
	conn := wsconn.New(ws, wsconn.Config{
		PingInterval: hb.interval,
		Timeout:      hb.timeout,
		ReadLimit:    clientReadLimit,
	})
	b.Connected(time.Now())
	defer b.Disconnected(time.Now())
	c.nConnects.Add(1)
	return c.session(conn, welcome, hb)
}

// heartbeat is one connection's heartbeat settings.
type heartbeat struct{ interval, timeout time.Duration }

// Welcome heartbeat values outside this range are not used: a server
// cannot make a client ping in a tight loop or never.
const (
	minServerHeartbeat = 10 * time.Millisecond
	maxServerHeartbeat = time.Hour
)

// heartbeat returns the connection's heartbeat: the client's own settings
// where its options set them, else the welcome's, else the defaults.
func (c *Client) heartbeat(w *protocol.Welcome) heartbeat {
	hb := heartbeat{c.opts.HeartbeatInterval, c.opts.HeartbeatTimeout}
	usable := func(d time.Duration) bool { return d >= minServerHeartbeat && d <= maxServerHeartbeat }
	if !c.ownHeartbeat[0] && usable(w.HeartbeatInterval) {
		hb.interval = w.HeartbeatInterval
	}
	if !c.ownHeartbeat[1] && usable(w.HeartbeatTimeout) {
		hb.timeout = w.HeartbeatTimeout
	}
	return hb
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

// session sends queued messages, applies acks and hands the server's
// pushes to the Handler until the connection ends. It returns why it
// ended.
func (c *Client) session(conn *wsconn.Conn, w *protocol.Welcome, hb heartbeat) error {
	window := c.opts.MaxInFlight
	if w.MaxInFlight > 0 && int(w.MaxInFlight) < window {
		window = int(w.MaxInFlight)
	}
	replay := c.out.begin(w.Watermark, window)
	defer c.out.end()
	c.log.Info("connected", "client", c.clientID, "watermark", w.Watermark, "replay", replay)
	c.setState(StateConnected, nil)

	// The handler's context ends with the session: a handler retrying a
	// message must not keep a dead connection's session open.
	inCtx, inCancel := context.WithCancel(c.ctx)
	defer inCancel()
	in, err := c.openInbox(inCtx, conn, w, hb.interval)
	if err != nil {
		conn.Close(protocol.CloseInternal, "")
		return err
	}
	readerErr := make(chan error, 1)
	c.conn.Store(conn)
	defer func() {
		c.conn.Store(nil)
		conn.Abort(nil)
		<-readerErr
		inCancel()
		if in != nil {
			in.close()
		}
	}()
	go func() {
		err := c.readLoop(conn, in, w.OutStream)
		// A dead link (read deadline), a close from the server or a bad
		// frame ends the connection, and with it the sender.
		conn.Abort(err)
		readerErr <- err
	}()

	err = c.out.send(conn, sendConfig{
		peerMaxMessage: int(w.MaxMessageSize),
		ackTimeout:     c.opts.AckTimeout,
		redelivered:    &c.nRedelivered,
	}, c.ctx.Done())
	switch {
	case err != nil:
		return err
	case c.ctx.Err() != nil:
		conn.Close(protocol.CloseNormal, "client closing")
		return ErrClosed
	}
	return c.connErr(conn, readerErr, hb.timeout)
}

// openInbox resumes the server's stream to this client, if the client
// takes pushes: from the watermark in its store, or from the server's
// lowest held sequence if that is higher (the client lost its store, or
// the server dropped what the client never got).
func (c *Client) openInbox(ctx context.Context, conn *wsconn.Conn, w *protocol.Welcome, repeat time.Duration) (*inbox, error) {
	if c.opts.Handler == nil {
		return nil, nil
	}
	if !w.OutStream.IsZero() {
		err := c.in.resume(w.OutStream, w.OutLow, func() (uint64, error) { return c.store.Watermark(inboxPeer, w.OutStream) })
		if err != nil {
			return nil, fmt.Errorf("reliable: load watermark: %w", err)
		}
	}
	write := func(frames ...protocol.Frame) error { return conn.Write(protocol.Encode(frames...)) }
	return newInbox(ctx, &c.in, inboxConfig{
		handler:     c.opts.Handler,
		flush:       c.opts.Flush,
		store:       c.store,
		peer:        inboxPeer,
		write:       write,
		fail:        conn.Close,
		message:     c.message,
		clientID:    c.clientID,
		ackBatch:    c.opts.AckBatch,
		maxAttempts: c.opts.MaxAttempts,
		repeat:      repeat,
		log:         c.log,
		onDeliver:   func(*protocol.Data, protocol.RejectCode) { c.nReceived.Add(1) },
	}), nil
}

// message builds the Handler's view of a push.
func (c *Client) message(d *protocol.Data) *Message {
	return &Message{
		ClientID: c.clientID,
		Address:  c.clientID,
		Stream:   d.Stream,
		Seq:      d.Seq,
		ID:       d.ID,
		Headers:  d.Headers,
		Payload:  d.Payload,
		Expires:  expiresTime(d.Expires),
	}
}

// connErr returns the best explanation of a connection's end: the reader's
// error (it holds the peer's close code) if it ends soon, else the
// connection's own.
func (c *Client) connErr(conn *wsconn.Conn, readerErr chan error, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-readerErr:
		readerErr <- err
		return err
	case <-t.C:
		return conn.Err()
	}
}

// readLoop applies the server's acks and rejects to the outbox and hands
// its pushes to the inbox (nil: the client takes no pushes, and leaves
// them unacknowledged on the server). inStream is the push stream the
// welcome announced; zero if the server had none, and then the first
// push's stream is the session's.
func (c *Client) readLoop(conn *wsconn.Conn, in *inbox, inStream protocol.StreamID) error {
	warned := false
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
		var batch []protocol.Frame
		data := 0
		err = protocol.Decode(msg, func(f protocol.Frame) error {
			switch f := f.(type) {
			case *protocol.Ack:
				return c.out.onAck(f)
			case *protocol.Reject:
				return c.out.onReject(f)
			case *protocol.Data, *protocol.Skip:
				stream := streamOf(f)
				if inStream.IsZero() {
					inStream = stream
				}
				if stream != inStream {
					return fmt.Errorf("%w: push for stream %s, session is %s", protocol.ErrMalformed, stream, inStream)
				}
				if _, ok := f.(*protocol.Data); ok {
					data++
				}
				batch = append(batch, f)
			case *protocol.Heartbeat:
			default:
				return fmt.Errorf("%w: unexpected %s frame from server", protocol.ErrMalformed, f.Type())
			}
			return nil
		})
		if err != nil {
			conn.Close(protocol.CloseProtocolError, "malformed or unexpected frame")
			return fmt.Errorf("reliable: from server: %w", err)
		}
		switch {
		case len(batch) == 0:
		case in == nil:
			if !warned {
				c.log.Warn("the server pushes messages but ClientOptions.Handler is nil; they stay queued on the server")
				warned = true
			}
		default:
			if in.pending.Add(int64(data)) > int64(c.opts.MaxInFlight) {
				conn.Close(protocol.CloseProtocolError, "server exceeded the client's in-flight window")
				return errors.New("reliable: server exceeded the client's in-flight window")
			}
			in.push(batch)
		}
	}
}

// seqOf returns the sequence of a Data or Skip frame.
func seqOf(f protocol.Frame) uint64 {
	switch f := f.(type) {
	case *protocol.Data:
		return f.Seq
	case *protocol.Skip:
		return f.Seq
	}
	return 0
}

// streamOf returns the stream of a Data or Skip frame.
func streamOf(f protocol.Frame) protocol.StreamID {
	switch f := f.(type) {
	case *protocol.Data:
		return f.Stream
	case *protocol.Skip:
		return f.Stream
	}
	return protocol.StreamID{}
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
