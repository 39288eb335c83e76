package reliable

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/ack"
	"github.com/wsreliable/wsreliable/internal/wsconn"
	"github.com/wsreliable/wsreliable/protocol"
)

// session is one client connection on the server. Its goroutines: the one
// ServeHTTP starts reads; a delivery goroutine, started when input arrives
// and ended once everything queued is handled, committed and acknowledged,
// calls the handler; a timer repeats the latest ack while the session is
// idle; and wsconn writes (also only while there is something to write).
// An idle session thus keeps one goroutine, its reader.
type session struct {
	srv      *Server
	ws       *websocket.Conn
	conn     *wsconn.Conn
	identity string
	log      *slog.Logger
	peer     *peer
	hello    *protocol.Hello

	in     inbox           // batches from the reader, bounded by the window
	ctx    context.Context // ends with the session
	cancel context.CancelFunc

	// pending counts data frames read and not yet handled by the delivery
	// loop; the in-flight window (ServerOptions.MaxInFlight) bounds it.
	pending atomic.Int64

	// released is set when the peer's turn has been given back. The
	// delivering goroutine sets it if delivery fails; serve reads it
	// after waiting for delivery to end.
	released bool
}

// goAway closes the session with code; safe from any goroutine, before or
// after the session's connection exists. Server.mu must be held.
func (ss *session) goAway(code protocol.CloseCode, reason string) {
	if ss.conn != nil {
		// The session's goroutine holds a count on wg, so this Add is safe.
		ss.srv.wg.Go(func() { ss.conn.Close(code, reason) })
	}
	if ss.cancel != nil && code != protocol.CloseGoingAway {
		ss.cancel()
	}
}

func (ss *session) serve() {
	s := ss.srv
	hello, err := ss.readHello()
	if err != nil {
		code := protocol.CloseProtocolError
		switch {
		case errors.Is(err, protocol.ErrVersion):
			code = protocol.CloseUnsupported
		case isTimeout(err):
			code = protocol.CloseHelloTimeout
		}
		if _, ok := closeErrorFrom(err); ok {
			ss.ws.Close()
		} else {
			closeRaw(ss.ws, code, err.Error(), s.opts.HeartbeatTimeout)
		}
		s.log.Info("handshake failed", "remote", ss.ws.RemoteAddr().String(), "error", err)
		return
	}
	ss.hello = hello
	log := s.log.With("client", hello.ClientID)
	ss.log = log

	bound, err := s.store.Binding(hello.ClientID)
	if err == nil && bound == "" {
		err = s.store.Bind(s.ctx, hello.ClientID, ss.identity)
		bound = ss.identity
	}
	if err != nil {
		closeRaw(ss.ws, protocol.CloseInternal, "store unavailable", s.opts.HeartbeatTimeout)
		log.Error("identity binding failed", "error", err)
		return
	}
	if bound != ss.identity {
		closeRaw(ss.ws, protocol.CloseIdentity, "client ID belongs to another identity", s.opts.HeartbeatTimeout)
		log.Warn("client ID presented by another identity")
		return
	}

	ss.ctx, ss.cancel = context.WithCancel(s.ctx)
	defer ss.cancel()
	ss.conn = wsconn.New(ss.ws, wsconn.Config{
		PingInterval: s.opts.HeartbeatInterval,
		Timeout:      s.opts.HeartbeatTimeout,
		ReadLimit:    s.opts.MaxMessageSize,
	})
	defer ss.conn.Abort(nil)

	// Register, taking over an older session of the same client.
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ss.conn.Close(protocol.CloseGoingAway, "server shutting down")
		return
	}
	if s.opts.MaxSessions > 0 && len(s.sessions) >= s.opts.MaxSessions {
		s.mu.Unlock()
		ss.conn.Close(protocol.CloseTryAgainLater, retryAfterKey+"1s")
		return
	}
	p := s.peers[hello.ClientID]
	if p == nil {
		p = &peer{id: hello.ClientID, turn: make(chan struct{}, 1)}
		p.turn <- struct{}{}
		s.peers[hello.ClientID] = p
	}
	if old := p.current; old != nil {
		old.goAway(protocol.CloseSuperseded, "a newer connection took over this client ID")
	}
	p.current = ss
	ss.peer = p
	s.sessions[ss] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, ss)
		if p.current == ss {
			p.current = nil
		}
		s.mu.Unlock()
	}()

	// Wait for the previous session of this client to finish delivering.
	select {
	case <-p.turn:
	case <-ss.ctx.Done():
		return
	case <-ss.conn.Done():
		return
	}
	defer ss.releaseTurn()

	if p.stream != hello.Stream || p.wm == 0 {
		wm, err := s.store.Watermark(hello.ClientID, hello.Stream)
		if err != nil {
			ss.conn.Close(protocol.CloseInternal, "store unavailable")
			log.Error("loading watermark failed", "error", err)
			return
		}
		p.stream, p.wm, p.durable = hello.Stream, wm, wm
	}
	// Only what is committed may be announced: the client deletes
	// everything up to the welcome's watermark. If an earlier session
	// delivered messages whose commit failed (a full disk), they are
	// delivered again rather than acknowledged without a durable record.
	p.wm = p.durable
	err = ss.conn.Write(protocol.Encode(&protocol.Welcome{
		Watermark:         p.durable,
		HeartbeatInterval: s.opts.HeartbeatInterval,
		HeartbeatTimeout:  s.opts.HeartbeatTimeout,
		MaxMessageSize:    uint32(min(s.opts.MaxMessageSize, 1<<31)),
		MaxInFlight:       uint32(s.opts.MaxInFlight),
	}))
	if err != nil {
		return
	}
	log.Info("session started", "stream", hello.Stream.String(), "watermark", p.wm)

	ss.in.mu.Lock()
	ss.in.idle = time.AfterFunc(s.opts.HeartbeatInterval, ss.repeatAck)
	ss.in.ready = make(chan struct{}, 1)
	ss.in.mu.Unlock()
	err = ss.readLoop()
	ss.cancelIfStopped()
	ss.endInput()
	log.Info("session ended", "error", err)
}

