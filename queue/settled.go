package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/wsreliable/wsreliable/protocol"
)

// Outcome is how one message settled without being handled; it rides
// with the ack that covers it ([Outboxes.AckOutbox], [Outbox.AckWith]).
type Outcome struct {
	Seq uint64 // the message's sequence in the outbox being acked
	// Code is a protocol.RejectCode value: 1 rejected, 2 expired, 3 too
	// large, 4 attempts exhausted, 5 evicted. 0 means acknowledged.
	Code   uint16
	Reason string // at most protocol.MaxReasonLen bytes are kept
}

// Settled is the store's record of one message: pending while it is
// queued in a push outbox, settled once acknowledged or dropped.
type Settled struct {
	ID      protocol.MessageID // the message's ID, the record's key
	Client  string             // the push outbox's client; "" for a client store's own outbox
	Seq     uint64             // its sequence in that outbox
	Pending bool               // still queued
	// Code is 0 when the message was acknowledged, else the code of its
	// [Outcome] (5 for an entry evicted by a push).
	Code   uint16
	Reason string    // the Outcome's reason; empty for an ack
	At     time.Time // when it settled, millisecond precision; zero while pending
}

// Settlements is the durable record of how messages settled, kept so
// that a sender can report every settlement at least once (even one
// made while it was down, or whose report a crash cut short) and answer
// what became of a message after it left the queue.
//
// Records are keyed by message ID, which senders are expected to keep
// unique; a later record for an ID replaces the earlier one. A settled
// record stays unreported until [Settlements.MarkReported] covers it and
// is never pruned before; a reported one is kept for
// Options.StatusRetention after it settled.
type Settlements interface {
	// Status returns the record of message id; found is false for an ID
	// the store has no record of (never queued, not tracked, or pruned).
	Status(id protocol.MessageID) (s Settled, found bool, err error)

	// Unreported returns up to max (<= 0: 100) settled records not yet
	// marked reported, oldest settlement first (ties in ID order).
	Unreported(max int) ([]Settled, error)

	// MarkReported durably marks the records of ids as reported, in one
	// group-committed write. Unknown, pending or already reported IDs
	// are skipped. With a negative Options.StatusRetention the records
	// are deleted instead.
	MarkReported(ctx context.Context, ids []protocol.MessageID) error
}

// defaultUnreported is the page size of Unreported for a max <= 0.
const defaultUnreported = 100

// evictedReason is the Reason of a record settled by an eviction.
const evictedReason = "evicted to make room"

// Bucket names of the settlement records. They are part of the file
// format; all three are created by the first record:
//
//	settled               record (encodeSettled) by 16-byte message ID
//	settled_unreported    empty value by 8-byte ms time + 16-byte ID
//	settled_reported      empty value by 8-byte ms time + 16-byte ID
//
// Every settled record has exactly one index key, made of its At and ID,
// in one of the two indexes; a pending record has none. The reported
// index is what pruning walks from its start, oldest first.
var (
	bucketSettled    = []byte("settled")
	bucketUnreported = []byte("settled_unreported")
	bucketReported   = []byte("settled_reported")
)

// Bucket names of the acknowledged ranges (Options.SettleReported; file
// format version 3), created by the first range:
//
//	settled_ranges        range value (encodeRange) by outboxPrefix(client)
//	                      followed by the 8-byte big-endian upTo of the ack
//	settled_ranges_time   empty value by 8-byte ms time + range key
//
// With SettleReported an ack does not rewrite the record of every entry
// it acknowledges: it writes one range, (from, upTo] acknowledged at a
// time, listing the IDs of those entries, whose records stay pending.
// Status reads such a record as settled (code 0, reported) at the
// range's time; pruning deletes the records a range lists once it is
// past the retention, then the range. Entries settled otherwise (an
// outcome, an eviction) get settled records as before.
var (
	bucketRanges     = []byte("settled_ranges")
	bucketRangesTime = []byte("settled_ranges_time")
)

