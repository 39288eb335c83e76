package reliable

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsreliable/wsreliable/internal/wsconn"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// State is a client's connection state.
type State int32

// Client states, in the order a healthy client passes through them.
const (
	StateConnecting   State = iota + 1 // dialling or handshaking
	StateConnected                     // session established, sending
	StateDisconnected                  // waiting to reconnect (backoff)
	StateStopped                       // gave up: see Client.Err
	StateClosed                        // Close was called
)

// String returns the state's name.
func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateStopped:
		return "stopped"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// ClientOptions configure a Client. A nil *ClientOptions, and the zero
// value of every field, is the documented default.
type ClientOptions struct {
	// ClientID names this client to the server. Empty: the ID generated
	// once when the store file was created and kept in it.
	ClientID string

	// FallbackURLs are more servers sharing one store (a fleet, see
	// queue.Owner), as ws:// or wss:// URLs. The client dials the URL
	// given to NewClient first and moves to the next one, round robin,
	// after each failed dial or lost connection, so it resumes on another
	// server when one dies. Nil: the one URL.
	FallbackURLs []string

	// Header, when set, is called before every dial and its headers are
	// sent with the upgrade request, so tokens can be refreshed. An error
	// aborts that dial attempt (the client retries with backoff).
	Header func(ctx context.Context) (http.Header, error)

	// TLSConfig is used for wss:// URLs. Nil: Go's defaults.
	TLSConfig *tls.Config

	// HeartbeatInterval is how often the client pings. Zero: what the
	// server's welcome announces (its ServerOptions.HeartbeatInterval, so
	// an operator tunes every client's heartbeat from the server, as MQTT
	// 5's server keep-alive does), or 5 s if it announces none usable.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long past an expected frame the link counts
	// as dead; it also bounds every write. A half-open link is detected
	// within HeartbeatInterval + HeartbeatTimeout. Zero: the server's,
	// as for HeartbeatInterval, or 5 s. Before the welcome (dial,
	// handshake) the 5 s default applies.
	HeartbeatTimeout time.Duration
	// HandshakeTimeout bounds the dial, the upgrade and the
	// hello/welcome exchange. Zero: 10 s.
	HandshakeTimeout time.Duration

	// BackoffMin is the first reconnect delay ceiling. Zero: 100 ms.
	BackoffMin time.Duration
	// BackoffMax caps the reconnect delay. Zero: 30 s.
	BackoffMax time.Duration
	// HealthyAfter is how long a connection must last before the backoff
	// starts again from BackoffMin. Zero: 10 s.
	HealthyAfter time.Duration

	// AckTimeout is how long sent messages may wait for any
	// acknowledgement progress on a live connection before the client
	// reconnects and replays them (the server repeats its ack while idle,
	// so this only fires when a message was lost without the link
	// failing, or a handler runs longer than this). Zero: 30 s.
	AckTimeout time.Duration

	// MaxInFlight limits the messages sent and not yet acknowledged.
	// Zero: 1024. The server's limit, if lower, wins.
	MaxInFlight int
	// MaxMessageSize limits the payload and header bytes of one message.
	// Zero: 1 MiB.
	MaxMessageSize int

	// NoSync skips fsync when messages are queued: a message whose Send
	// returned survives a crash of this process but not a power cut.
	// Zero: fsync every group commit.
	NoSync bool
	// MaxQueued limits the messages queued and unacknowledged. Zero:
	// 1,000,000.
	MaxQueued int
	// MaxQueuedBytes limits their bytes. Zero: 1 GiB.
	MaxQueuedBytes int64
	// DropOldest makes Send evict the oldest queued messages when the
	// queue is at a limit, instead of waiting or failing: an agent with a
	// disk budget would rather lose its oldest reading than stop
	// measuring. Each evicted message settles as evicted (ErrEvicted;
	// OnSettled reports it); one already on its way to the server may
	// still be delivered. Zero: wait (or fail with FailWhenFull).
	DropOldest bool
	// FailWhenFull makes Send fail at once with ErrQueueFull when the
	// queue is at a limit. Zero: Send waits for space until its context
	// ends.
	FailWhenFull bool

	// Store replaces the bbolt file at the path given to NewClient (which
	// is then ignored); NoSync, MaxQueued, MaxQueuedBytes and FailWhenFull
	// must then be zero, since they belong to the store. The client does
	// not close a store it was given.
	Store queue.Store

	// Handler, when set, receives the server's pushes with the server
	// handler's contract: called one at a time, in order, once per
	// successful handling; nil acknowledges, an error wrapping ErrRejected
	// rejects, another error retries. The client keeps its watermark for
	// the server's stream in its store, so a restart does not deliver
	// again what was acknowledged. Nil: the client does not take pushes
	// (they stay queued on the server, which closes the connection after
	// its AckTimeout and tries again on the next one).
	Handler Handler
	// Flush is ServerOptions.Flush for the client's Handler: called before
	// each watermark commit, with the client's ID. Nil: none.
	Flush func(ctx context.Context, clientID string) error
	// AckBatch is the most pushes handled before their watermark is
	// committed and acknowledged; it bounds the pushes a crash of this
	// process can hand to the Handler again. Zero: 256.
	AckBatch int
	// MaxAttempts, when positive, turns a push's last failed handling into
	// a rejection. Zero: retry without limit.
	MaxAttempts int

	// OnSettled, when set, is called for each message this client sent
	// when it settles (acknowledged, rejected, expired). It is driven from
	// settlement records in the client's store, so it is called at least
	// once for every message, including those queued by an earlier run of
	// the process (a message whose report a crash cut short may be
	// reported twice). It is called from one goroutine, in order, and must
	// not block for long. A store given in Store must be opened with
	// queue.Options.TrackSettled for it to be called.
	OnSettled func(Settlement)

	// OnStateChange, when set, is called on every state change with the
	// new state and the error that caused it, if any. It is called from
	// the client's connection goroutine and must not block.
	OnStateChange func(State, error)

	// Logger receives connection state changes. Nil: discard.
	Logger *slog.Logger
}

