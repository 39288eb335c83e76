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

	"github.com/wsreliable/wsreliable/protocol"
)

// defaultClientsLimit is the page size of Clients for a limit <= 0.
const defaultClientsLimit = 100

// pushGroup is the messages of one Push call for one client.
type pushGroup struct {
	client string
	idx    []int                // their positions in the call, ascending
	values [][]byte             // Bolt: their encoded entries, parallel to idx
	ids    []protocol.MessageID // Bolt: their message IDs, parallel to idx
	size   int64                // their entrySize sum
}

// groupPushes groups msgs by client, in the order each client first
// appears.
func groupPushes(msgs []Push) []pushGroup {
	if len(msgs) == 1 {
		return []pushGroup{{client: msgs[0].Client, idx: []int{0}, size: entrySize(&msgs[0].Entry)}}
	}
	at := make(map[string]int, len(msgs))
	groups := make([]pushGroup, 0, len(msgs))
	for i := range msgs {
		g, ok := at[msgs[i].Client]
		if !ok {
			g = len(groups)
			at[msgs[i].Client] = g
			groups = append(groups, pushGroup{client: msgs[i].Client})
		}
		groups[g].idx = append(groups[g].idx, i)
		groups[g].size += entrySize(&msgs[i].Entry)
	}
	return groups
}