// rangeVersion is the first byte of a range value; then the time (Unix
// ms) and from, 8 bytes each, and the 16-byte IDs.
const (
	rangeVersion  byte = 1
	rangeFixedLen      = 1 + 8 + 8
)

func encodeRange(at int64, from uint64, ids []protocol.MessageID) []byte {
	v := make([]byte, 0, rangeFixedLen+16*len(ids))
	v = append(v, rangeVersion)
	v = binary.BigEndian.AppendUint64(v, uint64(at))
	v = binary.BigEndian.AppendUint64(v, from)
	for i := range ids {
		v = append(v, ids[i][:]...)
	}
	return v
}

// decodeRange decodes a range value without copying the IDs out of v.
func decodeRange(v []byte) (at int64, from uint64, ids []byte, err error) {
	if len(v) < rangeFixedLen || v[0] != rangeVersion || (len(v)-rangeFixedLen)%16 != 0 {
		return 0, 0, nil, fmt.Errorf("%w: acknowledged range %x", ErrCorrupt, v[:min(len(v), 32)])
	}
	return int64(binary.BigEndian.Uint64(v[1:])), binary.BigEndian.Uint64(v[9:]), v[rangeFixedLen:], nil
}

// rangeSettled returns the record r, pending, as settled by the range
// covering its sequence, if any: acknowledged at the range's time, and
// reported.
func rangeSettled(tx *bolt.Tx, r record) (record, bool) {
	b := tx.Bucket(bucketRanges)
	if b == nil {
		return r, false
	}
	prefix := outboxPrefix(r.Client)
	k, v := b.Cursor().Seek(entryKey(prefix, r.Seq))
	if k == nil || !bytes.HasPrefix(k, prefix) || len(k) != len(prefix)+8 {
		return r, false
	}
	at, from, _, err := decodeRange(v)
	if err != nil || r.Seq <= from {
		return r, false
	}
	r.Pending, r.reported, r.At = false, true, fromUnixMilli(at)
	return r, true
}

// hasRanges reports whether client has acknowledged ranges: its outbox
// must then outlive idle expiry, or its sequences, started afresh, would
// fall in the old ranges.
func hasRanges(tx *bolt.Tx, client string) bool {
	b := tx.Bucket(bucketRanges)
	if b == nil {
		return false
	}
	prefix := outboxPrefix(client)
	k, _ := b.Cursor().Seek(prefix)
	return k != nil && bytes.HasPrefix(k, prefix)
}

// putRange records that client's entries (from, upTo], listed by ids
// (those acknowledged without an outcome), were acknowledged now.
func (rc *recorder) putRange(client string, from, upTo uint64, ids []protocol.MessageID) error {
	b, err := rc.tx.CreateBucketIfNotExists(bucketRanges)
	if err != nil {
		return err
	}
	tb, err := rc.tx.CreateBucketIfNotExists(bucketRangesTime)
	if err != nil {
		return err
	}
	if err := bumpVersion(rc.tx, formatVersion3); err != nil {
		return err
	}
	// Keys grow at the end of each client's run, times at the end.
	b.FillPercent, tb.FillPercent = 0.9, 0.95
	key := entryKey(outboxPrefix(client), upTo)
	if err := b.Put(key, encodeRange(rc.now, from, ids)); err != nil {
		return err
	}
	if err := tb.Put(append(binary.BigEndian.AppendUint64(nil, uint64(rc.now)), key...), nil); err != nil {
		return err
	}
	if rc.reported == 0 || rc.now < rc.reported {
		rc.reported = rc.now
	}
	return nil
}