// releaseTurn lets the next session of the client deliver. The caller owns
// delivery, or it has ended.
func (ss *session) releaseTurn() {
	if !ss.released {
		ss.released = true
		ss.peer.turn <- struct{}{}
	}
}

// cancelIfStopped ends the handler's context unless the server is shutting
// down gracefully (then the delivery loop finishes what it has).
func (ss *session) cancelIfStopped() {
	s := ss.srv
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if !closing {
		ss.cancel()
	}
}

func (ss *session) readHello() (*protocol.Hello, error) {
	_ = ss.ws.SetReadDeadline(time.Now().Add(ss.srv.opts.HelloTimeout))
	typ, msg, err := ss.ws.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("reliable: read hello: %w", err)
	}
	if typ != websocket.BinaryMessage {
		return nil, fmt.Errorf("%w: text message instead of hello", protocol.ErrMalformed)
	}
	frames, err := protocol.DecodeAll(msg)
	if err != nil {
		return nil, err
	}
	h, ok := frames[0].(*protocol.Hello)
	if !ok || len(frames) != 1 {
		return nil, fmt.Errorf("%w: expected a single hello frame, got %s", protocol.ErrMalformed, frames[0].Type())
	}
	if h.ClientID == "" || h.Stream.IsZero() {
		return nil, fmt.Errorf("%w: hello without client ID or stream", protocol.ErrMalformed)
	}
	return h, nil
}

// readLoop reads data frames and queues them for delivery. It never blocks
// on the handler: a client that exceeds its window is a protocol error.
func (ss *session) readLoop() error {
	for {
		msg, err := ss.conn.ReadMessage()
		if err != nil {
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				ss.conn.Close(protocol.CloseTooBig, "message too big")
			case errors.Is(err, wsconn.ErrTextMessage):
				ss.conn.Close(protocol.CloseProtocolError, "text message on a binary protocol")
			}
			return err
		}
		var batch []*protocol.Data
		err = protocol.Decode(msg, func(f protocol.Frame) error {
			d, ok := f.(*protocol.Data)
			if !ok {
				return fmt.Errorf("%w: unexpected %s frame from client", protocol.ErrMalformed, f.Type())
			}
			if d.Stream != ss.hello.Stream {
				return fmt.Errorf("%w: data for stream %s, session is %s", protocol.ErrMalformed, d.Stream, ss.hello.Stream)
			}
			batch = append(batch, d)
			return nil
		})
		if err != nil {
			ss.conn.Close(protocol.CloseProtocolError, err.Error())
			return err
		}
		// The window counts data frames, not messages: one message may
		// carry many frames.
		if ss.pending.Add(int64(len(batch))) > int64(ss.srv.opts.MaxInFlight) {
			ss.conn.Close(protocol.CloseProtocolError, "client exceeded its in-flight window")
			return errors.New("reliable: client exceeded its in-flight window")
		}
		ss.push(batch)
	}
}

