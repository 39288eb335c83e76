package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/wsreliable/wsreliable/internal/pushid"
	"github.com/wsreliable/wsreliable/protocol"
)

// defaultClientsLimit is the page size of Clients for a limit <= 0.
const defaultClientsLimit = 100

// dedupe sorts out the messages of msgs that were pushed before (see
// pushid.Sort); fresh is nil when that is none of them.
func dedupe(msgs []Push, lookup pushid.Lookup) (fresh []int, seqs []uint64, sameAs map[int]int, err error) {
	ms := make([]pushid.Msg, len(msgs))
	for i := range msgs {
		ms[i] = pushid.Msg{Client: msgs[i].Client, ID: msgs[i].Entry.ID, New: msgs[i].NewID}
	}
	fresh, seqs, sameAs, err = pushid.Sort(ms, lookup, ErrIDInUse)
	if len(fresh) == len(msgs) {
		fresh = nil
	}
	return fresh, seqs, sameAs, err
}

// pushGroup is the messages of one Push call for one client.
type pushGroup = pushid.Group

// groupPushes groups the messages of msgs at positions fresh (nil: all)
// by client, in the order each client first appears.
func groupPushes(msgs []Push, fresh []int) []pushGroup {
	return pushid.GroupBy(len(msgs), fresh,
		func(i int) string { return msgs[i].Client },
		func(i int) int64 { return entrySize(&msgs[i].Entry) })
}

// makeRoom decides how many of the oldest entries of an outbox holding
// held entries of heldBytes in all must go so that g fits. next returns
// the size of the next oldest entry. Without eviction, or when g alone is
// over the limits, a push that does not fit fails with ErrFull.
func (l outboxLimits) makeRoom(g *pushGroup, held int, heldBytes int64, next func() (int64, error)) (k int, freed int64, err error) {
	n := len(g.Idx)
	if l.fits(held+n, heldBytes+g.Size) {
		return 0, 0, nil
	}
	if !l.evict || !l.fits(n, g.Size) {
		return 0, 0, l.fullError(g.Client, held, heldBytes, n, g.Size)
	}
	for !l.fits(held-k+n, heldBytes-freed+g.Size) {
		if k >= held {
			// Only a count that disagrees with the entries gets here.
			return 0, 0, l.fullError(g.Client, held, heldBytes, n, g.Size)
		}
		size, err := next()
		if err != nil {
			return 0, 0, err
		}
		k++
		freed += size
	}
	return k, freed, nil
}

