package queue

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/wsreliable/wsreliable/internal/pushid"
	"github.com/wsreliable/wsreliable/protocol"
)

// Memory is a [Store] kept in memory, for tests and for endpoints that
// accept losing their queue on exit. It has the same limits and full-queue
// behaviour as [Bolt] and no goroutines. It is safe for concurrent use.
type Memory struct {
	meta    Meta
	limit   *limiter
	closing chan struct{}

	mu         sync.Mutex
	closed     bool
	entries    []Entry // seq acked+1..last, ascending
	st         state
	watermarks map[string]uint64
	bindings   map[string]string
	outboxes   map[string]*memOutbox
	outLimits  outboxLimits
	records    map[protocol.MessageID]record
	track      bool // TrackSettled
	// settleReported is Options.SettleReported; with it, settling
	// prunes the records past the retention once nextPrune (Unix ms).
	settleReported bool
	nextPrune      int64
	retention      time.Duration // StatusRetention, defaulted
	expiry         time.Duration // IdleExpiry, defaulted
	// lastUsed is every peer's last-used time (Unix ms); sweepAt is
	// when the next sweep for idle peers is due.
	lastUsed map[string]int64
	sweepAt  int64

	// testNow, when set by a test, replaces time.Now for the times of
	// settlement records and pruning.
	testNow atomic.Pointer[func() time.Time]
}

// memOutbox is one client's outbox in a Memory.
type memOutbox struct {
	stream  protocol.StreamID
	st      state
	entries []memPushed // seq st.acked+1..st.last, ascending
}

type memPushed struct {
	e      Entry
	queued int64 // Unix ms
}

// NewMemory returns an empty in-memory store with a new client ID and
// stream ID. opts may be nil for defaults; only the limit fields
// (MaxMessages, MaxBytes, FailWhenFull and the Outbox ones),
// StatusRetention, IdleExpiry, TrackSettled and SettleReported apply, the others are
// ignored. Idle peers are expired by the calls of the inbox role, with
// no goroutine.
func NewMemory(opts *Options) *Memory {
	var o Options
	if opts != nil {
		o = Options{
			MaxMessages: opts.MaxMessages, MaxBytes: opts.MaxBytes, FailWhenFull: opts.FailWhenFull,
			OutboxMaxMessages: opts.OutboxMaxMessages, OutboxMaxBytes: opts.OutboxMaxBytes, OutboxEvict: opts.OutboxEvict,
			StatusRetention: opts.StatusRetention, TrackSettled: opts.TrackSettled, SettleReported: opts.SettleReported,
			IdleExpiry: opts.IdleExpiry,
		}
	}
	o, _ = o.withDefaults() // cannot fail: only the limit fields are set
	m := &Memory{
		meta: Meta{
			ClientID: uuid.NewString(),
			Stream:   protocol.StreamID(uuid.New()),
		},
		closing:        make(chan struct{}),
		watermarks:     make(map[string]uint64),
		bindings:       make(map[string]string),
		outboxes:       make(map[string]*memOutbox),
		outLimits:      o.outboxLimits(),
		records:        make(map[protocol.MessageID]record),
		track:          o.TrackSettled,
		settleReported: o.SettleReported,
		retention:      o.StatusRetention,
		expiry:         o.IdleExpiry,
		lastUsed:       make(map[string]int64),
	}
	m.limit = newLimiter(&o, m.closing, 0, 0)
	return m
}

// Meta returns the store's client ID and stream ID.
func (m *Memory) Meta() Meta { return m.meta }

// Append assigns the next sequence to a copy of e and returns it. See
// [Outbox.Append].
func (m *Memory) Append(ctx context.Context, e Entry) (uint64, error) {
	return m.AppendBatch(ctx, []Entry{e})
}