// pruneRanges deletes the ranges acknowledged before cutoff (Unix ms),
// oldest first, with the records they list (pending records: an ID is
// pushed again only once its record is gone); it stops after pruneChunk
// records once at least one range went. next and more are as for prune.
func (rc *recorder) pruneRanges(cutoff int64) (deleted int, next int64, more bool, err error) {
	tb := rc.tx.Bucket(bucketRangesTime)
	if tb == nil {
		return 0, 0, false, nil
	}
	b, rb := rc.tx.Bucket(bucketRanges), rc.tx.Bucket(bucketSettled)
	if b == nil || rb == nil {
		return 0, 0, false, fmt.Errorf("%w: range index without ranges or records", ErrCorrupt)
	}
	var keys [][]byte
	c := tb.Cursor()
	k, _ := c.First()
	for ; k != nil && deleted < pruneChunk; k, _ = c.Next() {
		if len(k) < 8+2+8 {
			return 0, 0, false, fmt.Errorf("%w: range index key %x", ErrCorrupt, k)
		}
		if int64(binary.BigEndian.Uint64(k)) >= cutoff {
			break
		}
		keys = append(keys, bytes.Clone(k))
		if v := b.Get(k[8:]); v != nil {
			if _, _, ids, err := decodeRange(v); err == nil {
				deleted += len(ids) / 16
			}
		}
	}
	if k != nil {
		next = int64(binary.BigEndian.Uint64(k))
		more = next < cutoff
	}
	for _, k := range keys {
		if err := tb.Delete(k); err != nil {
			return 0, 0, false, err
		}
		rk := k[8:]
		v := b.Get(rk)
		if v == nil {
			continue
		}
		at, _, ids, err := decodeRange(v)
		if err != nil || at != int64(binary.BigEndian.Uint64(k)) {
			continue // a damaged or replaced range is left for Check
		}
		ids = bytes.Clone(ids) // the deletes below may move v
		for len(ids) >= 16 {
			id := ids[:16]
			ids = ids[16:]
			if old := rb.Get(id); old != nil {
				if r, err := decodeSettled(id, old); err == nil && r.Pending {
					if err := rb.Delete(id); err != nil {
						return 0, 0, false, err
					}
				}
			}
		}
		if err := b.Delete(rk); err != nil {
			return 0, 0, false, err
		}
	}
	return deleted, next, more, nil
}

// settledVersion is the first byte of a record; flag bits follow.
const (
	settledVersion byte = 1

	flagPending  byte = 1
	flagReported byte = 2
)

// settledFixedLen is the fixed part of a record: version, flags, code,
// at (Unix ms) and seq; then a uvarint client length, the client and the
// reason.
const settledFixedLen = 1 + 1 + 2 + 8 + 8

// record is a stored settlement record.
type record struct {
	Settled
	reported bool
}

func encodeSettled(r *record) []byte {
	v := make([]byte, 0, settledFixedLen+2+len(r.Client)+len(r.Reason))
	v = append(v, settledVersion)
	var flags byte
	if r.Pending {
		flags |= flagPending
	}
	if r.reported {
		flags |= flagReported
	}
	v = append(v, flags)
	v = binary.BigEndian.AppendUint16(v, r.Code)
	v = binary.BigEndian.AppendUint64(v, uint64(unixMilli(r.At)))
	v = binary.BigEndian.AppendUint64(v, r.Seq)
	v = binary.AppendUvarint(v, uint64(len(r.Client)))
	v = append(v, r.Client...)
	return append(v, r.Reason...)
}

// decodeSettled decodes the record of id stored in v, copying out of v.
// A malformed value yields an error wrapping ErrCorrupt (ErrVersion for
// a newer encoding).
func decodeSettled(id []byte, v []byte) (record, error) {
	var r record
	if len(id) != len(r.ID) {
		return r, fmt.Errorf("%w: settlement record key %x", ErrCorrupt, id)
	}
	copy(r.ID[:], id)
	if len(v) > 0 && v[0] > settledVersion {
		return r, fmt.Errorf("%w: settlement record version %d, this program reads up to %d", ErrVersion, v[0], settledVersion)
	}
	if len(v) < settledFixedLen+1 || v[0] != settledVersion || v[1]&^(flagPending|flagReported) != 0 {
		return r, fmt.Errorf("%w: settlement record of %x: %x", ErrCorrupt, id, v)
	}
	flags := v[1]
	r.Pending, r.reported = flags&flagPending != 0, flags&flagReported != 0
	r.Code = binary.BigEndian.Uint16(v[2:])
	at := int64(binary.BigEndian.Uint64(v[4:]))
	r.Seq = binary.BigEndian.Uint64(v[12:])
	d := decoder{b: v[settledFixedLen:]}
	r.Client = string(d.bytes(d.length()))
	if d.err != nil || (r.Pending && (r.reported || at != 0)) || (!r.Pending && at <= 0) {
		return r, fmt.Errorf("%w: settlement record of %x: %x", ErrCorrupt, id, v)
	}
	r.Reason = string(d.b)
	r.At = fromUnixMilli(at)
	return r, nil
}