// unixMilli is t in Unix milliseconds; a zero t is 0.
func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromUnixMilli is the inverse of unixMilli.
func fromUnixMilli(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// Bucket names of the push outboxes. They are part of the file format
// (version 2). Both buckets are created by the first push, so files
// written before it open unchanged. Two flat buckets, not a nested
// bucket per client: bbolt writes at least a page per nested bucket it
// touches, which made a 10,000-client fan-out write 10,000 pages.
//
//	push_meta       outboxMeta (encodeOutboxMeta) by client ID
//	push_entries    entry values (encodeEntry) by outboxPrefix(client)
//	                followed by the 8-byte big-endian sequence
//
// A client ID is any UTF-8 of 1 to protocol.MaxClientIDLen bytes, NUL
// included, so the entry keys carry the ID's length first: no client's
// keys can then start with another client's prefix, and each client's
// entries are one contiguous run in sequence order.
var (
	bucketPushMeta    = []byte("push_meta")
	bucketPushEntries = []byte("push_entries")
)

// outboxPrefix is the key prefix of client's entries in push_entries:
// the ID's length as 2 bytes big-endian, then the ID.
func outboxPrefix(client string) []byte {
	p := make([]byte, 0, 2+len(client)+8)
	p = binary.BigEndian.AppendUint16(p, uint16(len(client)))
	return append(p, client...)
}

// entryKey is the key of seq under prefix (nil for the client outbox).
func entryKey(prefix []byte, seq uint64) []byte {
	k := make([]byte, len(prefix), len(prefix)+8)
	copy(k, prefix)
	return binary.BigEndian.AppendUint64(k, seq)
}

// entrySeq returns the sequence of key k under prefix; ok is false when
// k is not under prefix (past the end of its run). A key under prefix of
// the wrong length is corrupt.
func entrySeq(prefix, k []byte) (seq uint64, ok bool, err error) {
	if k == nil || !bytes.HasPrefix(k, prefix) {
		return 0, false, nil
	}
	if len(k) != len(prefix)+8 {
		return 0, false, fmt.Errorf("%w: outbox key %x", ErrCorrupt, k)
	}
	return binary.BigEndian.Uint64(k[len(prefix):]), true, nil
}

// outboxMetaVersion is the first byte of an outbox meta value; another
// first byte was written by a newer (or broken) program.
const outboxMetaVersion byte = 1

// outboxMetaLen is the length of an outbox meta value: version, stream,
// then last, acked, bytes and count as uint64 big-endian.
const outboxMetaLen = 1 + 16 + 4*8

// outboxMeta is the stored state of one client's outbox. Its entries are
// exactly acked+1..last, count of them, of bytes (entrySize sum) in all.
type outboxMeta struct {
	stream protocol.StreamID
	last   uint64
	acked  uint64
	bytes  int64
	count  uint64
}

func encodeOutboxMeta(m *outboxMeta) []byte {
	v := make([]byte, 0, outboxMetaLen)
	v = append(v, outboxMetaVersion)
	v = append(v, m.stream[:]...)
	v = binary.BigEndian.AppendUint64(v, m.last)
	v = binary.BigEndian.AppendUint64(v, m.acked)
	v = binary.BigEndian.AppendUint64(v, uint64(m.bytes))
	return binary.BigEndian.AppendUint64(v, m.count)
}

// decodeOutboxMeta decodes v; a malformed value yields an error wrapping
// ErrCorrupt (or ErrVersion for a newer encoding).
func decodeOutboxMeta(v []byte) (outboxMeta, error) {
	var m outboxMeta
	if len(v) > 0 && v[0] > outboxMetaVersion {
		return m, fmt.Errorf("%w: outbox meta version %d, this program reads up to %d", ErrVersion, v[0], outboxMetaVersion)
	}
	if len(v) != outboxMetaLen || v[0] != outboxMetaVersion {
		return m, fmt.Errorf("%w: outbox meta %x", ErrCorrupt, v)
	}
	copy(m.stream[:], v[1:17])
	m.last = binary.BigEndian.Uint64(v[17:])
	m.acked = binary.BigEndian.Uint64(v[25:])
	bytes := binary.BigEndian.Uint64(v[33:])
	m.count = binary.BigEndian.Uint64(v[41:])
	m.bytes = int64(bytes)
	if m.stream.IsZero() || m.acked > m.last || m.count > m.last-m.acked || m.bytes < 0 {
		return m, fmt.Errorf("%w: outbox meta: stream %v, last %d, acked %d, count %d, bytes %d",
			ErrCorrupt, m.stream, m.last, m.acked, m.count, bytes)
	}
	return m, nil
}

// pushOutbox is one client's push outbox as a transaction sees it.
type pushOutbox struct {
	mb, eb *bolt.Bucket // push_meta and push_entries; nil before the first push
	client string
	prefix []byte // outboxPrefix(client)
	m      outboxMeta
	found  bool // false for a client never pushed to
}

// findOutbox returns client's outbox in tx. A client without meta but
// with entries, or a meta that does not decode, is corrupt.
func findOutbox(tx *bolt.Tx, client string) (o pushOutbox, err error) {
	o = pushOutbox{mb: tx.Bucket(bucketPushMeta), eb: tx.Bucket(bucketPushEntries), client: client, prefix: outboxPrefix(client)}
	if o.mb == nil {
		return o, nil
	}
	if o.eb == nil {
		return o, fmt.Errorf("%w: push meta without push entries", ErrCorrupt)
	}
	v := o.mb.Get([]byte(client))
	if v == nil {
		if k, _ := o.eb.Cursor().Seek(o.prefix); bytes.HasPrefix(k, o.prefix) {
			return o, fmt.Errorf("%w: entries of client %q without outbox meta", ErrCorrupt, client)
		}
		return o, nil
	}
	if o.m, err = decodeOutboxMeta(v); err != nil {
		return o, fmt.Errorf("client %q: %w", client, err)
	}
	o.found = true
	return o, nil
}

// outboxInfo describes client's outbox in tx.
func outboxInfo(tx *bolt.Tx, client string) (OutboxInfo, error) {
	info := OutboxInfo{Client: client}
	o, err := findOutbox(tx, client)
	if err != nil || !o.found {
		return info, err
	}
	m := o.m
	info.Stream, info.LastSeq, info.Acked = m.stream, m.last, m.acked
	info.Messages, info.Bytes = int(m.count), m.bytes
	if m.count == 0 {
		return info, nil
	}
	k, v := o.eb.Cursor().Seek(o.prefix)
	seq, ok, err := entrySeq(o.prefix, k)
	if err != nil || !ok {
		return info, fmt.Errorf("%w: outbox of client %q: first key %x, count %d", ErrCorrupt, client, k, m.count)
	}
	h, err := decodeHead(v)
	if err != nil {
		return info, fmt.Errorf("outbox of client %q: entry %d: %w", client, seq, err)
	}
	info.FirstSeq = seq
	info.Oldest = fromUnixMilli(h.queued)
	return info, nil
}

// pushReq is the part of a push request the writer fills in.
type pushReq struct {
	msgs    []Push
	values  [][]byte // msgs' encoded entries
	seqs    []uint64 // in the order of the call's messages
	evicted []Evicted
}

// Push appends every message to its client's outbox in the writer's next
// transaction, all or none, and returns their sequences in the order of
// msgs. It blocks until that transaction is committed (and synced unless
// NoSync). See [Outboxes.Push] for the limits. The store copies the
// entries; the caller may reuse their buffers.
//
// Errors: ErrClosed; ErrTooLarge; ErrFull; ctx's error while waiting for
// the writer; ErrDiskFull. Once the writer has taken the call it
// completes regardless of ctx.
func (b *Bolt) Push(ctx context.Context, msgs []Push) ([]uint64, []Evicted, error) {
	if b.isClosed() {
		return nil, nil, ErrClosed
	}
	if err := b.outLimits.checkPush(msgs); err != nil {
		return nil, nil, err
	}
	queued := time.Now().UnixMilli()
	// A fan-out repeats one entry: encode it once and store the same
	// value under every client (bbolt copies it when it commits).
	values := make([][]byte, len(msgs))
	var size int64
	var encoded int
	for i := range msgs {
		e := &msgs[i].Entry
		size += entrySize(e)
		if i > 0 && sameContent(e, &msgs[i-1].Entry) {
			continue
		}
		n := encodedLen(e, queued)
		if n > bolt.MaxValueSize {
			return nil, nil, fmt.Errorf("%w: encoded entry of %d bytes exceeds bbolt's value limit", ErrTooLarge, n)
		}
		encoded += n
	}
	buf := make([]byte, 0, encoded)
	for i := range msgs {
		if i > 0 && sameContent(&msgs[i].Entry, &msgs[i-1].Entry) {
			values[i] = values[i-1]
			continue
		}
		start := len(buf)
		buf = encodeEntry(buf, &msgs[i].Entry, queued)
		values[i] = buf[start:len(buf):len(buf)]
	}
	p := &pushReq{msgs: msgs, values: values}
	r := &request{kind: reqPush, push: p, size: size, done: make(chan struct{})}
	if err := b.submit(ctx, "push", r); err != nil {
		return nil, nil, err
	}
	return p.seqs, p.evicted, nil
}

// evictedOutcome is the outcome of the entry seq evicted by a push.
func evictedOutcome(seq uint64) map[uint64]Outcome {
	return map[uint64]Outcome{seq: {Seq: seq, Code: uint16(protocol.RejectEvicted), Reason: evictedReason}}
}

// sameContent reports whether a and b encode alike, Seq aside.
func sameContent(a, b *Entry) bool {
	return a.ID == b.ID && a.Expires == b.Expires && slices.Equal(a.Headers, b.Headers) && bytes.Equal(a.Payload, b.Payload)
}

// OutboxInfo returns client's outbox, read from the file; a client never
// pushed to has a zero Stream and zero counts. It does not wait for the
// writer.
func (b *Bolt) OutboxInfo(client string) (OutboxInfo, error) {
	if err := checkClient(client); err != nil {
		return OutboxInfo{}, err
	}
	var info OutboxInfo
	err := b.view(func(tx *bolt.Tx) error {
		var err error
		info, err = outboxInfo(tx, client)
		return err
	})
	if err != nil {
		return OutboxInfo{Client: client}, b.wrap("outbox info", err)
	}
	return info, nil
}

// ReadOutbox returns up to max entries of client's outbox with Seq >=
// from, by the rules of [Bolt.Read]. It does not wait for the writer.
func (b *Bolt) ReadOutbox(client string, from uint64, max int, maxBytes int) ([]Entry, error) {
	if err := checkClient(client); err != nil {
		return nil, err
	}
	var out []Entry
	err := b.view(func(tx *bolt.Tx) error {
		o, err := findOutbox(tx, client)
		if err != nil || !o.found {
			return err
		}
		if from <= o.m.acked {
			from = o.m.acked + 1
		}
		out, err = readEntries(o.eb, o.prefix, from, max, maxBytes)
		return err
	})
	if err != nil {
		return nil, b.wrap("read outbox "+strconv.Quote(client), err)
	}
	return out, nil
}

// AckOutbox deletes client's entries with Seq <= upTo in the writer's
// next transaction, with their settlement records, and returns once it is
// committed (and synced unless NoSync); see [Outboxes.AckOutbox]. All of
// the entries go in that one transaction.
func (b *Bolt) AckOutbox(ctx context.Context, client string, upTo uint64, outcomes []Outcome) error {
	if b.isClosed() {
		return ErrClosed
	}
	if err := checkClient(client); err != nil {
		return err
	}
	return b.submit(ctx, "ack outbox", &request{
		kind: reqAckOutbox, key: []byte(client), seq: upTo, outcomes: outcomeMap(outcomes), done: make(chan struct{}),
	})
}

// Clients lists the outboxes in client order, starting after the given
// client, at most limit (<= 0: 100); see [Outboxes.Clients].
func (b *Bolt) Clients(after string, limit int) ([]OutboxInfo, error) {
	if limit <= 0 {
		limit = defaultClientsLimit
	}
	var out []OutboxInfo
	err := b.view(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketPushMeta)
		if mb == nil {
			return nil
		}
		c := mb.Cursor()
		k, _ := c.Seek([]byte(after))
		if k != nil && after != "" && string(k) == after {
			k, _ = c.Next()
		}
		for ; k != nil && len(out) < limit; k, _ = c.Next() {
			info, err := outboxInfo(tx, string(k))
			if err != nil {
				return err
			}
			out = append(out, info)
		}
		return nil
	})
	if err != nil {
		return nil, b.wrap("clients", err)
	}
	return out, nil
}