// AppendBatch appends copies of entries with consecutive sequences and
// returns the first. See [Outbox.AppendBatch].
func (m *Memory) AppendBatch(ctx context.Context, entries []Entry) (uint64, error) {
	if m.isClosed() {
		return 0, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("queue: append: %w", err)
	}
	if len(entries) == 0 {
		return 0, errEmptyBatch
	}
	var size int64
	for i := range entries {
		size += entrySize(&entries[i])
	}
	if err := m.limit.reserve(ctx, len(entries), size); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		m.limit.release(len(entries), size)
		return 0, ErrClosed
	}
	first := m.st.last + 1
	for _, e := range entries {
		e = cloneEntry(e)
		m.st.last++
		e.Seq = m.st.last
		m.entries = append(m.entries, e)
	}
	m.st.bytes += size
	return first, nil
}

// Read returns up to max entries with Seq >= from; see [Bolt.Read] for the
// limits. The entries are copies.
func (m *Memory) Read(from uint64, max int, maxBytes int) ([]Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	i := sort.Search(len(m.entries), func(i int) bool { return m.entries[i].Seq >= from })
	var (
		out   []Entry
		total int64
	)
	for ; i < len(m.entries); i++ {
		if max > 0 && len(out) >= max {
			break
		}
		size := entrySize(&m.entries[i])
		if maxBytes > 0 && len(out) > 0 && total+size > int64(maxBytes) {
			break
		}
		out = append(out, cloneEntry(m.entries[i]))
		total += size
	}
	return out, nil
}

// Ack deletes every entry with Seq <= upTo; see [Bolt.Ack].
func (m *Memory) Ack(ctx context.Context, upTo uint64) error { return m.AckWith(ctx, upTo, nil) }

// AckWith deletes every entry with Seq <= upTo and, with TrackSettled,
// records their settlements with outcomes; see [Outbox.AckWith].
func (m *Memory) AckWith(ctx context.Context, upTo uint64, outcomes []Outcome) error {
	if m.isClosed() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("queue: ack: %w", err)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	upTo = min(upTo, m.st.last)
	if upTo <= m.st.acked {
		m.mu.Unlock()
		return nil
	}
	n := int(upTo - m.st.acked)
	var freed int64
	byseq := outcomeMap(outcomes)
	now := m.nowMilli()
	for i := range n {
		freed += entrySize(&m.entries[i])
		if m.track {
			m.settle("", m.entries[i].Seq, m.entries[i].ID, byseq, now)
		}
	}
	m.entries = append([]Entry(nil), m.entries[n:]...)
	m.st.acked = upTo
	m.st.bytes -= freed
	m.mu.Unlock()
	m.limit.release(n, freed)
	return nil
}

// Watermark returns the watermark of (peer, stream), 0 if unknown.
func (m *Memory) Watermark(peer string, stream protocol.StreamID) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, ErrClosed
	}
	m.sweep(m.nowMilli())
	return m.watermarks[string(watermarkKey(peer, stream))], nil
}

// SetWatermark records seq as the watermark of (peer, stream).
func (m *Memory) SetWatermark(ctx context.Context, peer string, stream protocol.StreamID, seq uint64) error {
	if err := m.writeCheck(ctx, "set watermark", peer); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	k := string(watermarkKey(peer, stream))
	m.watermarks[k] = max(m.watermarks[k], seq) // never moves back
	m.touch(peer)
	return nil
}

// Binding returns the identity peer is bound to, "" if none.
func (m *Memory) Binding(peer string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return "", ErrClosed
	}
	m.sweep(m.nowMilli())
	return m.bindings[peer], nil
}

// Bind binds peer to identity.
func (m *Memory) Bind(ctx context.Context, peer, identity string) error {
	if err := m.writeCheck(ctx, "bind", peer); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.bindings[peer] = identity
	m.touch(peer)
	return nil
}

// Touch records now as peer's last-used time; see [Inbox.Touch].
func (m *Memory) Touch(ctx context.Context, peer string) error {
	if err := m.writeCheck(ctx, "touch", peer); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.touch(peer)
	return nil
}

// touch records now as peer's last-used time and expires idle peers
// when a sweep is due. m.mu is held.
func (m *Memory) touch(peer string) {
	now := m.nowMilli()
	m.lastUsed[peer] = now
	m.sweep(now)
}