// indexKey is the key of a record in the unreported and reported
// indexes: its settlement time, then its ID.
func indexKey(at int64, id protocol.MessageID) []byte {
	k := make([]byte, 0, 8+len(id))
	k = binary.BigEndian.AppendUint64(k, uint64(at))
	return append(k, id[:]...)
}

// truncateReason cuts reason to protocol.MaxReasonLen bytes on a rune
// boundary.
func truncateReason(reason string) string {
	if len(reason) <= protocol.MaxReasonLen {
		return reason
	}
	n := protocol.MaxReasonLen
	for n > 0 && !utf8.RuneStart(reason[n]) {
		n--
	}
	return reason[:n]
}

// recorder writes settlement records within one write transaction. Its
// buckets are created at the first record.
type recorder struct {
	tx  *bolt.Tx
	now int64 // Unix ms: the At of the records it settles
	// reportedAtSettle writes settled records reported
	// (Options.SettleReported); keep is false for a negative
	// StatusRetention, whose reported records are deleted. With both, an
	// outbox ack writes a range instead of a record per entry.
	reportedAtSettle, keep bool
	rb                     *bolt.Bucket
	ub                     *bolt.Bucket
	// reported is the earliest At put in the reported index (0: none),
	// from which the writer learns when pruning is next due.
	reported int64
}

// buckets opens (or creates) the record buckets.
func (rc *recorder) buckets() error {
	if rc.rb != nil {
		return nil
	}
	var err error
	if rc.rb, err = rc.tx.CreateBucketIfNotExists(bucketSettled); err != nil {
		return err
	}
	if rc.ub, err = rc.tx.CreateBucketIfNotExists(bucketUnreported); err != nil {
		return err
	}
	if _, err = rc.tx.CreateBucketIfNotExists(bucketReported); err != nil {
		return err
	}
	// Message IDs are UUIDv7 by default and times only grow: keys
	// mostly land at the end.
	rc.rb.FillPercent, rc.ub.FillPercent = 0.9, 0.95
	return bumpVersion(rc.tx, formatVersion2)
}

// put stores r under its ID, first removing the index key of the record
// it replaces. A settled r gets its At (now) and goes in the unreported
// index (in the reported one, or nowhere when not kept, with
// reportedAtSettle); a pending one gets no index key.
func (rc *recorder) put(r record) error {
	if err := rc.buckets(); err != nil {
		return err
	}
	if err := rc.unindex(r.ID); err != nil {
		return err
	}
	return rc.putNew(r)
}

// putNew is put for an ID known to have no record, or none that
// decodes: there is no index key to remove.
func (rc *recorder) putNew(r record) error {
	if err := rc.buckets(); err != nil {
		return err
	}
	r.reported = false
	r.Reason = truncateReason(r.Reason)
	if r.Pending {
		r.At, r.Code, r.Reason = time.Time{}, 0, ""
	} else {
		r.At = fromUnixMilli(rc.now)
		index := rc.ub
		if rc.reportedAtSettle && rc.keep {
			r.reported, index = true, rc.tx.Bucket(bucketReported)
			if rc.reported == 0 || rc.now < rc.reported {
				rc.reported = rc.now
			}
		}
		if rc.reportedAtSettle && !rc.keep {
			return rc.rb.Delete(r.ID[:])
		}
		if err := index.Put(indexKey(rc.now, r.ID), nil); err != nil {
			return err
		}
	}
	return rc.rb.Put(r.ID[:], encodeSettled(&r))
}