func (o *ClientOptions) withDefaults(rawURL, path string) (ClientOptions, error) {
	var c ClientOptions
	if o != nil {
		c = *o
	}
	for _, raw := range append([]string{rawURL}, c.FallbackURLs...) {
		u, err := url.Parse(raw)
		if err != nil {
			return c, fmt.Errorf("reliable: URL: %w", err)
		}
		if u.Scheme != "ws" && u.Scheme != "wss" {
			return c, fmt.Errorf("reliable: URL %q: scheme must be ws or wss", raw)
		}
	}
	if c.Store == nil && path == "" {
		return c, errors.New("reliable: store path is empty and ClientOptions.Store is nil")
	}
	if err := fillDefaults("ClientOptions",
		field[time.Duration]{"HeartbeatInterval", &c.HeartbeatInterval, 5 * time.Second},
		field[time.Duration]{"HeartbeatTimeout", &c.HeartbeatTimeout, 5 * time.Second},
		field[time.Duration]{"HandshakeTimeout", &c.HandshakeTimeout, 10 * time.Second},
		field[time.Duration]{"BackoffMin", &c.BackoffMin, 100 * time.Millisecond},
		field[time.Duration]{"BackoffMax", &c.BackoffMax, 30 * time.Second},
		field[time.Duration]{"HealthyAfter", &c.HealthyAfter, 10 * time.Second},
		field[time.Duration]{"AckTimeout", &c.AckTimeout, 30 * time.Second},
	); err != nil {
		return c, err
	}
	if err := fillDefaults("ClientOptions",
		field[int]{"MaxInFlight", &c.MaxInFlight, 1024},
		field[int]{"MaxMessageSize", &c.MaxMessageSize, 1 << 20},
		field[int]{"AckBatch", &c.AckBatch, 256},
		field[int]{"MaxAttempts", &c.MaxAttempts, 0},
		field[int]{"MaxQueued", &c.MaxQueued, 0},
	); err != nil {
		return c, err
	}
	if c.MaxQueuedBytes < 0 {
		return c, fmt.Errorf("reliable: ClientOptions.MaxQueuedBytes is negative (%d)", c.MaxQueuedBytes)
	}
	if c.DropOldest && c.FailWhenFull {
		return c, errors.New("reliable: ClientOptions.DropOldest and FailWhenFull are both set; choose one policy")
	}
	if c.Store != nil {
		for _, f := range []struct {
			name string
			set  bool
		}{{"NoSync", c.NoSync}, {"MaxQueued", c.MaxQueued != 0}, {"MaxQueuedBytes", c.MaxQueuedBytes != 0}, {"FailWhenFull", c.FailWhenFull}, {"DropOldest", c.DropOldest}} {
			if f.set {
				return c, fmt.Errorf("reliable: ClientOptions.%s is set with ClientOptions.Store; set it on the store", f.name)
			}
		}
	}
	if c.BackoffMax < c.BackoffMin {
		return c, fmt.Errorf("reliable: ClientOptions.BackoffMax (%v) is below BackoffMin (%v)", c.BackoffMax, c.BackoffMin)
	}
	if len(c.ClientID) > protocol.MaxClientIDLen {
		return c, fmt.Errorf("reliable: ClientOptions.ClientID is longer than %d bytes", protocol.MaxClientIDLen)
	}
	if strings.Contains(c.ClientID, "/") {
		return c, errors.New("reliable: ClientOptions.ClientID contains '/', which servers refuse (it separates identity and client ID in an address)")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Client sends messages to a Server and guarantees each one arrives once,
// in order, across dropped connections and restarts of either side. Every
// message is kept in the client's store until the server acknowledges it.
// With ClientOptions.Handler it also receives the server's pushes, with
// the same guarantee in that direction.
//
// A Client is safe for concurrent use. It owns one connection goroutine,
// and per connection a reader and, while pushes arrive, a delivery
// goroutine; Close waits for all of them.
type Client struct {
	ownHeartbeat [2]bool  // HeartbeatInterval, HeartbeatTimeout set in the options
	urls         []string // the server URLs, tried round robin
	urlIdx       int      // the one to dial next; owned by the connection goroutine
	opts         ClientOptions
	store        queue.Store
	ownStore     bool
	stream       protocol.StreamID
	clientID     string
	log          *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	out      *outbox
	receipts receipts
	reporter *reporter   // nil without OnSettled
	in       streamState // the server's stream to us; owned by the delivery worker

	mu    sync.Mutex
	state State
	err   error // why the client stopped

	nRejected    atomic.Uint64
	nRedelivered atomic.Uint64
	nConnects    atomic.Uint64
	nReceived    atomic.Uint64
	rtt          atomic.Int64
	conn         atomic.Pointer[wsconn.Conn] // the current session's, nil between sessions
}

// NewClient opens (or creates) the store at path and starts connecting to
// the server at rawURL (ws:// or wss://) in the background. Messages left
// unacknowledged by an earlier run are sent first. It returns an error for
// invalid options or a store that cannot be opened: the file is in use by
// another process (queue.ErrLocked), corrupt (queue.ErrCorrupt) or written
// by a newer version (queue.ErrVersion).
func NewClient(rawURL, path string, opts *ClientOptions) (*Client, error) {
	o, err := opts.withDefaults(rawURL, path)
	if err != nil {
		return nil, err
	}
	c := &Client{
		ownHeartbeat: [2]bool{opts != nil && opts.HeartbeatInterval != 0, opts != nil && opts.HeartbeatTimeout != 0},
		urls:         append([]string{rawURL}, o.FallbackURLs...),
		opts:         o,
		log:          o.Logger,
		state:        StateConnecting,
	}
	c.receipts.init()
	c.store = o.Store
	if c.store == nil {
		b, err := queue.Open(path, &queue.Options{
			NoSync:       o.NoSync,
			MaxMessages:  o.MaxQueued,
			MaxBytes:     o.MaxQueuedBytes,
			FailWhenFull: o.FailWhenFull || o.DropOldest, // DropOldest evicts on ErrFull
			Logger:       o.Logger,
			// Settlement records cost a write per ack: only for OnSettled,
			// and deleted once reported.
			TrackSettled:    o.OnSettled != nil,
			StatusRetention: -1,
			// The client's watermark of the server's stream is its only
			// peer state: it never expires.
			IdleExpiry: -1,
		})
		if err != nil {
			return nil, fmt.Errorf("reliable: open client store: %w", sendError(err))
		}
		c.store, c.ownStore = b, true
	}
	meta := c.store.Meta()
	c.stream = meta.Stream
	c.clientID = o.ClientID
	if c.clientID == "" {
		c.clientID = meta.ClientID
	}
	c.out = newOutbox(c.stream, c.store, c.store.Stats().Acked, c.settled, c.log)
	c.out.settleOnAck = true
	if o.OnSettled != nil {
		c.reporter = newReporter(c.store, o.OnSettled, c.clientID, c.log)
		c.out.onDeleted = c.reporter.kick
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Go(c.run)
	return c, nil
}

// ID returns the client ID sent to the server.
func (c *Client) ID() string { return c.clientID }

// Stream returns the ID of the client's outgoing stream.
func (c *Client) Stream() protocol.StreamID { return c.stream }

// OutgoingMessage is a message to send, with optional headers and TTL.
type OutgoingMessage struct {
	Headers []protocol.Header // application headers; they count towards MaxMessageSize
	Payload []byte            // the message body
	// TTL, when positive, is how long the message is worth delivering:
	// once it has passed, the message is never handed to a handler and
	// settles as expired (ErrExpired). Zero: it never expires.
	TTL time.Duration
	// ID, when not zero, is the message's ID; zero: a new UUIDv7. A
	// server's pushes are idempotent by ID: a push whose ID the server
	// has a record of for the same client (pending, or settled within
	// StatusRetention) is not queued again, and Send returns a receipt
	// for the first push. A producer that did not learn whether a push
	// was committed (a timeout, a failover) retries with the same ID and
	// the client gets the message once. The same ID for another client
	// fails with ErrInvalid. SendMany gives each recipient the ID derived
	// from ID and the recipient's address (a UUIDv5), so that a retried
	// fan-out is deduplicated per recipient. A client uses the ID as its
	// message's ID, without deduplicating.
	ID protocol.MessageID
}

// Send queues payload durably and returns once it is committed to the
// store (fsynced unless NoSync), before it reaches the server. The returned
// Receipt settles when the server acknowledges or rejects the message.
//
// Send blocks while the queue is full, until ctx ends, unless the client
// was created with FailWhenFull. Errors: ErrTooLarge, ErrQueueFull,
// ErrDiskFull (also matching syscall.ENOSPC), ErrClosed, or the error the
// client stopped on (matching ErrStopped). On error the message was not
// queued.
func (c *Client) Send(ctx context.Context, payload []byte) (*Receipt, error) {
	return c.SendMessage(ctx, OutgoingMessage{Payload: payload})
}

// SendMessage is Send with headers.
func (c *Client) SendMessage(ctx context.Context, m OutgoingMessage) (*Receipt, error) {
	rs, err := c.SendBatch(ctx, []OutgoingMessage{m})
	if err != nil {
		return nil, err
	}
	return rs[0], nil
}

// SendBatch queues msgs in one durable commit, all or none, in slice order,
// and returns one receipt per message. It is Send for callers that have
// several messages at hand: one fsync covers the whole batch, where
// concurrent Sends share one only as far as they happen to overlap. Errors
// are those of Send; on error nothing was queued.
func (c *Client) SendBatch(ctx context.Context, msgs []OutgoingMessage) ([]*Receipt, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	entries := make([]queue.Entry, len(msgs))
	rs := make([]*Receipt, len(msgs))
	for i, m := range msgs {
		if err := checkOutgoing(m, int64(c.opts.MaxMessageSize)); err != nil {
			return nil, err
		}
		id, err := messageID(m.ID)
		if err != nil {
			return nil, err
		}
		rs[i] = newReceipt(id)
		entries[i] = queue.Entry{ID: rs[i].id, Headers: m.Headers, Payload: m.Payload, Expires: expiry(m.TTL)}
	}
	c.mu.Lock()
	state, stopErr := c.state, c.err
	c.mu.Unlock()
	switch {
	case state == StateClosed:
		return nil, ErrClosed
	case stopErr != nil:
		return nil, stopErr
	}
	// Register before the entries are visible to the sender, so an ack can
	// never arrive for an unregistered receipt.
	c.receipts.add(rs)
	first, err := c.store.AppendBatch(ctx, entries)
	for tries := 0; err != nil && errors.Is(err, queue.ErrFull) && c.opts.DropOldest && tries < 8; tries++ {
		if eerr := c.evictFor(ctx, len(entries), entrySizes(entries)); eerr != nil {
			err = eerr
			break
		}
		first, err = c.store.AppendBatch(ctx, entries)
	}
	if err != nil {
		c.receipts.remove(rs)
		return nil, sendError(err)
	}
	for i, r := range rs {
		r.seq.Store(first + uint64(i))
	}
	notify(c.out.wake)
	return rs, nil
}

// Stats is a snapshot of a client's counters.
type Stats struct {
	State       State         // the connection state when the snapshot was taken
	Queued      int           // messages queued and not yet acknowledged
	InFlight    int           // sent on the current connection, not yet acknowledged
	Acked       uint64        // messages acknowledged since the client started
	Rejected    uint64        // of those, rejected by the server
	Redelivered uint64        // messages sent again after a reconnect
	Reconnects  uint64        // sessions established after the first
	Received    uint64        // pushes handed to the Handler and acknowledged or rejected
	RTT         time.Duration // last heartbeat round trip, 0 before the first
}

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() Stats {
	st := c.store.Stats()
	// Acked by the server but not yet deleted, or evicted: either way gone.
	acked, _ := c.out.ackedUpTo()
	acked = min(max(acked, st.Acked), st.LastSeq)
	s := Stats{State: c.State(), Queued: int(st.LastSeq - acked)}
	s.InFlight = c.out.inFlight()
	s.Received = c.nReceived.Load()
	s.Acked = c.out.ackedTotal()
	s.Rejected = c.nRejected.Load()
	s.Redelivered = c.nRedelivered.Load()
	if n := c.nConnects.Load(); n > 1 {
		s.Reconnects = n - 1
	}
	if conn := c.conn.Load(); conn != nil && conn.RTT() > 0 {
		c.rtt.Store(int64(conn.RTT()))
	}
	s.RTT = time.Duration(c.rtt.Load())
	return s
}

// State returns the connection state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Err returns the error the client stopped on (matching ErrStopped), or nil
// while it is running or retrying.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Drain blocks until every message queued before the call has been
// acknowledged (or rejected) by the server. It returns ctx's error if ctx
// ends first, ErrClosed if the client closes, or the error the client
// stopped on.
func (c *Client) Drain(ctx context.Context) error {
	target := c.store.Stats().LastSeq
	for {
		acked, ch := c.out.ackedUpTo()
		c.mu.Lock()
		state, err := c.state, c.err
		c.mu.Unlock()
		switch {
		case acked >= target:
			return nil
		case err != nil:
			return err
		case state == StateClosed:
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.ctx.Done():
		}
	}
}

// Close stops the client: it closes the connection, waits for the client's
// goroutines, records the last acknowledgement and closes the store (if the
// client opened it). Unsettled receipts report ErrClosed; their messages stay
// queued and are sent by the next client on the same store. Close is
// idempotent and safe for concurrent use.
func (c *Client) Close() error {
	var err error
	c.once.Do(func() {
		c.mu.Lock()
		c.state = StateClosed
		c.mu.Unlock()
		c.cancel()
		c.wg.Wait()
		if derr := c.out.deleteAcked(); derr != nil {
			c.log.Warn("deleting acknowledged messages failed", "error", derr)
		}
		c.receipts.settleAll(ErrClosed)
		if c.reporter != nil {
			c.reporter.stop()
		}
		if c.ownStore {
			err = c.store.Close()
		}
		c.log.Info("client closed", "client", c.clientID)
	})
	return err
}

// Limits of the client's own store when ClientOptions leave them zero
// (queue.Options' defaults).
const (
	defaultMaxQueued      = 1_000_000
	defaultMaxQueuedBytes = 1 << 30
)

// evictFor drops the oldest queued messages until n more messages of size
// bytes fit under the queue's limits (DropOldest). The store deletes them
// as though acknowledged, recording them as evicted; their receipts settle
// with ErrEvicted, and the sender skips them.
func (c *Client) evictFor(ctx context.Context, n int, size int64) error {
	maxMsgs, maxBytes := int64(c.opts.MaxQueued), c.opts.MaxQueuedBytes
	if maxMsgs == 0 {
		maxMsgs = defaultMaxQueued
	}
	if maxBytes == 0 {
		maxBytes = defaultMaxQueuedBytes
	}
	st := c.store.Stats()
	excessMsgs := int64(st.Messages+n) - maxMsgs
	excessBytes := st.Bytes + size - maxBytes
	var evicted []queue.Entry
	for from := st.FirstSeq; from > 0 && (excessMsgs > 0 || excessBytes > 0); {
		batch, err := c.store.Read(from, 256, 0)
		if err != nil {
			return fmt.Errorf("reliable: evict: %w", err)
		}
		if len(batch) == 0 {
			break
		}
		for _, e := range batch {
			if excessMsgs <= 0 && excessBytes <= 0 {
				break
			}
			evicted = append(evicted, e)
			excessMsgs--
			excessBytes -= entrySize(e)
		}
		from = batch[len(batch)-1].Seq + 1
	}
	if len(evicted) == 0 {
		return fmt.Errorf("%w: nothing left to evict", ErrQueueFull)
	}
	outcomes := make([]queue.Outcome, len(evicted))
	for i, e := range evicted {
		outcomes[i] = queue.Outcome{Seq: e.Seq, Code: uint16(protocol.RejectEvicted), Reason: "evicted to make room"}
	}
	if err := c.store.AckWith(ctx, evicted[len(evicted)-1].Seq, outcomes); err != nil {
		return fmt.Errorf("reliable: evict: %w", err)
	}
	c.log.Warn("queue full: evicted the oldest messages", "client", c.clientID, "evicted", len(evicted))
	for _, e := range evicted {
		c.settled([]settlement{{seq: e.Seq, id: e.ID, code: protocol.RejectEvicted, reason: "evicted to make room"}})
	}
	if c.reporter != nil {
		c.reporter.kick()
	}
	return nil
}

// messageSize is what a message counts against size limits: payload and
// header bytes, as the queue counts them.
func messageSize(payload []byte, headers []protocol.Header) int64 {
	n := int64(len(payload))
	for _, h := range headers {
		n += int64(len(h.Key) + len(h.Value))
	}
	return n
}

func entrySize(e queue.Entry) int64 { return messageSize(e.Payload, e.Headers) }

func entrySizes(entries []queue.Entry) int64 {
	var n int64
	for _, e := range entries {
		n += entrySize(e)
	}
	return n
}

// settled settles the receipts of settled messages and counts them.
// OnSettled is called from the store's records instead.
func (c *Client) settled(settled []settlement) {
	for _, st := range settled {
		set := st.of(c.clientID)
		if set.Status != StatusAcked {
			c.nRejected.Add(1)
		}
		c.receipts.settle(st.id, set.Err())
	}
}

func (c *Client) setState(s State, cause error) {
	c.mu.Lock()
	if c.state == StateClosed || c.state == s {
		c.mu.Unlock()
		return
	}
	c.state = s
	c.mu.Unlock()
	if c.opts.OnStateChange != nil {
		c.opts.OnStateChange(s, cause)
	}
}