// deliverLoop hands messages to the handler in order, commits the
// watermark every AckBatch messages or whenever it runs out of input, and
// acks only after the commit. It runs while its goroutine owns delivery
// (inbox.running) and returns once nothing is queued, having committed
// and acknowledged everything it handled. If delivery fails, it commits
// what was handled, stops delivery for the rest of the session and
// releases the peer's turn.
func (ss *session) deliverLoop() {
	s, p := ss.srv, ss.peer
	wm := ack.NewWatermark(p.wm)
	co := ack.NewCoalescer(s.opts.AckBatch, 0)
	var rejects []protocol.Frame
	// flush commits the watermark and sends rejects and the ack.
	flush := func() bool {
		seq, ok := co.Take()
		if !ok {
			return true
		}
		if p.wm > p.durable {
			if err := ss.flushHandler(); err != nil {
				ss.log.Error("Flush failed; closing without ack, the messages since the last flush will be delivered again", "error", err)
				ss.conn.Close(protocol.CloseInternal, "handler flush failed")
				return false
			}
			if err := s.store.SetWatermark(context.Background(), p.id, p.stream, p.wm); err != nil {
				ss.log.Error("committing watermark failed; closing without ack", "error", err)
				ss.conn.Close(protocol.CloseInternal, "store unavailable")
				return false
			}
			p.durable = p.wm
		}
		frames := append(rejects, &protocol.Ack{Stream: p.stream, Seq: min(seq, p.durable)})
		rejects = nil
		_ = ss.conn.Write(protocol.Encode(frames...))
		return true
	}
	idle := false
	defer func() {
		if !idle {
			flush()
			ss.stopDelivery()
		}
	}()
	for {
		batch, ok := ss.take()
		if !ok {
			if !flush() {
				return
			}
			if ss.linger() {
				continue
			}
			if idle = ss.goIdle(); idle {
				return
			}
			continue
		}
		for _, d := range batch {
			switch wm.Check(d.Seq) {
			case ack.Duplicate:
				ss.pending.Add(-1)
				co.Add(wm.Seq(), time.Now())
				continue
			case ack.Gap:
				ss.log.Warn("sequence gap", "watermark", wm.Seq(), "seq", d.Seq)
				ss.conn.Close(protocol.CloseSequenceGap, fmt.Sprintf("seq %d after watermark %d", d.Seq, wm.Seq()))
				ss.drain()
				return
			}
			rej, ok := ss.deliver(d)
			if !ok {
				ss.drain()
				return
			}
			if rej != nil {
				rejects = append(rejects, rej)
			}
			wm.Advance(d.Seq)
			p.wm = wm.Seq()
			// A handled frame leaves the window before its ack is sent,
			// so a client that waits for acks never exceeds it.
			ss.pending.Add(-1)
			if co.Add(wm.Seq(), time.Now()) && !flush() {
				ss.drain()
				return
			}
		}
	}
}

// drain ends the session's handler context; the reader never blocks on
// the delivery loop, so queued input can simply be abandoned.
func (ss *session) drain() {
	ss.cancel()
}

// inbox queues batches from the reader for delivery and says who delivers:
// at most one goroutine at a time owns delivery (and with it the peer's
// watermarks). push starts a delivery goroutine when input arrives and
// none is running; it gives up ownership once the queue is empty. While
// nobody owns delivery, the idle timer repeats the latest ack. Unlike a
// channel sized for the worst case, the queue holds memory only for what
// is queued. push never blocks; the reader bounds the queue by the
// in-flight window.
type inbox struct {
	mu      sync.Mutex
	q       [][]*protocol.Data
	running bool          // a goroutine owns delivery
	closed  bool          // the reader is done: what is queued is still delivered
	stopped bool          // delivery failed: input is dropped
	idle    *time.Timer   // runs repeatAck; armed while nobody delivers
	ready   chan struct{} // capacity 1: input or the end of it, for a lingering deliverer
	wg      sync.WaitGroup
}

// deliverLinger is how long a delivery goroutine that ran out of input
// waits for more before it exits (at most half the heartbeat interval): a
// busy session keeps its goroutine, an idle one still ends up without.
const deliverLinger = 100 * time.Millisecond