// unindex removes the index key of the record stored for id, if any. A
// record that does not decode has none that could be found.
func (rc *recorder) unindex(id protocol.MessageID) error {
	old := rc.rb.Get(id[:])
	if old == nil {
		return nil
	}
	o, err := decodeSettled(id[:], old)
	if err != nil || o.Pending {
		return nil
	}
	name := bucketUnreported
	if o.reported {
		name = bucketReported
	}
	return rc.tx.Bucket(name).Delete(indexKey(unixMilli(o.At), id))
}

// settle records the deleted entry (seq, id) of client's outbox as
// settled: with its outcome's code and reason when outcomes lists seq,
// acknowledged otherwise. An entry whose ID could not be read (a zero ID)
// gets no record.
func (rc *recorder) settle(client string, seq uint64, id protocol.MessageID, outcomes map[uint64]Outcome) error {
	if id == (protocol.MessageID{}) {
		return nil
	}
	r := record{Settled: Settled{ID: id, Client: client, Seq: seq}}
	if o, ok := outcomes[seq]; ok {
		r.Code, r.Reason = o.Code, o.Reason
	}
	return rc.put(r)
}

// markReported marks the settled, unreported records of ids as reported
// (or deletes them when keep is false) and reports whether it changed
// anything.
func (rc *recorder) markReported(ids []protocol.MessageID, keep bool) (bool, error) {
	if rc.tx.Bucket(bucketSettled) == nil {
		return false, nil
	}
	if err := rc.buckets(); err != nil {
		return false, err
	}
	pb := rc.tx.Bucket(bucketReported)
	changed := false
	for _, id := range ids {
		v := rc.rb.Get(id[:])
		if v == nil {
			continue
		}
		r, err := decodeSettled(id[:], v)
		if err != nil || r.Pending || r.reported {
			continue // a damaged record is left for Check to report
		}
		at := unixMilli(r.At)
		if err := rc.ub.Delete(indexKey(at, id)); err != nil {
			return false, err
		}
		changed = true
		if !keep {
			if err := rc.rb.Delete(id[:]); err != nil {
				return false, err
			}
			continue
		}
		r.reported = true
		if err := pb.Put(indexKey(at, id), nil); err != nil {
			return false, err
		}
		if err := rc.rb.Put(id[:], encodeSettled(&r)); err != nil {
			return false, err
		}
		if rc.reported == 0 || at < rc.reported {
			rc.reported = at
		}
	}
	return changed, nil
}

// pruneChunk bounds the reported records one commit prunes.
const pruneChunk = 1024

// prune deletes up to pruneChunk reported records that settled before
// cutoff (Unix ms), oldest first, and then a chunk of the acknowledged
// ranges (pruneRanges). next is the Unix ms settlement time of the
// oldest reported record or range left (0: none left); more is true when
// a chunk ended with records before cutoff still left.
func (rc *recorder) prune(cutoff int64) (deleted int, next int64, more bool, err error) {
	deleted, next, more, err = rc.pruneRecords(cutoff)
	if err != nil {
		return 0, 0, false, err
	}
	n, rnext, rmore, err := rc.pruneRanges(cutoff)
	if err != nil {
		return 0, 0, false, err
	}
	if next == 0 || rnext != 0 && rnext < next {
		next = rnext
	}
	return deleted + n, next, more || rmore, nil
}