// makeRoom decides how many of the oldest entries of an outbox holding
// held entries of heldBytes in all must go so that g fits. next returns
// the size of the next oldest entry. Without eviction, or when g alone is
// over the limits, a push that does not fit fails with ErrFull.
func (l outboxLimits) makeRoom(g *pushGroup, held int, heldBytes int64, next func() (int64, error)) (k int, freed int64, err error) {
	n := len(g.idx)
	if l.fits(held+n, heldBytes+g.size) {
		return 0, 0, nil
	}
	if !l.evict || !l.fits(n, g.size) {
		return 0, 0, l.fullError(g.client, held, heldBytes, n, g.size)
	}
	for !l.fits(held-k+n, heldBytes-freed+g.size) {
		if k >= held {
			// Only a count that disagrees with the entries gets here.
			return 0, 0, l.fullError(g.client, held, heldBytes, n, g.size)
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

// Bucket and key names of the push outboxes. They are part of the file
// format. The push bucket is created by the first push, so files written
// before it existed open unchanged:
//
//	push/                  one nested bucket per client ID
//	  <client>/
//	    meta               outboxMeta, see encodeOutboxMeta
//	    entries/           entry values (encodeEntry) by seqKey
var (
	bucketPush    = []byte("push")
	bucketEntries = []byte("entries")
	keyOutboxMeta = []byte("meta")
)

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

// findOutbox returns client's bucket, its entries bucket and its meta
// from pb (which may be nil); found is false for a client never pushed
// to.
func findOutbox(pb *bolt.Bucket, client string) (cb, eb *bolt.Bucket, m outboxMeta, found bool, err error) {
	if pb == nil {
		return nil, nil, m, false, nil
	}
	key := []byte(client)
	if cb = pb.Bucket(key); cb == nil {
		if pb.Get(key) != nil {
			return nil, nil, m, false, fmt.Errorf("%w: push bucket holds a value, not an outbox, for client %q", ErrCorrupt, client)
		}
		return nil, nil, m, false, nil
	}
	if m, err = decodeOutboxMeta(cb.Get(keyOutboxMeta)); err != nil {
		return nil, nil, m, false, fmt.Errorf("client %q: %w", client, err)
	}
	if eb = cb.Bucket(bucketEntries); eb == nil {
		return nil, nil, m, false, fmt.Errorf("%w: outbox of client %q has no entries bucket", ErrCorrupt, client)
	}
	return cb, eb, m, true, nil
}

// outboxInfo describes client's outbox in pb (which may be nil).
func outboxInfo(pb *bolt.Bucket, client string) (OutboxInfo, error) {
	info := OutboxInfo{Client: client}
	_, eb, m, found, err := findOutbox(pb, client)
	if err != nil || !found {
		return info, err
	}
	info.Stream, info.LastSeq, info.Acked = m.stream, m.last, m.acked
	info.Messages, info.Bytes = int(m.count), m.bytes
	if m.count == 0 {
		return info, nil
	}
	k, v := eb.Cursor().First()
	if len(k) != 8 {
		return info, fmt.Errorf("%w: outbox of client %q: first key %x, count %d", ErrCorrupt, client, k, m.count)
	}
	h, err := decodeHead(v)
	if err != nil {
		return info, fmt.Errorf("outbox of client %q: entry %d: %w", client, binary.BigEndian.Uint64(k), err)
	}
	info.FirstSeq = binary.BigEndian.Uint64(k)
	info.Oldest = fromUnixMilli(h.queued)
	return info, nil
}

// pushReq is the part of a push request the writer fills in.
type pushReq struct {
	groups  []pushGroup
	seqs    []uint64 // in the order of the call's messages
	evicted []Evicted
	n       int // messages in the call
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
	groups := groupPushes(msgs)
	for i := range groups {
		g := &groups[i]
		g.values = make([][]byte, len(g.idx))
		g.ids = make([]protocol.MessageID, len(g.idx))
		for j, k := range g.idx {
			g.values[j] = values[k]
			g.ids[j] = msgs[k].Entry.ID
		}
	}
	p := &pushReq{groups: groups, n: len(msgs)}
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
		info, err = outboxInfo(tx.Bucket(bucketPush), client)
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
		_, eb, m, found, err := findOutbox(tx.Bucket(bucketPush), client)
		if err != nil || !found {
			return err
		}
		if from <= m.acked {
			from = m.acked + 1
		}
		out, err = readEntries(eb, from, max, maxBytes)
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
		pb := tx.Bucket(bucketPush)
		if pb == nil {
			return nil
		}
		c := pb.Cursor()
		k, v := c.Seek([]byte(after))
		if k != nil && after != "" && string(k) == after {
			k, v = c.Next()
		}
		for ; k != nil && len(out) < limit; k, v = c.Next() {
			if v != nil {
				return fmt.Errorf("%w: push bucket holds a value, not an outbox, for client %q", ErrCorrupt, k)
			}
			info, err := outboxInfo(pb, string(k))
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
func (b *Bolt) applyPush(tx *bolt.Tx, r *request, rc *recorder) (changed bool, err error) {
	p := r.push
	p.seqs, p.evicted, r.err = nil, nil, nil // a retried transaction starts over
	pb := tx.Bucket(bucketPush)

	// Read every outbox and decide its evictions before writing anything.
	type plan struct {
		cb, eb  *bolt.Bucket
		m       outboxMeta
		found   bool
		evicted []Evicted
		freed   int64
	}
	plans := make([]plan, len(p.groups))
	for i := range p.groups {
		g, pl := &p.groups[i], &plans[i]
		pl.cb, pl.eb, pl.m, pl.found, err = findOutbox(pb, g.client)
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
				key, v = c.First()
			} else {
				key, v = c.Next()
			}
			if len(key) != 8 {
				return 0, fmt.Errorf("%w: outbox of client %q: key %x where an entry was expected", ErrCorrupt, g.client, key)
			}
			seq := binary.BigEndian.Uint64(key)
			// A damaged entry is evicted like any other; it counts 0,
			// as deleteUpTo counts it.
			size, _ := storedSize(v)
			h, _ := decodeHead(v)
			pl.evicted = append(pl.evicted, Evicted{Client: g.client, Seq: seq, ID: h.id})
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

	if pb == nil {
		if pb, err = tx.CreateBucket(bucketPush); err != nil {
			return false, err
		}
		if err := bumpVersion(tx); err != nil {
			return false, err
		}
	}
	p.seqs = make([]uint64, p.n)
	for i := range p.groups {
		g, pl := &p.groups[i], &plans[i]
		if !pl.found {
			stream, err := uuid.NewRandom()
			if err != nil {
				return false, err
			}
			pl.m = outboxMeta{stream: protocol.StreamID(stream)}
			if pl.cb, err = pb.CreateBucket([]byte(g.client)); err != nil {
				return false, fmt.Errorf("outbox of client %q: %w", g.client, err)
			}
			if pl.eb, err = pl.cb.CreateBucket(bucketEntries); err != nil {
				return false, err
			}
		}
		// Keys only ever grow at the end, so full pages split no further.
		pl.eb.FillPercent = 0.95
		if k := uint64(len(pl.evicted)); k > 0 {
			settle := func(seq uint64, id protocol.MessageID) error {
				return rc.settle(g.client, seq, id, evictedOutcome(seq))
			}
			if _, err := b.deleteUpTo(pl.eb, pl.m.acked+k, settle); err != nil {
				return false, err
			}
			pl.m.acked += k
			pl.m.count -= min(k, pl.m.count)
			pl.m.bytes = max(pl.m.bytes-pl.freed, 0)
			p.evicted = append(p.evicted, pl.evicted...)
		}
		for j, v := range g.values {
			pl.m.last++
			if err := pl.eb.Put(seqKey(pl.m.last), v); err != nil {
				return false, err
			}
			if err := rc.put(record{Settled: Settled{ID: g.ids[j], Client: g.client, Seq: pl.m.last, Pending: true}}); err != nil {
				return false, err
			}
			p.seqs[g.idx[j]] = pl.m.last
		}
		pl.m.count += uint64(len(g.values))
		pl.m.bytes += g.size
		if err := pl.cb.Put(keyOutboxMeta, encodeOutboxMeta(&pl.m)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// applyAckOutbox performs r, an outbox ack, in tx; an outbox found
// damaged fails r alone. changed reports whether tx was written to.
func (b *Bolt) applyAckOutbox(tx *bolt.Tx, r *request, rc *recorder) (changed bool, err error) {
	client := string(r.key)
	r.err = nil // a retried transaction starts over
	cb, eb, m, found, err := findOutbox(tx.Bucket(bucketPush), client)
	if err != nil {
		r.err = fmt.Errorf("queue: ack outbox %s: %w", b.path, err)
		return false, nil
	}
	if !found {
		return false, nil
	}
	upTo := min(r.seq, m.last)
	if upTo <= m.acked {
		return false, nil
	}
	freed, err := b.deleteUpTo(eb, upTo, func(seq uint64, id protocol.MessageID) error {
		return rc.settle(client, seq, id, r.outcomes)
	})
	if err != nil {
		return false, err
	}
	m.count -= min(upTo-m.acked, m.count)
	m.acked = upTo
	m.bytes = max(m.bytes-freed, 0)
	if m.count == 0 {
		m.bytes = 0 // resets any drift from undecodable entries
	}
	return true, cb.Put(keyOutboxMeta, encodeOutboxMeta(&m))
}

var _ Outboxes = (*Bolt)(nil)

var (
	_ ServerStore = (*Bolt)(nil)
	_ ServerStore = (*Memory)(nil)
)