// sweep deletes, when one is due (every touchGranularity), the binding,
// watermarks and empty push outbox of every peer idle for longer than
// IdleExpiry, as [Bolt]'s writer does; a peer whose push outbox holds
// messages is kept. m.mu is held.
func (m *Memory) sweep(now int64) {
	if m.expiry < 0 || now < m.sweepAt {
		return
	}
	m.sweepAt = now + touchGranularity(m.expiry)
	cutoff := now - m.expiry.Milliseconds()
	idle := make(map[string]bool)
	for peer, at := range m.lastUsed {
		if at >= cutoff {
			continue
		}
		if ob := m.outboxes[peer]; ob != nil && len(ob.entries) > 0 {
			m.lastUsed[peer] = now
			continue
		}
		idle[peer] = true
		delete(m.lastUsed, peer)
		delete(m.bindings, peer)
		delete(m.outboxes, peer)
	}
	if len(idle) == 0 {
		return
	}
	for k := range m.watermarks {
		if idle[k[:len(k)-len(protocol.StreamID{})]] {
			delete(m.watermarks, k)
		}
	}
}

func (m *Memory) writeCheck(ctx context.Context, op, peer string) error {
	if m.isClosed() {
		return ErrClosed
	}
	if peer == "" {
		return errEmptyPeer
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("queue: %s: %w", op, err)
	}
	return nil
}

// Stats returns a snapshot of the outbox; FileSize is always 0.
func (m *Memory) Stats() Stats {
	m.mu.Lock()
	st := m.st
	m.mu.Unlock()
	s := Stats{Messages: st.messages(), Bytes: st.bytes, LastSeq: st.last, Acked: st.acked}
	if s.Messages > 0 {
		s.FirstSeq = st.acked + 1
	}
	return s
}

// Close releases the store and makes waiting appends return ErrClosed.
// The first call returns nil, later ones ErrClosed.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.closed = true
	close(m.closing)
	return nil
}

func (m *Memory) isClosed() bool {
	select {
	case <-m.closing:
		return true
	default:
		return false
	}
}

func cloneEntry(e Entry) Entry {
	if e.Headers != nil {
		e.Headers = append([]protocol.Header(nil), e.Headers...)
	}
	e.Payload = append([]byte(nil), e.Payload...)
	return e
}

// Push appends msgs to their clients' outboxes, all or none; see
// [Outboxes.Push].
func (m *Memory) Push(ctx context.Context, msgs []Push) ([]uint64, []Evicted, error) {
	if m.isClosed() {
		return nil, nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("queue: push: %w", err)
	}
	if err := m.outLimits.checkPush(msgs); err != nil {
		return nil, nil, err
	}
	now := m.nowMilli()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, nil, ErrClosed
	}
	fresh, seqs, sameAs, err := dedupe(msgs, func(id protocol.MessageID) (string, uint64, bool, error) {
		r, ok := m.records[id]
		if !ok || m.expired(r, now) {
			return "", 0, false, nil
		}
		return r.Client, r.Seq, true, nil
	})
	if err != nil {
		return nil, nil, err
	}
	if fresh != nil && len(fresh) == 0 {
		return seqs, nil, nil
	}
	groups := groupPushes(msgs, fresh)
	// Decide every client's evictions before changing anything.
	type plan struct {
		k     int
		freed int64
	}
	plans := make([]plan, len(groups))
	for i := range groups {
		ob := m.outboxes[groups[i].Client]
		var held []memPushed
		var bytes int64
		if ob != nil {
			held, bytes = ob.entries, ob.st.bytes
		}
		j := 0
		k, freed, err := m.outLimits.makeRoom(&groups[i], len(held), bytes, func() (int64, error) {
			j++
			return entrySize(&held[j-1].e), nil
		})
		if err != nil {
			return nil, nil, err
		}
		plans[i] = plan{k, freed}
	}
	var evicted []Evicted
	for i, g := range groups {
		ob := m.outboxes[g.Client]
		if ob == nil {
			ob = &memOutbox{stream: protocol.StreamID(uuid.New())}
			m.outboxes[g.Client] = ob
			// A new outbox names a peer, which gets a last-used time so
			// that sweep removes the outbox once it is empty and idle.
			if _, ok := m.lastUsed[g.Client]; !ok {
				m.lastUsed[g.Client] = now
			}
		}
		for _, p := range ob.entries[:plans[i].k] {
			evicted = append(evicted, Evicted{Client: g.Client, Seq: p.e.Seq, ID: p.e.ID})
			m.settle(g.Client, p.e.Seq, p.e.ID, evictedOutcome(p.e.Seq), now)
		}
		ob.entries = append([]memPushed(nil), ob.entries[plans[i].k:]...)
		ob.st.acked += uint64(plans[i].k)
		ob.st.bytes -= plans[i].freed
		for _, j := range g.Idx {
			ob.st.last++
			e := cloneEntry(msgs[j].Entry)
			e.Seq = ob.st.last
			ob.entries = append(ob.entries, memPushed{e: e, queued: now})
			m.records[e.ID] = record{Settled: Settled{ID: e.ID, Client: g.Client, Seq: e.Seq, Pending: true}}
			seqs[j] = e.Seq
		}
		ob.st.bytes += g.Size
	}
	pushid.Fill(seqs, sameAs)
	return seqs, evicted, nil
}