// applyPush performs r, a push, in tx. A push over the limits, or to an
// outbox found damaged, fails alone (r.err wraps ErrFull or ErrCorrupt)
// and changes nothing; the other requests of the transaction go on. changed reports whether tx was written to; an error
// fails the whole transaction.
func (b *Bolt) applyPush(tx *bolt.Tx, r *request, rc *recorder, u *usage, runs pushRuns) (changed bool, err error) {
	p := r.push
	p.seqs, p.evicted, r.err = nil, nil, nil // a retried transaction starts over

	// Messages whose ID has a record were pushed before: they keep
	// their sequence and are not queued again.
	rb := tx.Bucket(bucketSettled)
	fresh, seqs, sameAs, err := dedupe(p.msgs, func(id protocol.MessageID) (string, uint64, bool, error) {
		if rb == nil {
			return "", 0, false, nil
		}
		v := rb.Get(id[:])
		if v == nil {
			return "", 0, false, nil
		}
		rec, err := decodeSettled(id[:], v)
		if err != nil {
			return "", 0, false, nil // a damaged record is left for Check; the push replaces it
		}
		return rec.Client, rec.Seq, true, nil
	})
	if err != nil {
		r.err = err // ErrIDInUse fails this push alone
		return false, nil
	}
	if fresh != nil && len(fresh) == 0 {
		p.seqs = seqs // all pushed before: nothing to write
		return false, nil
	}
	groups := groupPushes(p.msgs, fresh)

	// Read every outbox and decide its evictions before writing anything.
	type plan struct {
		pushOutbox
		evicted []Evicted
		freed   int64
	}
	plans := make([]plan, len(groups))
	for i := range groups {
		g, pl := &groups[i], &plans[i]
		pl.pushOutbox, err = findOutbox(tx, g.Client)
		if err != nil {
			// Nothing is written yet: only this push fails.
			r.err = fmt.Errorf("queue: push %s: %w", b.path, err)
			return false, nil
		}
		var c *bolt.Cursor
		var k int
		k, pl.freed, err = b.outLimits.makeRoom(g, int(pl.m.count), pl.m.bytes, func() (int64, error) {
			var key, v []byte
			if c == nil {
				c = pl.eb.Cursor()
				key, v = c.Seek(pl.prefix)
			} else {
				key, v = c.Next()
			}
			seq, ok, err := entrySeq(pl.prefix, key)
			if err == nil && !ok {
				err = fmt.Errorf("%w: outbox of client %q: key %x where an entry was expected", ErrCorrupt, g.Client, key)
			}
			if err != nil {
				return 0, err
			}
			// A damaged entry is evicted like any other; it counts 0,
			// as deleteUpTo counts it.
			size, _ := storedSize(v)
			h, _ := decodeHead(v)
			pl.evicted = append(pl.evicted, Evicted{Client: g.Client, Seq: seq, ID: h.id})
			return size, nil
		})
		if errors.Is(err, ErrFull) {
			r.err = err
			return false, nil
		}
		if err != nil {
			r.err = fmt.Errorf("queue: push %s: %w", b.path, err)
			return false, nil
		}
		pl.evicted = pl.evicted[:k]
	}

	mb, eb := tx.Bucket(bucketPushMeta), tx.Bucket(bucketPushEntries)
	if mb == nil {
		if mb, err = tx.CreateBucket(bucketPushMeta); err != nil {
			return false, err
		}
		if eb, err = tx.CreateBucketIfNotExists(bucketPushEntries); err != nil {
			return false, err
		}
		if err := bumpVersion(tx, formatVersion2); err != nil {
			return false, err
		}
	}
	// Each client's keys grow at the end of its run; runs of new
	// clients land anywhere. Pages are not filled beyond the default.
	p.seqs = seqs
	for i := range groups {
		g, pl := &groups[i], &plans[i]
		if !pl.found {
			stream, err := uuid.NewRandom()
			if err != nil {
				return false, err
			}
			pl.m = outboxMeta{stream: protocol.StreamID(stream)}
			// A new outbox names a peer: it gets a last-used time like
			// a binding or a watermark (see formatVersion4).
			if _, err := u.touch([]byte(g.Client)); err != nil {
				return false, err
			}
		}
		if k := uint64(len(pl.evicted)); k > 0 {
			settle := func(seq uint64, id protocol.MessageID) error {
				return rc.settle(g.Client, seq, id, evictedOutcome(seq))
			}
			if _, err := b.deleteUpTo(eb, pl.prefix, pl.m.acked+k, settle); err != nil {
				return false, err
			}
			pl.m.acked += k
			pl.m.count -= min(k, pl.m.count)
			pl.m.bytes = max(pl.m.bytes-pl.freed, 0)
			p.evicted = append(p.evicted, pl.evicted...)
		}
		for _, k := range g.Idx {
			pl.m.last++
			if err := eb.Put(entryKey(pl.prefix, pl.m.last), p.values[k]); err != nil {
				return false, err
			}
			// dedupe found no record of the ID: none to unindex.
			if err := rc.putNew(record{Settled: Settled{ID: p.msgs[k].Entry.ID, Client: g.Client, Seq: pl.m.last, Pending: true}}); err != nil {
				return false, err
			}
			p.seqs[k] = pl.m.last
		}
		pl.m.count += uint64(len(g.Idx))
		pl.m.bytes += g.Size
		runs[g.Client] += g.Size
		if err := mb.Put([]byte(g.Client), encodeOutboxMeta(&pl.m)); err != nil {
			return false, err
		}
	}
	pushid.Fill(p.seqs, sameAs)
	return true, nil
}

