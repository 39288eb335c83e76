package reliable

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// Message is one delivered message, as the server's handler sees it.
type Message struct {
	// ClientID is the sending client's ID.
	ClientID string
	// Identity is what ServerOptions.Authenticate returned for the
	// connection that carried the message.
	Identity string
	// Address is Address(Identity, ClientID): the key of the client's
	// state on the server, and what to pass to Server.Send to push a
	// reply to it. It equals ClientID without Authenticate, and on a
	// client (a push's Message) it is the client's own ID.
	Address string
	// Stream is the sender's stream ID.
	Stream protocol.StreamID
	// Seq is the message's sequence number within Stream.
	Seq uint64
	// ID is the message ID the sender assigned.
	ID protocol.MessageID
	// Headers are the sender's headers, nil when there are none.
	Headers []protocol.Header
	// Payload is the message body. It stays valid after the handler
	// returns.
	Payload []byte
	// Expires is when the sender said the message stops being worth
	// delivering; zero: never. An expired message never reaches a handler.
	Expires time.Time
}

// Handler processes one message. On a server it is called for each
// client's messages (on a client, for the server's pushes) one at a time,
// in order, by that client's session (each call begins
// after the previous one has returned, though not always on the same
// goroutine); calls for different clients run concurrently. It must not
// block forever: ctx is cancelled when the session ends.
//
// Returning nil acknowledges the message. An error wrapping ErrRejected
// rejects it for good (the sender's receipt reports a *RejectError with the
// error's text). Any other error, or a panic, retries the same message
// later with backoff; later messages of that client wait behind it, until
// MaxAttempts (when set) turns the last failure into a rejection.
type Handler func(ctx context.Context, m *Message) error