// OutboxInfo returns client's outbox; see [Outboxes.OutboxInfo].
func (m *Memory) OutboxInfo(client string) (OutboxInfo, error) {
	if err := checkClient(client); err != nil {
		return OutboxInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return OutboxInfo{}, ErrClosed
	}
	return m.outboxes[client].info(client), nil
}

func (ob *memOutbox) info(client string) OutboxInfo {
	info := OutboxInfo{Client: client}
	if ob == nil {
		return info
	}
	info.Stream, info.LastSeq, info.Acked = ob.stream, ob.st.last, ob.st.acked
	info.Messages, info.Bytes = len(ob.entries), ob.st.bytes
	if len(ob.entries) > 0 {
		info.FirstSeq = ob.entries[0].e.Seq
		info.Oldest = fromUnixMilli(ob.entries[0].queued)
	}
	return info
}

// ReadOutbox returns up to max entries of client's outbox with Seq >=
// from; see [Outboxes.ReadOutbox]. The entries are copies.
func (m *Memory) ReadOutbox(client string, from uint64, max int, maxBytes int) ([]Entry, error) {
	if err := checkClient(client); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	ob := m.outboxes[client]
	if ob == nil {
		return nil, nil
	}
	i := sort.Search(len(ob.entries), func(i int) bool { return ob.entries[i].e.Seq >= from })
	var (
		out   []Entry
		total int64
	)
	for ; i < len(ob.entries); i++ {
		if max > 0 && len(out) >= max {
			break
		}
		size := entrySize(&ob.entries[i].e)
		if maxBytes > 0 && len(out) > 0 && total+size > int64(maxBytes) {
			break
		}
		out = append(out, cloneEntry(ob.entries[i].e))
		total += size
	}
	return out, nil
}

