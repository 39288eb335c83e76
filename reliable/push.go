package reliable

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// Status is how a message ended, as [Settlement] reports it.
type Status uint8

// Statuses of a message.
const (
	StatusPending  Status = iota // queued, not settled yet
	StatusAcked                  // the receiver handled it
	StatusRejected               // the receiver refused it (or it was too large, or its attempts ran out)
	StatusExpired                // its expiry passed before delivery
	StatusEvicted                // the sender dropped it to make room
)

// String returns the status's name: pending, acked, rejected, expired or
// evicted.
func (s Status) String() string {
	switch s {
	case StatusPending:
		return "pending"
	case StatusAcked:
		return "acked"
	case StatusRejected:
		return "rejected"
	case StatusExpired:
		return "expired"
	case StatusEvicted:
		return "evicted"
	}
	return "unknown"
}

// Settlement is how one message settled, as OnSettled reports it.
type Settlement struct {
	// ClientID is the client whose stream carried the message: the
	// recipient of a push (its Address on a server), or the sending
	// client itself.
	ClientID string
	ID       protocol.MessageID
	Seq      uint64
	Status   Status
	// Code and Reason say why a message settled without being handled;
	// zero and empty for an ack.
	Code   protocol.RejectCode
	Reason string
}

// Err returns the error a receipt reports for s: nil for an ack, else a
// *RejectError.
func (s Settlement) Err() error {
	if s.Status == StatusAcked {
		return nil
	}
	return &RejectError{ID: s.ID, Seq: s.Seq, Code: s.Code, Reason: s.Reason}
}

// statusOf maps a settlement code to its status.
func statusOf(code protocol.RejectCode) Status {
	switch code {
	case 0:
		return StatusAcked
	case protocol.RejectExpired:
		return StatusExpired
	case protocol.RejectEvicted:
		return StatusEvicted
	}
	return StatusRejected
}

// Send queues payload durably for the client at address clientID (see
// Address: the client ID itself on a server without Authenticate, else
// Message.Address or Address(identity, client ID)) and returns once it is
// committed to the server's store (fsynced unless NoSync). The message
// reaches the client when it is connected, at once if it is; until then
// it waits on disk, in the client's outbox. The receipt settles when the
// client acknowledges, rejects, the message expires or is evicted.
//
// Errors: ErrTooLarge (payload and headers over MaxMessageSize or the
// outbox's byte limit), ErrQueueFull (the client's outbox is full and
// OutboxEvict is off), ErrStoreFull (the store is at MaxStoreBytes),
// ErrDiskFull, ErrClosed, ErrInvalid (an empty or
// over-long client ID, a negative TTL). On error nothing was queued.
func (s *Server) Send(ctx context.Context, clientID string, payload []byte) (*Receipt, error) {
	return s.SendMessage(ctx, clientID, OutgoingMessage{Payload: payload})
}

// SendMessage is Send with headers, a TTL or an ID of the caller's (an
// idempotent push: see OutgoingMessage.ID).
func (s *Server) SendMessage(ctx context.Context, clientID string, m OutgoingMessage) (*Receipt, error) {
	rs, err := s.push(ctx, []pending{{client: clientID, msg: m}})
	if err != nil {
		return nil, err
	}
	return rs[0], nil
}

// SendMany queues one message for every client in clientIDs in ONE
// durable commit, all or none: a gateway notifying 10,000 devices pays one
// fsync, not 10,000. Each recipient's copy has its own message ID and
// receipt, returned in the order of clientIDs; with m.ID set, a copy's
// ID is derived from it and the recipient's address, so that a retry
// queues nothing twice (see OutgoingMessage.ID). A client ID may appear
// once. Errors are those of Send.
func (s *Server) SendMany(ctx context.Context, clientIDs []string, m OutgoingMessage) ([]*Receipt, error) {
	seen := make(map[string]struct{}, len(clientIDs))
	ps := make([]pending, len(clientIDs))
	for i, id := range clientIDs {
		if _, dup := seen[id]; dup {
			return nil, fmt.Errorf("%w: client ID %q appears twice", ErrInvalid, truncate(id, 64))
		}
		seen[id] = struct{}{}
		ps[i] = pending{client: id, msg: m}
		if m.ID != (protocol.MessageID{}) {
			ps[i].msg.ID = recipientID(m.ID, id)
		}
	}
	return s.push(ctx, ps)
}

