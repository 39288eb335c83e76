package reliable

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/internal/wsconn"
	"github.com/wsreliable/wsreliable/protocol"
)

// peer is the server's state for one client address while it has a session:
// its position in the client's stream (inbox) and its push stream
// (outbox). Successive sessions of the client share it; only the session
// holding turn delivers and sends. A peer leaves memory with its last
// session, so offline clients cost nothing here.
type peer struct {
	id      string        // the client's address
	turn    chan struct{} // one token: held by the session that delivers
	current *session      // the newest session, guarded by Server.mu
	refs    int           // sessions holding the peer, guarded by Server.mu
	in      streamState   // guarded by turn
	out     *outbox       // nil until the client has a push stream; guarded by turn
	// live is out for readers that do not hold the turn (a receipt's
	// watcher); setOut sets both.
	live atomic.Pointer[outbox]
}

// setOut sets the peer's push outbox (nil: none loaded).
func (p *peer) setOut(o *outbox) {
	p.out = o
	p.live.Store(o)
}

// session is one client connection on the server. Its goroutines: the one
// ServeHTTP starts reads; the inbox's worker (while there is input, or to
// repeat an ack) calls the handler; a sender (while pushes are queued or
// in flight) writes them; wsconn writes (while there is something to
// write). An idle session thus keeps one goroutine, its reader.
type session struct {
	srv      *Server
	ws       *websocket.Conn
	conn     *wsconn.Conn
	identity string
	addr     string // Address(identity, client ID): the key of the client's state
	log      *slog.Logger
	peer     *peer
	hello    *protocol.Hello
	bind     bool // the client ID is new: bind it to identity
	inbox    *inbox
	inFlight *budget     // MaxInFlightBytes of this session
	rate     *rateBucket // its identity's MaxMessageRate; nil: no limit
	byteRate *rateBucket // its identity's MaxByteRate; nil: no limit
	// watermark mirrors the committed watermark of the client's stream
	// for Server.Clients (the delivery worker owns the real one).
	watermark atomic.Uint64

	ctx    context.Context // ends the handler calls
	cancel context.CancelFunc

	mu      sync.Mutex
	ready   bool          // the welcome is out: pushes may be sent
	sending bool          // a sender goroutine runs
	ended   bool          // the session is over: start no sender
	stop    chan struct{} // closed when the session ends
	wg      sync.WaitGroup
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

// serve runs the session: handshake, register, then run until the
// connection ends.
func (ss *session) serve() {
	s := ss.srv
	if !ss.handshake() {
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
	if !ss.register() {
		return
	}
	defer s.unregister(ss)
	if !ss.admit() {
		return
	}

	// Wait for the previous session of this client to finish delivering.
	p := ss.peer
	select {
	case <-p.turn:
	case <-ss.ctx.Done():
		return
	case <-ss.conn.Done():
		return
	}
	defer func() { p.turn <- struct{}{} }()
	ss.run()
}

// handshake reads and checks the hello and the client ID's binding, and
// reports whether the session may go on (it closed the connection if not).
func (ss *session) handshake() bool {
	s := ss.srv
	hello, err := ss.readHello()
	if err != nil {
		code, reason := protocol.CloseProtocolError, "malformed hello"
		switch {
		case errors.Is(err, protocol.ErrVersion):
			code, reason = protocol.CloseUnsupported, "unsupported codec version"
		case isTimeout(err):
			code, reason = protocol.CloseHelloTimeout, "no hello in time"
		}
		if _, ok := closeErrorFrom(err); ok {
			ss.ws.Close()
		} else {
			closeRaw(ss.ws, code, reason, s.opts.HeartbeatTimeout)
		}
		s.log.Info("handshake failed", "remote", ss.ws.RemoteAddr().String(), "error", err)
		return false
	}
	ss.hello = hello
	// The client's state is keyed by its address, which holds the
	// identity: another identity presenting the same client ID gets
	// state of its own, never this one's.
	addr, refused := checkClientAddress(ss.identity, hello.ClientID)
	if refused != "" {
		closeRaw(ss.ws, protocol.ClosePolicy, refused, s.opts.HeartbeatTimeout)
		host, _, _ := net.SplitHostPort(ss.ws.RemoteAddr().String())
		s.refusedLog("client address", host)
		return false
	}
	ss.addr = addr
	ss.log = s.log.With("client", addr)

	// Bindings are written for authenticated addresses, which name their
	// identity anyway: one can only differ from the identity when it was
	// written before addresses held identities, keyed by a bare client
	// ID, which the empty identity would now present.
	bound, err := s.store.Binding(addr)
	if err != nil {
		closeRaw(ss.ws, protocol.CloseInternal, "store unavailable", s.opts.HeartbeatTimeout)
		ss.log.Error("reading the identity binding failed", "error", err)
		return false
	}
	if bound != "" && bound != ss.identity {
		closeRaw(ss.ws, protocol.CloseIdentity, "client ID belongs to another identity", s.opts.HeartbeatTimeout)
		ss.log.Warn("client ID presented by another identity")
		return false
	}
	// Over the store's quota only clients with pushes waiting come in:
	// they drain the store. Others would add state: they retry later.
	if s.storeFull() {
		info, err := s.store.OutboxInfo(addr)
		if err != nil || info.Messages == 0 {
			closeRaw(ss.ws, protocol.CloseTryAgainLater, retryAfterKey+storeFullRetry, s.opts.HeartbeatTimeout)
			host, _, _ := net.SplitHostPort(ss.ws.RemoteAddr().String())
			s.refusedLog("store quota", host)
			return false
		}
	}
	ss.bind = bound == "" && ss.identity != ""
	return true
}

// admit claims the client's state (in a fleet), binds the address to the
// session's identity if it is new, and records the visit; it reports
// whether the session may go on (it closed the connection if not). The
// session is registered: a claim is released with the peer's last
// session, so an ending session of the same client cannot drop it.
func (ss *session) admit() bool {
	s, id := ss.srv, ss.addr
	if _, err := s.fleet.claim(ss.ctx, id); err != nil {
		ss.conn.Close(protocol.CloseTryAgainLater, retryAfterKey+"1s")
		ss.log.Error("claiming the client failed", "error", err)
		return false
	}
	if ss.bind {
		if err := s.store.Bind(ss.ctx, id, ss.identity); err != nil {
			ss.conn.Close(storeCloseCode(err))
			ss.log.Error("identity binding failed", "error", err)
			return false
		}
	}
	// The client's binding and watermarks are in use: they do not expire
	// (ServerOptions.IdleExpiry) while the client keeps coming back.
	// A failure only risks an earlier expiry: the session goes on.
	if err := s.store.Touch(ss.ctx, id); err != nil {
		ss.log.Warn("recording the client's visit failed", "error", err)
	}
	return true
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

// register adds the session to the server, taking over an older session
// of the same client, and reports whether it may go on.
func (ss *session) register() bool {
	s := ss.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		ss.conn.Close(protocol.CloseGoingAway, "server shutting down")
		return false
	}
	if s.opts.MaxSessions > 0 && len(s.sessions) >= s.opts.MaxSessions {
		ss.conn.Close(protocol.CloseTryAgainLater, retryAfterKey+"1s")
		return false
	}
	p := s.peers[ss.addr]
	if p == nil {
		p = &peer{id: ss.addr, turn: make(chan struct{}, 1)}
		p.turn <- struct{}{}
		s.peers[p.id] = p
	}
	if old := p.current; old != nil {
		old.goAway(protocol.CloseSuperseded, "a newer connection took over this client ID")
	}
	p.current = ss
	p.refs++
	ss.peer = p
	now := time.Now()
	if s.opts.MaxMessageRate > 0 {
		ss.rate = s.rateBucketLocked(rateKey{rateMessages, ss.identity}, s.opts.MaxMessageRate, s.opts.MessageBurst, now)
		ss.rate.refs++
	}
	if s.opts.MaxByteRate > 0 {
		ss.byteRate = s.rateBucketLocked(rateKey{rateBytes, ss.identity}, s.opts.MaxByteRate, int(min(s.opts.ByteBurst, 1<<50)), now)
		ss.byteRate.refs++
	}
	ss.stop = make(chan struct{})
	s.sessions[ss] = struct{}{}
	return true
}

// run resumes both streams, welcomes the client and serves the connection
// until it ends. The caller holds the peer's turn.
func (ss *session) run() {
	if !onOwnStack(ss.start) {
		return
	}
	err := ss.readLoop()
	ss.end()
	ss.srv.counters.closed(closeCode(err, ss.conn.Err()))
	ss.log.Info("session ended", "error", err)
}

// onOwnStack runs f on a goroutine of its own and returns its result. The
// store calls that open a session run deep call chains (bbolt, group
// commit); run on the session's goroutine, they would grow its stack for
// good, and the stack is most of what an idle session holds. The
// goroutine that ran them exits, and its stack with it.
func onOwnStack(f func() bool) bool {
	ok := make(chan bool, 1)
	go func() { ok <- f() }()
	return <-ok
}

// start resumes both streams, welcomes the client and starts the inbox,
// and reports whether the session may go on to read.
func (ss *session) start() bool {
	s, p, h := ss.srv, ss.peer, ss.hello
	if s.fleet != nil {
		// Another server may have moved the client's streams on since
		// this one last served it: read them afresh.
		p.in = streamState{}
		ss.mu.Lock()
		p.setOut(nil)
		ss.mu.Unlock()
	}
	err := p.in.resume(h.Stream, h.StreamLow, func() (uint64, error) { return s.store.Watermark(p.id, h.Stream) })
	if err != nil {
		ss.conn.Close(protocol.CloseInternal, "store unavailable")
		ss.log.Error("loading watermark failed", "error", err)
		return false
	}
	outStream, outLow, err := ss.resumeOutbox()
	if err != nil {
		ss.conn.Close(protocol.CloseInternal, "store unavailable")
		ss.log.Error("loading push outbox failed", "error", err)
		return false
	}
	// Only what is committed may be announced: the client deletes
	// everything up to the welcome's watermark.
	err = ss.conn.Write(protocol.Encode(&protocol.Welcome{
		Watermark:         p.in.durable,
		HeartbeatInterval: s.opts.HeartbeatInterval,
		HeartbeatTimeout:  s.opts.HeartbeatTimeout,
		MaxMessageSize:    uint32(min(s.opts.MaxMessageSize, 1<<31)),
		MaxInFlight:       uint32(s.opts.MaxInFlight),
		OutStream:         outStream,
		OutLow:            outLow,
	}))
	if err != nil {
		return false
	}
	// Stream IDs are resume secrets: debug level only.
	ss.log.Info("session started", "watermark", p.in.durable, "push_low", outLow)
	ss.log.Debug("session streams", "stream", h.Stream.String(), "push_stream", outStream.String())

	ss.inFlight = newBudget(s.opts.MaxInFlightBytes)
	ss.inbox = newInbox(ss.ctx, &p.in, inboxConfig{
		handler:     s.handler,
		flush:       s.opts.Flush,
		store:       s.store,
		peer:        p.id,
		write:       ss.write,
		fail:        ss.conn.Close,
		message:     ss.message,
		clientID:    p.id,
		ackBatch:    s.opts.AckBatch,
		maxAttempts: s.opts.MaxAttempts,
		repeat:      s.opts.HeartbeatInterval,
		heartbeat:   true,
		log:         ss.log,
		release: func(n int64) {
			ss.inFlight.release(n)
			s.buffered.release(n)
		},
		onDeliver:   s.counters.delivered,
		onCommit:    ss.watermark.Store,
		onDuplicate: func() { s.counters.duplicates.Add(1) },
		observer:    s.opts.Observer,
	})
	ss.watermark.Store(p.in.durable)
	s.counters.sessions.Add(1)
	ss.mu.Lock()
	ss.ready = true
	ss.mu.Unlock()
	ss.kick()
	return true
}

// resumeOutbox prepares the client's push stream for this session: what
// the client's hello says it has is acknowledged, and the welcome tells
// the client where the stream starts.
func (ss *session) resumeOutbox() (protocol.StreamID, uint64, error) {
	s, p, h := ss.srv, ss.peer, ss.hello
	info, err := s.store.OutboxInfo(p.id)
	if err != nil || info.Stream.IsZero() {
		return protocol.StreamID{}, 0, err
	}
	ss.mu.Lock()
	if p.out == nil || p.out.stream != info.Stream {
		p.setOut(s.newPushOutbox(p.id, info))
	}
	ss.mu.Unlock()
	peerAcked := info.Acked
	if h.InStream == info.Stream {
		if h.InWatermark > info.LastSeq {
			ss.log.Error("client claims push sequences this store never assigned; ignoring its watermark",
				"client_watermark", h.InWatermark, "last_seq", info.LastSeq)
		} else {
			peerAcked = max(peerAcked, h.InWatermark)
		}
	}
	if peerAcked > info.Acked {
		// The client has pushes whose ack was lost, perhaps sent before
		// this outbox was loaded: their receipts settle now.
		entries, err := s.store.ReadOutbox(p.id, info.Acked+1, int(peerAcked-info.Acked), 0)
		if err != nil {
			return protocol.StreamID{}, 0, err
		}
		p.out.adopt(entries)
	}
	p.out.begin(peerAcked, ss.pushWindow())
	low := info.LastSeq + 1
	if info.FirstSeq > 0 {
		low = info.FirstSeq
	}
	return info.Stream, low, nil
}

// kick starts the sender unless it runs, or wakes it: a push was queued,
// an ack arrived, or the session started.
func (ss *session) kick() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended || !ss.ready {
		return
	}
	if ss.sending {
		if o := ss.peer.out; o != nil {
			notify(o.wake)
		}
		return
	}
	if ss.peer.out == nil && !ss.openOutboxLocked() {
		return
	}
	ss.sending = true
	ss.wg.Go(ss.sendLoop)
}

// sendLoop runs the sender while there is something to send or delete,
// then exits. It holds no turn of its own: the session holds the peer's.
func (ss *session) sendLoop() {
	s, p := ss.srv, ss.peer
	for {
		ss.mu.Lock()
		o := p.out
		ss.mu.Unlock()
		var err error
		if o != nil {
			err = o.send(ss.conn, sendConfig{
				peerMaxMessage: int(ss.hello.MaxMessageSize),
				ackTimeout:     s.opts.AckTimeout,
				exitWhenIdle:   true,
				linger:         min(inboxLinger, s.opts.HeartbeatInterval/2),
				redelivered:    &s.nRedelivered,
			}, ss.stop)
			if err != nil && !errors.Is(err, errAckTimeout) {
				// The store failed (or fenced this server out): what
				// the client acknowledged cannot be recorded.
				ss.log.Warn("push sender stopped; closing the session", "error", err)
				ss.conn.Close(storeCloseCode(err))
			}
		}
		ss.mu.Lock()
		if err == nil && !ss.ended && p.out != nil && len(p.out.wake) > 0 {
			ss.mu.Unlock()
			continue
		}
		ss.sending = false
		ss.mu.Unlock()
		return
	}
}

// openOutboxLocked creates the session's push outbox if the client has a
// push stream now (the first push may come after the welcome), and
// reports whether it exists. ss.mu must be held.
func (ss *session) openOutboxLocked() bool {
	s, p := ss.srv, ss.peer
	info, err := s.store.OutboxInfo(p.id)
	if err != nil {
		ss.log.Error("loading push outbox failed", "error", err)
		return false
	}
	if info.Stream.IsZero() {
		return false
	}
	p.setOut(s.newPushOutbox(p.id, info))
	p.out.begin(info.Acked, ss.pushWindow())
	return true
}

// pushWindow is the most pushes in flight: the lower of the server's and
// the client's limits.
func (ss *session) pushWindow() int {
	window := ss.srv.opts.MaxInFlight
	if h := ss.hello; h.MaxInFlight > 0 {
		window = min(window, int(h.MaxInFlight))
	}
	return window
}

// end stops the session's workers: the inbox delivers what it has
// (unless the session's context ended) and the sender exits.
func (ss *session) end() {
	s := ss.srv
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if !closing {
		// A graceful shutdown lets delivery finish what it has.
		ss.cancel()
	}
	ss.inbox.close()
	ss.mu.Lock()
	ss.ended = true
	close(ss.stop)
	ss.mu.Unlock()
	ss.wg.Wait()
	if o := ss.peer.out; o != nil { // no sender runs: nothing else touches it
		o.end()
		if err := o.deleteAcked(); err != nil {
			ss.log.Warn("deleting acknowledged pushes failed", "error", err)
		}
	}
}

// write sends frames as one WebSocket message.
func (ss *session) write(frames ...protocol.Frame) error {
	return ss.conn.Write(protocol.Encode(frames...))
}

// message builds the handler's view of d.
func (ss *session) message(d *protocol.Data) *Message {
	return &Message{
		ClientID: ss.hello.ClientID,
		Identity: ss.identity,
		Address:  ss.addr,
		Stream:   d.Stream,
		Seq:      d.Seq,
		ID:       d.ID,
		Headers:  d.Headers,
		Payload:  d.Payload,
		Expires:  expiresTime(d.Expires),
	}
}

// readLoop reads the client's frames: data and skips go to the inbox,
// acks and rejects of pushes to the outbox. It never blocks on the
// handler: a client that exceeds its window is a protocol error.
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
		// Bytes wait for the identity's byte rate before they cost any
		// more (decoding, the handler): until then the connection is
		// not read.
		c := &ss.srv.counters
		if ss.byteRate != nil && !ss.waitRate(ss.byteRate, len(msg), &c.byteRateWaits, &c.byteRateWaited) {
			return ss.conn.Err()
		}
		var batch []protocol.Frame
		data, acked := 0, false
		err = protocol.Decode(msg, func(f protocol.Frame) error {
			switch f := f.(type) {
			case *protocol.Data:
				if f.Stream != ss.hello.Stream {
					return fmt.Errorf("%w: data for stream %s, session is %s", protocol.ErrMalformed, f.Stream, ss.hello.Stream)
				}
				data++
				batch = append(batch, f)
			case *protocol.Skip:
				if f.Stream != ss.hello.Stream {
					return fmt.Errorf("%w: skip for stream %s, session is %s", protocol.ErrMalformed, f.Stream, ss.hello.Stream)
				}
				batch = append(batch, f)
			case *protocol.Ack:
				acked = true
				o, err := ss.outbox()
				if err != nil {
					return err
				}
				return o.onAck(f)
			case *protocol.Reject:
				o, err := ss.outbox()
				if err != nil {
					return err
				}
				return o.onReject(f)
			case *protocol.Heartbeat:
			default:
				return fmt.Errorf("%w: unexpected %s frame from client", protocol.ErrMalformed, f.Type())
			}
			return nil
		})
		if err != nil {
			ss.conn.Close(protocol.CloseProtocolError, "malformed or unexpected frame")
			return err
		}
		if acked {
			ss.kick()
		}
		if len(batch) == 0 {
			continue
		}
		// The window counts data frames, not messages: one message may
		// carry many frames.
		if ss.inbox.pending.Add(int64(data)) > int64(ss.srv.opts.MaxInFlight) {
			ss.conn.Close(protocol.CloseProtocolError, "client exceeded its in-flight window")
			return errors.New("reliable: client exceeded its in-flight window")
		}
		// Messages wait for their identity's rate, and bytes for room in
		// the session's and the server's budgets: until then the
		// connection is not read.
		if data > 0 && ss.rate != nil && !ss.waitRate(ss.rate, data, &c.rateWaits, &c.rateWaited) {
			return ss.conn.Err()
		}
		var n int64
		for _, f := range batch {
			if d, ok := f.(*protocol.Data); ok {
				n += dataBytes(d)
			}
		}
		if !ss.inFlight.acquire(n, ss.conn.Done()) {
			return ss.conn.Err()
		}
		if !ss.srv.buffered.acquire(n, ss.conn.Done()) {
			ss.inFlight.release(n)
			return ss.conn.Err()
		}
		ss.inbox.push(batch)
	}
}

// waitRate takes n tokens (messages or bytes) from one of the
// identity's rate buckets and waits until they are due, or the
// connection ends (false); a wait is counted in waits and waited.
func (ss *session) waitRate(b *rateBucket, n int, waits *atomic.Uint64, waited *atomic.Int64) bool {
	d := b.reserve(time.Now(), n)
	if d <= 0 {
		return true
	}
	waits.Add(1)
	waited.Add(int64(d))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ss.conn.Done():
		return false
	}
}

// outbox returns the session's push outbox; an ack or reject for a push
// stream that does not exist is a protocol error.
func (ss *session) outbox() (*outbox, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if o := ss.peer.out; o != nil {
		return o, nil
	}
	return nil, fmt.Errorf("%w: ack or reject before any push", protocol.ErrMalformed)
}

func expiresTime(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
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