// ServerOptions configure a Server. A nil *ServerOptions, and the zero
// value of every field, is the documented default.
type ServerOptions struct {
	// Authenticate runs on the HTTP request before the upgrade and returns
	// the caller's identity. An error answers 401 and no WebSocket (403 if
	// it wraps ErrForbidden). Client IDs are namespaced by identity: the
	// server keeps a client's watermarks and pushes under its Address
	// (identity and client ID), so two identities presenting the same
	// client ID are two clients, and neither can resume or take over the
	// other's. A hello whose client ID contains '/', or whose address
	// would be longer than protocol.MaxClientIDLen, is closed with
	// protocol.ClosePolicy. Nil: every request is accepted with the empty
	// identity, whose addresses are the client IDs themselves.
	Authenticate func(r *http.Request) (identity string, err error)

	// CheckOrigin validates the Origin header of browser clients. Nil:
	// gorilla's default (requests with an Origin header must be same
	// host; requests without one, as from Go clients, pass).
	CheckOrigin func(r *http.Request) bool

	// HeartbeatInterval is how often the server pings. Zero: 5 s.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long past an expected frame the link counts
	// as dead; it also bounds every write. Zero: 5 s.
	HeartbeatTimeout time.Duration
	// HelloTimeout bounds the wait for a client's hello after the upgrade;
	// then the connection is closed with protocol.CloseHelloTimeout.
	// Zero: 10 s.
	HelloTimeout time.Duration

	// MaxMessageSize limits one WebSocket message from a client; a larger
	// one closes the connection with 1009. Zero: 2 MiB.
	MaxMessageSize int64
	// MaxInFlight is the most unacknowledged messages a client may send.
	// Zero: 1024.
	MaxInFlight int
	// AckBatch is the most messages delivered to the handler before their
	// watermark is committed and acknowledged. It bounds the duplicates a
	// server crash can cause per client. Zero: 256.
	AckBatch int
	// Flush, if set, lets a handler buffer its effects (lines in a
	// bufio.Writer, rows in an open database transaction) and make them
	// durable once for many messages. The server calls it in a client's
	// session, never concurrently with that client's handler calls,
	// after the handler and before it commits the watermark of the
	// messages handled since the last Flush (every AckBatch messages,
	// and whenever the client's input pauses), so
	// nothing is acknowledged before Flush has returned nil. An error (or
	// a panic) closes the session with protocol.CloseInternal without an
	// acknowledgement; those messages are handed to the handler again when
	// the client reconnects, so Flush should discard what it failed to
	// make durable. ctx is the session's and may already be done when the
	// session ends. address is the client's Address (Message.Address).
	// Nil: handlers make each message durable before they return.
	Flush func(ctx context.Context, address string) error
	// MaxAttempts, when positive, is how many times the handler is called
	// for one message before its last failure becomes a rejection (code
	// protocol.RejectAttempts, the error's text as reason), so one bad
	// message cannot block its client for ever. Zero: retry without limit.
	MaxAttempts int
	// AckTimeout is how long pushes in flight may wait for any
	// acknowledgement progress on a live connection before the server
	// closes it (the client reconnects and the pushes are sent again).
	// Zero: 30 s.
	AckTimeout time.Duration
	// MaxInFlightBytes limits the bytes one client's session has read and
	// not yet handled. Past it the server stops reading that connection
	// until the handler catches up (TCP slows the client down); memory
	// per session stays bounded whatever the client sends. It must be at
	// least MaxMessageSize. Zero: 16 MiB.
	MaxInFlightBytes int64
	// MaxBufferedBytes limits those bytes over all sessions together, in
	// the same way. Zero: 256 MiB.
	MaxBufferedBytes int64
	// MaxConnections limits the connections being served, counted from
	// the HTTP request (before the upgrade and the hello) to the end of
	// the session; beyond it requests are answered 503 with Retry-After,
	// which clients take as a hint. Zero: nine tenths of the process's
	// open-file limit less 64 (10,000 where the limit is unknown), so the
	// server refuses clients before it runs out of file descriptors.
	// Negative: no limit.
	MaxConnections int
	// MaxConnectionsPerIP is one remote IP's share of MaxConnections, so
	// one peer cannot take every slot. Loopback addresses (a local
	// reverse proxy, tests) are not counted. Zero: a quarter of
	// MaxConnections. Negative: no share.
	MaxConnectionsPerIP int
	// MaxConnectionsPerIdentity is one authenticated identity's share of
	// MaxConnections (only with Authenticate). Zero: a quarter of
	// MaxConnections. Negative: no share.
	MaxConnectionsPerIdentity int
	// MaxMessageRate, when positive, limits the messages (data frames)
	// all sessions of one identity together hand on to the handler, per
	// second, in bursts of MessageBurst: a token bucket per identity.
	// Without Authenticate every client is the empty identity and shares
	// one bucket. A session whose identity has used up its tokens stops
	// reading its connection until they would be available again (TCP
	// slows the client down), so an honest client is slowed, never
	// refused, and nothing is lost. An identity's bucket outlives its
	// sessions until it has refilled, so reconnecting earns no fresh
	// burst. Zero: no limit. Negative is an error.
	MaxMessageRate float64
	// MessageBurst is the size of an identity's bucket: the messages it
	// may send at once after a pause. Zero: MaxMessageRate, at least 1.
	MessageBurst int
	// MaxByteRate limits the bytes (of WebSocket messages: data, acks,
	// everything but control frames) all sessions of one identity
	// together may send the server, per second, in bursts of ByteBurst:
	// a token bucket per identity, as MaxMessageRate's. A session whose
	// identity has used up its bytes stops reading its connection until
	// they would be available again (TCP slows the client down); nothing
	// is refused or lost. It bounds the CPU (reads, decoding, copies)
	// one identity can make the server spend, which a flood of large
	// messages otherwise takes from every other client. Zero: 16 MiB/s
	// with Authenticate; without it every client is the empty identity,
	// whose one bucket would cap the whole server, so zero means no
	// limit (a positive value then limits all clients together).
	// Negative: no limit.
	MaxByteRate float64
	// ByteBurst is the size of an identity's MaxByteRate bucket in
	// bytes. Zero: one second of MaxByteRate, at least MaxMessageSize.
	ByteBurst int64
	// MaxHandshakeRatePerIP limits the connection attempts (HTTP
	// requests to upgrade) one remote IP may make per second, in bursts
	// of one second's worth. Beyond it a request is answered 429 Too
	// Many Requests with Retry-After (which clients wait at least),
	// before authentication and the upgrade, so a reconnect loop costs
	// the server little. A refused attempt takes no token. Loopback
	// addresses (a local reverse proxy, tests) are not counted. Zero:
	// 50. Negative: no limit.
	MaxHandshakeRatePerIP float64
	// MaxHandshakeRatePerIdentity limits the connection attempts of one
	// authenticated identity per second, in the same way (429 after
	// Authenticate, before the upgrade; only with Authenticate). Zero:
	// 50. Negative: no limit.
	MaxHandshakeRatePerIdentity float64
	// MaxSessions limits concurrent sessions; beyond it new connections
	// are closed with protocol.CloseTryAgainLater and a retry hint.
	// Zero: no limit.
	MaxSessions int

	// NoSync skips fsync when watermarks and pushes are committed: a
	// crash of the server process loses nothing, a power cut may lose
	// pushes and redeliver messages.
	NoSync bool
	// OutboxMaxMessages limits the pushes queued for one client. Zero:
	// 10,000. Negative: no limit.
	OutboxMaxMessages int
	// OutboxMaxBytes limits their bytes. Zero: 64 MiB. Negative: no limit.
	OutboxMaxBytes int64
	// OutboxEvict makes a push to a client whose outbox is full evict that
	// client's oldest pushes (settled as evicted) instead of failing with
	// ErrQueueFull. Zero: fail.
	OutboxEvict bool
	// Store replaces the bbolt file at the path given to NewServer (which
	// is then ignored); the Outbox and NoSync settings above must then be
	// zero, since they belong to the store. The server does not close a
	// store it was given.
	Store queue.ServerStore

	// OnSettled, when set, is called for every push when it settles:
	// acknowledged, rejected, expired or evicted. It is driven from the
	// store's settlement records, so it is called at least once for every
	// push, including pushes that settled while the process was down or
	// whose report a crash cut short (those may be reported twice). It is
	// called from one goroutine, in settlement order per client, and must
	// not block for long. A server without OnSettled writes its
	// settlement records already reported (queue.Options.SettleReported,
	// which saves two writes per push), so a later server with OnSettled
	// on the same store is not called for the pushes that settled then.
	OnSettled func(Settlement)
	// StatusRetention is how long Status remembers a push after it
	// settled. Zero: 24 h. Negative: until OnSettled has been called.
	StatusRetention time.Duration
	// MaxStoreBytes is a quota on the live data of the server's store
	// file: its pages in use less the free pages later writes reuse (see
	// queue.Stats.DataBytes). The server never stores the messages
	// clients send (they go to the handler); the store grows with pushes,
	// their settlement records and per-client state. At or over the
	// quota, pushes fail with ErrStoreFull (HTTP 507 in serve's push
	// API) and a hello from a client without pushes waiting is closed
	// with protocol.CloseTryAgainLater and a retry hint; clients with
	// pushes waiting still connect, so the store drains, and once acked
	// pushes are deleted data is accepted again. It is checked before
	// each push call and hello, so concurrent calls may together exceed
	// it by what they write. It is enforced for the bbolt store NewServer
	// opens, and for a Store with a Stats() queue.Stats method reporting
	// DataBytes, such as the PostgreSQL store (store/postgres), where it
	// bounds the whole database shared by a fleet. Zero: 1 GiB.
	// Negative: no quota.
	MaxStoreBytes int64
	// IdleExpiry is how long a client's watermarks and binding outlive
	// its last session on disk. Zero: 30 days. Negative: never. A client
	// whose pushes wait is never expired.
	IdleExpiry time.Duration

	// Observer, when set, receives handler and commit timings for
	// histograms (see the prometheus and otel adapter modules). Nil: none.
	Observer Observer

	// Logger receives session events. Nil: discard.
	Logger *slog.Logger
}