// SendBatch queues msgs for clientID in ONE durable commit, all or none,
// with consecutive sequences in slice order, and returns one receipt per
// message: Send for a caller with many messages for one client at hand
// (one fsync for all of them). Errors are those of Send.
func (s *Server) SendBatch(ctx context.Context, clientID string, msgs []OutgoingMessage) ([]*Receipt, error) {
	ps := make([]pending, len(msgs))
	for i, m := range msgs {
		ps[i] = pending{client: clientID, msg: m}
	}
	return s.push(ctx, ps)
}

// recipientID is the ID of client's copy of a fan-out with ID id.
func recipientID(id protocol.MessageID, client string) protocol.MessageID {
	return protocol.MessageID(uuid.NewSHA1(uuid.UUID(id), []byte(client)))
}

// pending is one message for one client, before its commit.
type pending struct {
	client string
	msg    OutgoingMessage
}

// push queues ps in one commit and wakes the recipients' sessions.
func (s *Server) push(ctx context.Context, ps []pending) ([]*Receipt, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return nil, ErrClosed
	}
	pushes := make([]queue.Push, len(ps))
	rs := make([]*Receipt, len(ps))
	var bytes uint64
	for i, p := range ps {
		if p.client == "" || len(p.client) > protocol.MaxClientIDLen {
			return nil, fmt.Errorf("%w: client ID %q is empty or longer than %d bytes", ErrInvalid, truncate(p.client, 64), protocol.MaxClientIDLen)
		}
		if err := checkOutgoing(p.msg, s.opts.MaxMessageSize); err != nil {
			return nil, err
		}
		mid, err := messageID(p.msg.ID)
		if err != nil {
			return nil, err
		}
		// Receipts register only when someone looks at them
		// (watchReceipt): a push to an offline client costs the server
		// no memory.
		rs[i] = newReceipt(protocol.MessageID(mid))
		rs[i].client = p.client
		rs[i].watch = s.watchReceipt
		pushes[i] = queue.Push{Client: p.client, Entry: queue.Entry{
			ID: rs[i].id, Headers: p.msg.Headers, Payload: p.msg.Payload, Expires: expiry(p.msg.TTL)},
			NewID: p.msg.ID == (protocol.MessageID{})}
		bytes += uint64(len(p.msg.Payload))
	}
	if s.storeFull() {
		return nil, ErrStoreFull
	}
	seqs, evicted, err := s.store.Push(ctx, pushes)
	if err != nil {
		return nil, sendError(err)
	}
	for i, r := range rs {
		r.seq.Store(seqs[i])
	}
	s.counters.pushed.Add(uint64(len(rs)))
	s.counters.pushedBytes.Add(bytes)
	for _, e := range evicted {
		s.settled(e.Client, []settlement{{seq: e.Seq, id: e.ID, code: protocol.RejectEvicted, reason: "evicted to make room"}})
	}
	if len(evicted) > 0 {
		s.reporter.kick()
	}
	woken := ""
	for _, p := range ps {
		if p.client != woken {
			s.wakeClient(p.client)
			woken = p.client
		}
	}
	return rs, nil
}

// wakeClient tells a connected client's session that pushes are queued.
func (s *Server) wakeClient(id string) {
	s.mu.Lock()
	var ss *session
	if p := s.peers[id]; p != nil {
		ss = p.current
	}
	s.mu.Unlock()
	if ss != nil {
		ss.kick()
	}
}

// checkOutgoing checks a message against a sender's limit: maxSize
// bounds the payload and header bytes together.
func checkOutgoing(m OutgoingMessage, maxSize int64) error {
	if size := messageSize(m.Payload, m.Headers); size > maxSize {
		return fmt.Errorf("%w: %d bytes of payload and headers, limit %d", ErrTooLarge, size, maxSize)
	}
	if len(m.Headers) > protocol.MaxHeaders {
		return fmt.Errorf("%w: %d headers, limit %d", ErrTooLarge, len(m.Headers), protocol.MaxHeaders)
	}
	if m.TTL < 0 {
		return fmt.Errorf("%w: negative TTL %v", ErrInvalid, m.TTL)
	}
	return nil
}