// pushRuns is the bytes of push entries one transaction appended to each
// client's outbox.
type pushRuns map[string]int64

// fill sets how full the transaction packs the push entries' pages.
// bbolt splits a page at its bucket's FillPercent, 50% by default, which
// suits keys inserted anywhere: a client's run of entries ends where the
// next client's begins, so one new entry lands in the middle of a page,
// and a page split 95/5 would be split again by the next one, leaving a
// trail of nearly empty pages. When every client written to got at least
// a page's worth of new entries, each run's new entries fill pages of
// their own and the next client's keys ride in the last one, which has
// room: the pages are packed to 95%, half as many written and synced.
func (r pushRuns) fill(tx *bolt.Tx) {
	if len(r) == 0 {
		return
	}
	page := int64(tx.DB().Info().PageSize)
	for _, n := range r {
		if n < page {
			return
		}
	}
	if eb := tx.Bucket(bucketPushEntries); eb != nil {
		eb.FillPercent = 0.95
	}
}

// applyAckOutbox performs r, an outbox ack, in tx; an outbox found
// damaged fails r alone. changed reports whether tx was written to,
// drained whether it left a non-empty outbox empty.
func (b *Bolt) applyAckOutbox(tx *bolt.Tx, r *request, rc *recorder) (changed, drained bool, err error) {
	client := string(r.key)
	r.err = nil // a retried transaction starts over
	o, err := findOutbox(tx, client)
	if err != nil {
		r.err = fmt.Errorf("queue: ack outbox %s: %w", b.path, err)
		return false, false, nil
	}
	if !o.found {
		return false, false, nil
	}
	m := o.m
	upTo := min(r.seq, m.last)
	if upTo <= m.acked {
		return false, false, nil
	}
	// With ranges, the entries acknowledged without an outcome share
	// one range; the others get records.
	ranged := rc.reportedAtSettle && rc.keep
	var ids []protocol.MessageID
	freed, err := b.deleteUpTo(o.eb, o.prefix, upTo, func(seq uint64, id protocol.MessageID) error {
		if _, ok := r.outcomes[seq]; ranged && !ok {
			if id != (protocol.MessageID{}) {
				ids = append(ids, id)
			}
			return nil
		}
		return rc.settle(client, seq, id, r.outcomes)
	})
	if err != nil {
		return false, false, err
	}
	if len(ids) > 0 {
		if err := rc.putRange(client, m.acked, upTo, ids); err != nil {
			return false, false, err
		}
	}
	m.count -= min(upTo-m.acked, m.count)
	m.acked = upTo
	m.bytes = max(m.bytes-freed, 0)
	if m.count == 0 {
		m.bytes = 0 // resets any drift from undecodable entries
	}
	return true, m.count == 0, o.mb.Put([]byte(client), encodeOutboxMeta(&m))
}

var _ Outboxes = (*Bolt)(nil)

var (
	_ ServerStore = (*Bolt)(nil)
	_ ServerStore = (*Memory)(nil)
)