func (o *ServerOptions) withDefaults(path string) (ServerOptions, error) {
	var s ServerOptions
	if o != nil {
		s = *o
	}
	if s.Store == nil && path == "" {
		return s, errors.New("reliable: store path is empty and ServerOptions.Store is nil")
	}
	if err := fillDefaults("ServerOptions",
		field[time.Duration]{"HeartbeatInterval", &s.HeartbeatInterval, 5 * time.Second},
		field[time.Duration]{"HeartbeatTimeout", &s.HeartbeatTimeout, 5 * time.Second},
		field[time.Duration]{"HelloTimeout", &s.HelloTimeout, 10 * time.Second},
		field[time.Duration]{"AckTimeout", &s.AckTimeout, 30 * time.Second},
	); err != nil {
		return s, err
	}
	if err := fillDefaults("ServerOptions",
		field[int]{"MaxInFlight", &s.MaxInFlight, 1024},
		field[int]{"AckBatch", &s.AckBatch, 256},
		field[int]{"MaxSessions", &s.MaxSessions, 0},
		field[int]{"MaxAttempts", &s.MaxAttempts, 0},
	); err != nil {
		return s, err
	}
	if err := fillDefaults("ServerOptions",
		field[int64]{"MaxMessageSize", &s.MaxMessageSize, 2 << 20},
		field[int64]{"MaxInFlightBytes", &s.MaxInFlightBytes, 16 << 20},
		field[int64]{"MaxBufferedBytes", &s.MaxBufferedBytes, 256 << 20},
		field[int64]{"MaxStoreBytes", &s.MaxStoreBytes, 1 << 30},
	); err != nil {
		return s, err
	}
	if s.MaxMessageRate < 0 || s.MaxMessageRate != s.MaxMessageRate {
		return s, fmt.Errorf("reliable: ServerOptions.MaxMessageRate is negative or NaN (%v)", s.MaxMessageRate)
	}
	if s.MessageBurst < 0 {
		return s, fmt.Errorf("reliable: ServerOptions.MessageBurst is negative (%d)", s.MessageBurst)
	}
	if s.MessageBurst == 0 && s.MaxMessageRate > 0 {
		s.MessageBurst = max(1, int(min(s.MaxMessageRate, 1<<30)))
	}
	if err := s.rateDefaults(); err != nil {
		return s, err
	}
	if s.MaxInFlightBytes < s.MaxMessageSize {
		return s, fmt.Errorf("reliable: ServerOptions.MaxInFlightBytes (%d) is below MaxMessageSize (%d)", s.MaxInFlightBytes, s.MaxMessageSize)
	}
	if s.MaxBufferedBytes < s.MaxInFlightBytes {
		return s, fmt.Errorf("reliable: ServerOptions.MaxBufferedBytes (%d) is below MaxInFlightBytes (%d)", s.MaxBufferedBytes, s.MaxInFlightBytes)
	}
	if s.MaxConnections == 0 {
		s.MaxConnections = defaultMaxConnections()
	}
	for _, share := range []*int{&s.MaxConnectionsPerIP, &s.MaxConnectionsPerIdentity} {
		if *share == 0 && s.MaxConnections > 0 {
			*share = max(1, s.MaxConnections/4)
		}
	}
	if s.Store != nil {
		switch {
		case s.NoSync:
			return s, errors.New("reliable: ServerOptions.NoSync is set with ServerOptions.Store; set it on the store")
		case s.OutboxMaxMessages != 0 || s.OutboxMaxBytes != 0 || s.OutboxEvict:
			return s, errors.New("reliable: ServerOptions.Outbox limits are set with ServerOptions.Store; set them on the store")
		case s.StatusRetention != 0:
			return s, errors.New("reliable: ServerOptions.StatusRetention is set with ServerOptions.Store; set it on the store")
		case s.IdleExpiry != 0:
			return s, errors.New("reliable: ServerOptions.IdleExpiry is set with ServerOptions.Store; set it on the store")
		}
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Server is an http.Handler that accepts wsreliable clients and hands each
// of their messages to a Handler exactly once per successful handling, in
// order. Mount it on any mux; it must not be wrapped by middleware that
// buffers responses (the connection is hijacked).
//
// A Server is safe for concurrent use. http.Server.Shutdown does not see
// hijacked connections: call Server.Shutdown (graceful) or Server.Close.
type Server struct {
	opts     ServerOptions
	store    queue.ServerStore
	ownStore bool
	handler  Handler
	log      *slog.Logger
	upgrader websocket.Upgrader

	ctx    context.Context // cancelled by Close: handler contexts end
	cancel context.CancelFunc

	mu       sync.Mutex
	peers    map[string]*peer
	sessions map[*session]struct{}
	closing  bool
	wg       sync.WaitGroup
	once     sync.Once
	closeErr error

	rates          map[rateKey]*rateBucket // rate limits' buckets, while sessions hold them or they owe tokens; guarded by mu
	ratesSweepAt   int                     // len(rates) at which unregister sweeps refilled buckets out; guarded by mu
	lastSeen       map[string]time.Time    // client ID → end of its last session; guarded by mu, bounded by lastSeenMax
	refusedAt      map[string]time.Time    // guarded by mu
	refusedDropped map[string]int
	refused        map[string]uint64

	drainOnce sync.Once
	drainCh   chan struct{}

	receipts     receipts
	counters     serverCounters
	reporter     *reporter
	fleet        *fleet      // nil unless the store is shared
	buffered     *budget     // MaxBufferedBytes over all sessions
	conns        *connLimits // MaxConnections and its shares
	nRedelivered atomic.Uint64
}

// NewServer opens (or creates) the store at path, which keeps each
// client's watermark and identity binding, and returns a server that hands
// messages to handler.
func NewServer(path string, handler Handler, opts *ServerOptions) (*Server, error) {
	if handler == nil {
		return nil, errors.New("reliable: nil handler")
	}
	o, err := opts.withDefaults(path)
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:           o,
		handler:        handler,
		log:            o.Logger,
		peers:          make(map[string]*peer),
		refusedAt:      make(map[string]time.Time),
		lastSeen:       make(map[string]time.Time),
		refusedDropped: make(map[string]int),
		refused:        make(map[string]uint64),
		sessions:       make(map[*session]struct{}),
		rates:          make(map[rateKey]*rateBucket),
	}
	s.upgrader = websocket.Upgrader{
		Subprotocols: []string{protocol.Subprotocol},
		CheckOrigin:  o.CheckOrigin,
		// Zero sizes reuse the HTTP server's buffers from the hijack, and
		// the pool lends write buffers only while a write is under way:
		// idle sessions then hold no buffers of their own.
		WriteBufferPool: &sync.Pool{},
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			http.Error(w, "wsreliable: "+reason.Error(), status)
		},
	}
	s.store = o.Store
	if s.store == nil {
		b, err := queue.Open(path, &queue.Options{
			NoSync:            o.NoSync,
			OutboxMaxMessages: o.OutboxMaxMessages,
			OutboxMaxBytes:    o.OutboxMaxBytes,
			OutboxEvict:       o.OutboxEvict,
			StatusRetention:   o.StatusRetention,
			SettleReported:    o.OnSettled == nil,
			IdleExpiry:        o.IdleExpiry,
			Logger:            o.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("reliable: open server store: %w", err)
		}
		s.store, s.ownStore = b, true
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.receipts.init()
	s.buffered = newBudget(o.MaxBufferedBytes)
	perIdentity := o.MaxConnectionsPerIdentity
	if o.Authenticate == nil {
		perIdentity = 0 // everyone is the empty identity
	}
	s.conns = newConnLimits(o.MaxConnections, o.MaxConnectionsPerIP, perIdentity)
	// Committed settlements also settle the receipts someone watches: a
	// receipt registered after its in-process settlement, but before the
	// store recorded it, is settled here.
	s.reporter = newReporter(s.store, func(st Settlement) {
		s.receipts.settle(st.ID, st.Err())
		if o.OnSettled != nil {
			o.OnSettled(st)
		}
	}, "", s.log)
	s.fleet = newFleet(s)
	return s, nil
}

// ServeHTTP authenticates the request, upgrades it and starts the session,
// which runs on a goroutine of its own until the connection ends; ServeHTTP
// returns once the upgrade is done. Shutdown and Close wait for sessions.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ip := remoteIP(r)
	shareIP := ip
	if addr := net.ParseIP(ip); addr != nil && addr.IsLoopback() {
		shareIP = "" // loopback peers share no per-IP slot or rate
	}
	if rate := s.opts.MaxHandshakeRatePerIP; rate > 0 && shareIP != "" {
		if d := s.takeHandshake(rateKey{rateHandshakesIP, shareIP}, rate); d > 0 {
			s.refuseHandshake(w, limitHandshakesIP, ip, d)
			return
		}
	}
	identity := ""
	if s.opts.Authenticate != nil {
		id, err := s.opts.Authenticate(r)
		if err != nil {
			status := http.StatusUnauthorized
			if errors.Is(err, ErrForbidden) {
				status = http.StatusForbidden
			}
			s.log.Info("authentication failed", "remote", r.RemoteAddr, "status", status)
			http.Error(w, http.StatusText(status), status)
			return
		}
		identity = id
		if rate := s.opts.MaxHandshakeRatePerIdentity; rate > 0 {
			if d := s.takeHandshake(rateKey{rateHandshakesIdentity, identity}, rate); d > 0 {
				s.refuseHandshake(w, limitHandshakesIdentity, ip, d)
				return
			}
		}
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "wsreliable: server shutting down", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()

	if limit := s.conns.take(shareIP, identity); limit != "" {
		s.wg.Done()
		s.refusedLog(limit, ip)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "wsreliable: too many "+limit+"; try again later", http.StatusServiceUnavailable)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.conns.put(shareIP, identity)
		s.wg.Done()
		return // the upgrader answered with an HTTP error
	}
	// The session runs on a goroutine of its own, and ServeHTTP returns:
	// net/http's connection goroutine then ends, and with it the request,
	// its stack and the connection's write buffer, which an idle session
	// has no use for (writes borrow from the upgrader's pool). The session
	// holds the count on s.wg that Shutdown and Close wait for.
	go func() {
		defer s.wg.Done()
		defer s.conns.put(shareIP, identity)
		if ws.Subprotocol() != protocol.Subprotocol {
			closeRaw(ws, protocol.CloseUnsupported, "subprotocol "+protocol.Subprotocol+" required", s.opts.HeartbeatTimeout)
			return
		}
		ws.SetReadLimit(s.opts.MaxMessageSize)
		sess := &session{srv: s, ws: ws, identity: identity, log: s.log}
		sess.serve()
	}()
}

// Shutdown stops accepting connections, closes every session with
// protocol.CloseGoingAway (clients reconnect, to this server's successor),
// waits for in-progress handler calls and commits, and closes the store if
// the server opened it. If ctx ends first, Shutdown cancels the handlers'
// contexts and returns ctx's error at once, as http.Server.Shutdown does;
// the store is then closed when the last session has ended, which Close
// waits for.
func (s *Server) Shutdown(ctx context.Context) error {
	s.goAwayAll("server shutting down")
	select {
	case <-s.drained():
	case <-ctx.Done():
		s.cancel()
		go func() {
			<-s.drained()
			_ = s.finish()
		}()
		return ctx.Err()
	}
	return s.finish()
}

// Close closes every session at once (clients reconnect), cancels the
// handlers' contexts, waits for the session goroutines and closes the store
// if the server opened it. Close is idempotent.
func (s *Server) Close() error {
	s.goAwayAll("server closing")
	s.cancel()
	<-s.drained()
	return s.finish()
}

// goAwayAll refuses new sessions and closes the open ones with
// protocol.CloseGoingAway.
func (s *Server) goAwayAll(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	for sess := range s.sessions {
		sess.goAway(protocol.CloseGoingAway, reason)
	}
}

// drained returns a channel closed once every session goroutine has
// ended (after goAwayAll, no new one starts).
func (s *Server) drained() <-chan struct{} {
	s.drainOnce.Do(func() {
		s.drainCh = make(chan struct{})
		go func() {
			s.wg.Wait()
			close(s.drainCh)
		}()
	})
	return s.drainCh
}

func (s *Server) finish() error {
	s.once.Do(func() {
		s.cancel()
		s.fleet.stop()
		s.receipts.settleAll(ErrClosed)
		s.reporter.stop()
		if s.ownStore {
			s.closeErr = s.store.Close()
		}
		s.log.Info("server closed")
	})
	return s.closeErr
}

// ServerStats is a snapshot of a server's counters. Counts are
// cumulative since NewServer unless they say otherwise.
type ServerStats struct {
	Sessions      int    // open sessions, now
	Clients       int    // clients with a session (or one ending), now
	Connects      uint64 // sessions started
	InFlightBytes int64  // bytes read from clients and not yet handled, now (MaxBufferedBytes bounds it)

	// Disconnects counts ended sessions by close code (1006: the link
	// broke without a close frame).
	Disconnects map[protocol.CloseCode]uint64

	Received      uint64 // client messages handled and acknowledged
	ReceivedBytes uint64 // their payload bytes
	Rejected      uint64 // client messages rejected (by the handler or MaxAttempts)
	Expired       uint64 // client messages that arrived past their expiry
	Duplicates    uint64 // client messages dropped as already delivered

	Pushed       uint64 // pushes committed to client outboxes
	PushedBytes  uint64 // their payload bytes
	PushAcked    uint64 // pushes acknowledged by their client
	PushRejected uint64 // pushes rejected (by the client's handler, too large)
	PushExpired  uint64 // pushes expired before delivery
	PushEvicted  uint64 // pushes evicted from a full outbox
	Redelivered  uint64 // pushes sent again after a reconnect

	// Refused counts connections refused by a limit, by limit:
	// "connections", "connections per IP", "connections per identity",
	// "store quota" (hellos refused over MaxStoreBytes), "client
	// address" (hellos refused for a '/' in the client ID or an address
	// over protocol.MaxClientIDLen), "handshakes per IP" and
	// "handshakes per identity" (requests answered 429 by
	// MaxHandshakeRatePerIP and MaxHandshakeRatePerIdentity).
	Refused map[string]uint64

	// StoreFull counts pushes (calls) and hellos refused because the
	// store was over MaxStoreBytes.
	StoreFull uint64
	// StoreBytes is the live data of the store as MaxStoreBytes counts
	// it, now (0 for a store that does not report it).
	StoreBytes int64
	// RateWaits counts the times a session stopped reading because its
	// identity had used up MaxMessageRate, and RateWaited the time
	// sessions spent stopped so.
	RateWaits  uint64
	RateWaited time.Duration
	// ByteRateWaits counts the times a session stopped reading because
	// its identity had used up MaxByteRate, and ByteRateWaited the time
	// sessions spent stopped so.
	ByteRateWaits  uint64
	ByteRateWaited time.Duration
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &s.counters
	st := ServerStats{
		Sessions: len(s.sessions), Clients: len(s.peers), Connects: c.sessions.Load(),
		InFlightBytes: s.buffered.inUse(),
		Received:      c.received.Load(), ReceivedBytes: c.receivedBytes.Load(),
		Rejected: c.rejected.Load(), Expired: c.expired.Load(), Duplicates: c.duplicates.Load(),
		Pushed: c.pushed.Load(), PushedBytes: c.pushedBytes.Load(),
		PushAcked: c.pushAcked.Load(), PushRejected: c.pushRejected.Load(),
		PushExpired: c.pushExpired.Load(), PushEvicted: c.pushEvicted.Load(),
		Redelivered: s.nRedelivered.Load(),
		StoreFull:   c.storeFull.Load(), StoreBytes: s.storeBytes(),
		RateWaits: c.rateWaits.Load(), RateWaited: time.Duration(c.rateWaited.Load()),
		ByteRateWaits: c.byteRateWaits.Load(), ByteRateWaited: time.Duration(c.byteRateWaited.Load()),
		Refused:     make(map[string]uint64, len(s.refused)),
		Disconnects: make(map[protocol.CloseCode]uint64),
	}
	for k, v := range s.refused {
		st.Refused[k] = v
	}
	c.mu.Lock()
	for k, v := range c.closes {
		st.Disconnects[k] = v
	}
	c.mu.Unlock()
	return st
}

// refusedLog logs a refused connection, at most once a second for each
// limit, so a flood cannot flood the log too.
func (s *Server) refusedLog(limit, ip string) {
	now := time.Now()
	s.mu.Lock()
	s.refused[limit]++
	last := s.refusedAt[limit]
	if now.Sub(last) < time.Second {
		s.refusedDropped[limit]++
		s.mu.Unlock()
		return
	}
	s.refusedAt[limit] = now
	dropped := s.refusedDropped[limit]
	s.refusedDropped[limit] = 0
	s.mu.Unlock()
	s.log.Warn("connection refused", "limit", limit, "remote", ip, "refused_since_last_log", dropped)
}

// unregister removes a session that has ended, and its peer with its last
// session.
func (s *Server) unregister(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, ss)
	p := ss.peer
	if p.current == ss {
		p.current = nil
	}
	if p.refs--; p.refs == 0 {
		delete(s.peers, p.id)
		s.fleet.release(p.id)
	}
	for _, b := range []*rateBucket{ss.rate, ss.byteRate} {
		if b != nil {
			b.refs--
		}
	}
	s.sweepRatesLocked(time.Now())
	if len(s.lastSeen) >= lastSeenMax {
		clear(s.lastSeen) // bounded memory: last-seen times are a convenience
	}
	s.lastSeen[p.id] = time.Now()
}

// sweepRatesLocked forgets the buckets no session holds once they have
// refilled: until then a reconnect must not hand an identity (or an IP)
// a fresh burst. It sweeps when the map has doubled since the last
// sweep, so the buckets kept are at most twice those held by sessions or
// not yet refilled, plus 64. s.mu must be held.
func (s *Server) sweepRatesLocked(now time.Time) {
	if len(s.rates) < s.ratesSweepAt {
		return
	}
	for id, b := range s.rates {
		if b.refs == 0 && b.refilled(now) {
			delete(s.rates, id)
		}
	}
	s.ratesSweepAt = 2*len(s.rates) + 64
}

// lastSeenMax bounds the last-seen times a server keeps in memory.
const lastSeenMax = 100_000