// push queues a batch and starts a delivery goroutine unless one runs.
// Only the reader calls it.
func (ss *session) push(batch []*protocol.Data) {
	in := &ss.in
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stopped {
		return
	}
	in.q = append(in.q, batch)
	if !in.running {
		in.running = true
		in.idle.Stop()
		in.wg.Go(ss.deliverLoop)
	} else {
		notify(in.ready)
	}
}

// linger waits up to deliverLinger for input and reports whether any may
// have come. The caller owns delivery.
func (ss *session) linger() bool {
	in := &ss.in
	in.mu.Lock()
	closed := in.closed
	in.mu.Unlock()
	if closed {
		return false
	}
	t := time.NewTimer(min(deliverLinger, ss.srv.opts.HeartbeatInterval/2))
	defer t.Stop()
	select {
	case <-in.ready:
		return true
	case <-t.C:
		return false
	}
}

// take returns the oldest batch, or false if the queue is empty.
func (ss *session) take() ([]*protocol.Data, bool) {
	in := &ss.in
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.q) == 0 {
		return nil, false
	}
	batch := in.q[0]
	in.q[0] = nil
	in.q = in.q[1:]
	return batch, true
}

// goIdle gives up delivery if nothing is queued, arming the idle timer
// unless the input has ended, and reports whether it did.
func (ss *session) goIdle() bool {
	in := &ss.in
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.q) > 0 {
		return false
	}
	in.q = nil // give back a burst's memory
	in.running = false
	if !in.closed {
		in.idle.Reset(ss.srv.opts.HeartbeatInterval)
	}
	return true
}

// stopDelivery ends delivery for the rest of the session after a failure
// and lets the client's next session deliver. The caller owns delivery.
func (ss *session) stopDelivery() {
	in := &ss.in
	in.mu.Lock()
	in.stopped = true
	in.running = false
	in.q = nil
	in.idle.Stop()
	in.mu.Unlock()
	ss.releaseTurn()
}

// endInput tells delivery that the reader is done and waits until what
// was queued is delivered (or abandoned) and committed.
func (ss *session) endInput() {
	in := &ss.in
	in.mu.Lock()
	in.closed = true
	in.idle.Stop()
	in.mu.Unlock()
	notify(in.ready)
	in.wg.Wait()
}

// repeatAck is the idle timer's function. While the session is idle it
// repeats its latest ack every heartbeat interval: an ack lost on the way
// (a faulty middlebox or peer) would otherwise leave the client waiting on
// a healthy link forever.
func (ss *session) repeatAck() {
	in := &ss.in
	in.mu.Lock()
	if in.running || in.closed || in.stopped {
		in.mu.Unlock()
		return
	}
	in.running = true
	in.wg.Add(1)
	in.mu.Unlock()
	defer in.wg.Done()
	if p := ss.peer; p.durable > 0 {
		_ = ss.conn.Write(protocol.Encode(&protocol.Ack{Stream: p.stream, Seq: p.durable}))
	}
	if !ss.goIdle() {
		ss.deliverLoop() // input arrived meanwhile
	}
}

// deliver calls the handler until it accepts or rejects d, retrying other
// errors with backoff. It reports false if the session ended first.
func (ss *session) deliver(d *protocol.Data) (*protocol.Reject, bool) {
	m := &Message{
		ClientID: ss.hello.ClientID,
		Identity: ss.identity,
		Stream:   d.Stream,
		Seq:      d.Seq,
		ID:       d.ID,
		Headers:  d.Headers,
		Payload:  d.Payload,
	}
	delay := 50 * time.Millisecond
	for {
		err := ss.call(m)
		switch {
		case err == nil:
			return nil, true
		case errors.Is(err, ErrRejected):
			return &protocol.Reject{Stream: d.Stream, Seq: d.Seq, Code: 1, Reason: truncate(err.Error(), protocol.MaxReasonLen)}, true
		}
		ss.log.Warn("handler failed; will retry", "seq", d.Seq, "error", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ss.ctx.Done():
			t.Stop()
			return nil, false
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// flushHandler runs ServerOptions.Flush, if set, turning a panic into an
// error.
func (ss *session) flushHandler() (err error) {
	if ss.srv.opts.Flush == nil {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reliable: Flush panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return ss.srv.opts.Flush(ss.ctx, ss.hello.ClientID)
}

// call runs the handler, turning a panic into an error.
func (ss *session) call(m *Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reliable: handler panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return ss.srv.handler(ss.ctx, m)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