// pruneRecords is prune's part for the reported index.
func (rc *recorder) pruneRecords(cutoff int64) (deleted int, next int64, more bool, err error) {
	pb := rc.tx.Bucket(bucketReported)
	if pb == nil {
		return 0, 0, false, nil
	}
	rb := rc.tx.Bucket(bucketSettled)
	if rb == nil {
		return 0, 0, false, fmt.Errorf("%w: reported index without records", ErrCorrupt)
	}
	keys := make([][]byte, 0, 64)
	c := pb.Cursor()
	k, _ := c.First()
	for ; k != nil && len(keys) < pruneChunk; k, _ = c.Next() {
		if len(k) != 8+16 {
			return 0, 0, false, fmt.Errorf("%w: reported index key %x", ErrCorrupt, k)
		}
		at := int64(binary.BigEndian.Uint64(k))
		if at >= cutoff {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	if k != nil {
		next = int64(binary.BigEndian.Uint64(k))
		more = next < cutoff
	}
	for _, k := range keys {
		if err := pb.Delete(k); err != nil {
			return 0, 0, false, err
		}
		// The index key names the record it was made for; a record
		// replaced since kept its own index key, which is not this one.
		id := k[8:]
		if v := rb.Get(id); v != nil {
			if r, err := decodeSettled(id, v); err == nil && r.reported && unixMilli(r.At) == int64(binary.BigEndian.Uint64(k)) {
				if err := rb.Delete(id); err != nil {
					return 0, 0, false, err
				}
			}
		}
	}
	return len(keys), next, more, nil
}

// Status returns the record of message id, read from the file; see
// [Settlements.Status]. It does not wait for the writer.
func (b *Bolt) Status(id protocol.MessageID) (Settled, bool, error) {
	var r record
	found := false
	err := b.view(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketSettled)
		if rb == nil {
			return nil
		}
		v := rb.Get(id[:])
		if v == nil {
			return nil
		}
		var err error
		r, err = decodeSettled(id[:], v)
		found = err == nil
		if found && r.Pending {
			r, _ = rangeSettled(tx, r)
		}
		return err
	})
	if err != nil {
		return Settled{}, false, b.wrap("status", err)
	}
	return r.Settled, found, nil
}

// Unreported returns up to max (<= 0: 100) settled records not yet
// marked reported, oldest settlement first; see
// [Settlements.Unreported]. It does not wait for the writer.
func (b *Bolt) Unreported(max int) ([]Settled, error) {
	if max <= 0 {
		max = defaultUnreported
	}
	var out []Settled
	err := b.view(func(tx *bolt.Tx) error {
		ub, rb := tx.Bucket(bucketUnreported), tx.Bucket(bucketSettled)
		if ub == nil || rb == nil {
			return nil
		}
		c := ub.Cursor()
		for k, _ := c.First(); k != nil && len(out) < max; k, _ = c.Next() {
			if len(k) != 8+16 {
				return fmt.Errorf("%w: unreported index key %x", ErrCorrupt, k)
			}
			v := rb.Get(k[8:])
			r, err := decodeSettled(k[8:], v)
			if err != nil {
				return err
			}
			if r.Pending || r.reported || unixMilli(r.At) != int64(binary.BigEndian.Uint64(k)) {
				return fmt.Errorf("%w: unreported index key %x names record %+v", ErrCorrupt, k, r)
			}
			out = append(out, r.Settled)
		}
		return nil
	})
	if err != nil {
		return nil, b.wrap("unreported", err)
	}
	return out, nil
}

// MarkReported marks the records of ids as reported in the writer's next
// transaction and returns once it is committed (and synced unless
// NoSync); see [Settlements.MarkReported]. An empty ids costs nothing.
func (b *Bolt) MarkReported(ctx context.Context, ids []protocol.MessageID) error {
	if b.isClosed() {
		return ErrClosed
	}
	if len(ids) == 0 {
		return nil
	}
	return b.submit(ctx, "mark reported", &request{
		kind: reqMarkReported, ids: ids, size: int64(len(ids)) * 16, done: make(chan struct{}),
	})
}

// outcomeMap indexes outcomes by sequence, the first of a sequence
// listed twice winning; nil for none.
func outcomeMap(outcomes []Outcome) map[uint64]Outcome {
	if len(outcomes) == 0 {
		return nil
	}
	m := make(map[uint64]Outcome, len(outcomes))
	for _, o := range outcomes {
		if _, ok := m[o.Seq]; !ok {
			o.Reason = truncateReason(o.Reason)
			m[o.Seq] = o
		}
	}
	return m
}