// AckOutbox deletes client's entries with Seq <= upTo and records their
// settlements; see [Outboxes.AckOutbox].
func (m *Memory) AckOutbox(ctx context.Context, client string, upTo uint64, outcomes []Outcome) error {
	if m.isClosed() {
		return ErrClosed
	}
	if err := checkClient(client); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("queue: ack outbox: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	ob := m.outboxes[client]
	if ob == nil {
		return nil
	}
	upTo = min(upTo, ob.st.last)
	if upTo <= ob.st.acked {
		return nil
	}
	n := int(upTo - ob.st.acked)
	byseq := outcomeMap(outcomes)
	now := m.nowMilli()
	for _, p := range ob.entries[:n] {
		ob.st.bytes -= entrySize(&p.e)
		m.settle(client, p.e.Seq, p.e.ID, byseq, now)
	}
	ob.entries = append([]memPushed(nil), ob.entries[n:]...)
	ob.st.acked = upTo
	return nil
}

// Clients lists outboxes in client order after the given client; see
// [Outboxes.Clients].
func (m *Memory) Clients(after string, limit int) ([]OutboxInfo, error) {
	if limit <= 0 {
		limit = defaultClientsLimit
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	var names []string
	for c := range m.outboxes {
		if c > after {
			names = append(names, c)
		}
	}
	sort.Strings(names)
	out := make([]OutboxInfo, 0, min(limit, len(names)))
	for _, c := range names[:min(limit, len(names))] {
		out = append(out, m.outboxes[c].info(c))
	}
	return out, nil
}

// nowMilli is the time, in Unix ms, of settlement records and pruning.
func (m *Memory) nowMilli() int64 {
	if now := m.testNow.Load(); now != nil {
		return (*now)().UnixMilli()
	}
	return time.Now().UnixMilli()
}

// settle records entry (seq, id) of client's outbox as settled at now,
// with its outcome when outcomes lists seq. m.mu is held.
func (m *Memory) settle(client string, seq uint64, id protocol.MessageID, outcomes map[uint64]Outcome, now int64) {
	r := record{Settled: Settled{ID: id, Client: client, Seq: seq, At: fromUnixMilli(now)}}
	if o, ok := outcomes[seq]; ok {
		r.Code, r.Reason = o.Code, truncateReason(o.Reason)
	}
	if m.settleReported {
		// No MarkReported comes to prune: settling does, once a second.
		if now >= m.nextPrune {
			m.pruneLocked(now)
			m.nextPrune = now + 1000
		}
		if m.retention < 0 {
			delete(m.records, id)
			return
		}
		r.reported = true
	}
	m.records[id] = r
}

// pruneLocked deletes the reported records past the retention. m.mu is
// held.
func (m *Memory) pruneLocked(now int64) {
	for id, r := range m.records {
		if m.expired(r, now) {
			delete(m.records, id)
		}
	}
}

// expired reports whether r is a reported record past the retention.
func (m *Memory) expired(r record, now int64) bool {
	return r.reported && m.retention > 0 && unixMilli(r.At) < now-m.retention.Milliseconds()
}

// Status returns the record of message id; see [Settlements.Status].
func (m *Memory) Status(id protocol.MessageID) (Settled, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Settled{}, false, ErrClosed
	}
	r, ok := m.records[id]
	if ok && m.expired(r, m.nowMilli()) {
		delete(m.records, id)
		ok = false
	}
	if !ok {
		return Settled{}, false, nil
	}
	return r.Settled, true, nil
}

// Unreported returns up to max (<= 0: 100) settled records not yet
// reported, oldest settlement first; see [Settlements.Unreported].
func (m *Memory) Unreported(max int) ([]Settled, error) {
	if max <= 0 {
		max = defaultUnreported
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	var out []Settled
	for _, r := range m.records {
		if !r.Pending && !r.reported {
			out = append(out, r.Settled)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].At.Equal(out[j].At) {
			return out[i].At.Before(out[j].At)
		}
		return string(out[i].ID[:]) < string(out[j].ID[:])
	})
	return out[:min(max, len(out))], nil
}

// MarkReported marks the records of ids as reported (deletes them with a
// negative StatusRetention) and prunes the reported records past the
// retention; see [Settlements.MarkReported].
func (m *Memory) MarkReported(ctx context.Context, ids []protocol.MessageID) error {
	if m.isClosed() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("queue: mark reported: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for _, id := range ids {
		r, ok := m.records[id]
		if !ok || r.Pending || r.reported {
			continue
		}
		if m.retention < 0 {
			delete(m.records, id)
			continue
		}
		r.reported = true
		m.records[id] = r
	}
	m.pruneLocked(m.nowMilli())
	return nil
}

var (
	_ Store    = (*Memory)(nil)
	_ Outboxes = (*Memory)(nil)
)