// sendError maps a store error to the package's errors.
func sendError(err error) error {
	switch {
	case errors.Is(err, queue.ErrClosed):
		return ErrClosed
	case errors.Is(err, queue.ErrTooLarge) && !errors.Is(err, ErrTooLarge):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	case errors.Is(err, queue.ErrIDInUse):
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return fmt.Errorf("reliable: send: %w", err)
}

// messageID returns id, or a new UUIDv7 when id is zero.
func messageID(id protocol.MessageID) (protocol.MessageID, error) {
	if id != (protocol.MessageID{}) {
		return id, nil
	}
	mid, err := uuid.NewV7()
	if err != nil {
		return id, fmt.Errorf("reliable: message ID: %w", err)
	}
	return protocol.MessageID(mid), nil
}

// expiry turns a TTL into the wire's Unix-millisecond expiry, 0 for none.
func expiry(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return time.Now().Add(ttl).UnixMilli()
}

// newPushOutbox returns the sender of client's push stream.
func (s *Server) newPushOutbox(client string, info queue.OutboxInfo) *outbox {
	o := newOutbox(info.Stream, pushStore{s.store, client}, info.Acked,
		func(settled []settlement) { s.settled(client, settled) }, s.log.With("client", client))
	if s.opts.OnSettled != nil {
		o.onDeleted = s.reporter.kick
	}
	return o
}

// watchReceipt registers r for settlement and settles it at once if the
// store says it already has: it may have settled before anyone looked.
// A settlement that comes between the two finds r registered.
func (s *Server) watchReceipt(r *Receipt) {
	s.receipts.add([]*Receipt{r})
	// The recipient's outbox, when loaded, knows without a store read.
	s.mu.Lock()
	p := s.peers[r.client]
	s.mu.Unlock()
	if p != nil {
		if o := p.live.Load(); o != nil {
			if st, ok := o.settledAs(r.seq.Load()); ok {
				s.receipts.settle(r.id, st.of(r.client).Err())
				return
			}
		}
	}
	rec, found, err := s.store.Status(r.id)
	switch {
	case errors.Is(err, queue.ErrClosed):
		s.receipts.settle(r.id, ErrClosed)
	case err != nil:
		s.log.Warn("reading a push's status failed; its receipt waits for the settlement", "id", r.id.String(), "error", err)
	case !found:
		s.receipts.settle(r.id, fmt.Errorf("%w: %s", ErrUnknownMessage, r.id))
	case !rec.Pending:
		s.receipts.settle(r.id, settlementOf(rec, "").Err())
	}
}

// settlementOf turns a store record into a Settlement; client names the
// client of records of a client's own outbox (Client "").
func settlementOf(rec queue.Settled, client string) Settlement {
	if rec.Client != "" {
		client = rec.Client
	}
	return settlement{seq: rec.Seq, id: rec.ID, code: protocol.RejectCode(rec.Code), reason: rec.Reason}.of(client)
}

// settled settles the receipts of settled pushes. OnSettled is called
// from the store's records instead, once they are committed.
func (s *Server) settled(client string, settled []settlement) {
	for _, st := range settled {
		set := st.of(client)
		s.receipts.settle(st.id, set.Err())
		s.counters.settled(st.code)
	}
}

// Status returns what the server knows of push id: pending while it is
// queued, then how it settled, for ServerOptions' StatusRetention (24 h by
// default) after that, across restarts. ErrUnknownMessage: never pushed
// by this store, or forgotten.
func (s *Server) Status(id protocol.MessageID) (PushStatus, error) {
	rec, found, err := s.store.Status(id)
	switch {
	case err != nil:
		return PushStatus{}, fmt.Errorf("reliable: status of %s: %w", id, err)
	case !found || rec.Client == "":
		return PushStatus{}, fmt.Errorf("%w: %s", ErrUnknownMessage, id)
	}
	st := PushStatus{ID: rec.ID, ClientID: rec.Client, Seq: rec.Seq, Status: StatusPending}
	if !rec.Pending {
		st.Code = protocol.RejectCode(rec.Code)
		st.Status, st.Reason, st.Settled = statusOf(st.Code), rec.Reason, rec.At
	}
	return st, nil
}

// pushStore is one client's push outbox seen as an outStore.
type pushStore struct {
	store  queue.Outboxes
	client string
}

func (p pushStore) Read(from uint64, max int, maxBytes int) ([]queue.Entry, error) {
	return p.store.ReadOutbox(p.client, from, max, maxBytes)
}

func (p pushStore) AckWith(ctx context.Context, upTo uint64, outcomes []queue.Outcome) error {
	return p.store.AckOutbox(ctx, p.client, upTo, outcomes)
}

// PushStatus is what a server knows of one push.
type PushStatus struct {
	ID       protocol.MessageID
	ClientID string // the recipient's Address, as passed to Send
	Seq      uint64
	Status   Status
	// Code and Reason say why a push settled without being handled.
	Code   protocol.RejectCode
	Reason string
	// Settled is when it settled; zero while pending.
	Settled time.Time
}

// ErrUnknownMessage is returned by Server.Status for an ID the server
// does not know: never pushed, or settled longer ago than the store keeps
// statuses (24 h by default).
var ErrUnknownMessage = errors.New("reliable: unknown message")

// ClientInfo is what a server knows of one client.
type ClientInfo struct {
	// Address is the client's address (see Address): the key Client and
	// Clients take, and what Send takes to push to it.
	Address   string
	ClientID  string // the client ID it presents
	Identity  string // the identity it authenticated as
	Connected bool   // a session is open now
	// Watermark is the committed watermark of the client's stream to the
	// server while it is connected (0 otherwise): how far its messages
	// have been handled.
	Watermark uint64
	// LastSeen is when its last session ended, while the server has run;
	// zero if it is connected or has not been seen since the start.
	LastSeen time.Time
	Stream   protocol.StreamID // the push stream; zero if nothing was ever pushed
	Queued   int               // pushes not yet acknowledged
	Bytes    int64             // their payload and header bytes
	FirstSeq uint64            // lowest queued sequence, 0 when none
	LastSeq  uint64            // highest sequence assigned
	Oldest   time.Time         // when the oldest queued push was queued; zero when none
}

// Client returns what the server knows of the client at address (see
// Address; the client ID without Authenticate) and its pushes. A client
// never pushed to has a zero Stream and counts.
func (s *Server) Client(address string) (ClientInfo, error) {
	info, err := s.store.OutboxInfo(address)
	if err != nil {
		return ClientInfo{}, fmt.Errorf("reliable: client %q: %w", truncate(address, 64), err)
	}
	return s.clientInfo(info), nil
}

// Clients lists the clients that are connected or have a push stream, in
// address order, starting after the given address ("" from the start), at
// most limit of them (<= 0: 100). Page through them by passing the last
// Address returned.
func (s *Server) Clients(after string, limit int) ([]ClientInfo, error) {
	if limit <= 0 {
		limit = 100
	}
	infos, err := s.store.Clients(after, limit)
	if err != nil {
		return nil, fmt.Errorf("reliable: list clients: %w", err)
	}
	// Connected clients without a push stream are not in the store's
	// list: merge them in, within the page's range.
	full := len(infos) == limit
	s.mu.Lock()
	var connected []string
	for id, p := range s.peers {
		if p.current != nil && id > after && (!full || id < infos[len(infos)-1].Client) {
			connected = append(connected, id)
		}
	}
	s.mu.Unlock()
	have := make(map[string]bool, len(infos))
	for _, info := range infos {
		have[info.Client] = true
	}
	for _, id := range connected {
		if !have[id] {
			infos = append(infos, queue.OutboxInfo{Client: id})
		}
	}
	slices.SortFunc(infos, func(a, b queue.OutboxInfo) int { return strings.Compare(a.Client, b.Client) })
	if len(infos) > limit {
		infos = infos[:limit]
	}
	out := make([]ClientInfo, len(infos))
	for i, info := range infos {
		out[i] = s.clientInfo(info)
	}
	return out, nil
}

func (s *Server) clientInfo(info queue.OutboxInfo) ClientInfo {
	s.mu.Lock()
	p := s.peers[info.Client]
	connected := p != nil && p.current != nil
	var wm uint64
	if connected {
		wm = p.current.watermark.Load()
	}
	lastSeen := s.lastSeen[info.Client]
	s.mu.Unlock()
	identity, clientID := splitAddress(info.Client)
	if identity == "" {
		// A bare client ID may be bound from before addresses held
		// identities.
		bound, err := s.store.Binding(info.Client)
		if err != nil {
			s.log.Warn("reading a binding failed", "client", info.Client, "error", err)
		}
		identity = bound
	}
	if connected {
		lastSeen = time.Time{}
	}
	return ClientInfo{
		Address:   info.Client,
		ClientID:  clientID,
		Identity:  identity,
		Connected: connected,
		Watermark: wm,
		LastSeen:  lastSeen,
		Stream:    info.Stream,
		Queued:    info.Messages,
		Bytes:     info.Bytes,
		FirstSeq:  info.FirstSeq,
		LastSeq:   info.LastSeq,
		Oldest:    info.Oldest,
	}
}
