package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wsreliable/wsreliable/protocol"
)

// Idle expiry: the per-peer state of the inbox role (a binding and a
// watermark per stream) would otherwise stay on disk for ever, whatever
// number of client IDs ever connected. Each peer has one last-used time,
// set by every SetWatermark, Bind and Touch; the writer removes the state
// of peers idle for longer than Options.IdleExpiry.
//
// Bucket names of the last-used times. They are part of the file format
// and are created by the first write that records a time; files without
// them open unchanged, and programs that do not know them ignore them:
//
//	last_used           8-byte Unix ms by peer
//	last_used_by_time   empty value by 8-byte Unix ms + peer
//
// Every last_used record has exactly one index key, made of its time and
// its peer. Expiry walks the index from its start, oldest first.
var (
	bucketLastUsed       = []byte("last_used")
	bucketLastUsedByTime = []byte("last_used_by_time")
)

// defaultIdleExpiry is Options.IdleExpiry for a zero field.
const defaultIdleExpiry = 30 * 24 * time.Hour

// idleChunk bounds the peers one commit expires and the keys one commit
// looks at to find peers without a last-used time.
const idleChunk = 1024

// touchGranularity is how stale a recorded last-used time may become
// before a write refreshes it: a hundredth of the expiry, at most an
// hour. Writes to a busy peer then cost nothing extra, and a peer
// expires at most that much early.
func touchGranularity(expiry time.Duration) int64 {
	if expiry <= 0 {
		expiry = defaultIdleExpiry
	}
	return min(expiry/100, time.Hour).Milliseconds()
}

// usedKey is the index key of peer last used at at (Unix ms).
func usedKey(at int64, peer []byte) []byte {
	k := make([]byte, 0, 8+len(peer))
	k = binary.BigEndian.AppendUint64(k, uint64(at))
	return append(k, peer...)
}

// usage records and expires last-used times within one write
// transaction. Its buckets are created at the first record.
type usage struct {
	tx     *bolt.Tx
	now    int64 // Unix ms
	skip   int64 // touchGranularity
	lb, ib *bolt.Bucket
	// recorded is set when a time was written, from which the writer
	// learns that an expiry is due one day; dirty when anything was.
	recorded, dirty bool
}

func (u *usage) buckets() error {
	if u.lb != nil {
		return nil
	}
	var err error
	if u.lb, err = u.tx.CreateBucketIfNotExists(bucketLastUsed); err != nil {
		return err
	}
	u.ib, err = u.tx.CreateBucketIfNotExists(bucketLastUsedByTime)
	// Times only grow: index keys mostly land at the end.
	if err == nil {
		u.ib.FillPercent = 0.95
	}
	return err
}

// touch records now as peer's last-used time, unless the recorded one
// is less than u.skip old. It reports whether it wrote anything.
func (u *usage) touch(peer []byte) (bool, error) {
	if len(peer) == 0 || len(peer)+8 > bolt.MaxKeySize {
		return false, nil
	}
	if err := u.buckets(); err != nil {
		return false, err
	}
	if v := u.lb.Get(peer); len(v) == 8 {
		at := int64(binary.BigEndian.Uint64(v))
		if at <= u.now && u.now-at < u.skip {
			return false, nil
		}
		if err := u.ib.Delete(usedKey(at, peer)); err != nil {
			return false, err
		}
	}
	return true, u.set(peer, u.now)
}

// set stores at as peer's last-used time; any previous index key must
// already be gone.
func (u *usage) set(peer []byte, at int64) error {
	if err := u.ib.Put(usedKey(at, peer), nil); err != nil {
		return err
	}
	u.recorded, u.dirty = true, true
	return u.lb.Put(peer, u64(uint64(at)))
}

// fillPos is how far the walk that gives every peer a last-used time
// has come: the bucket (an index into fillBuckets) and the last key
// looked at in it. The writer keeps it; it starts over at every Open.
type fillPos struct {
	bucket int
	after  []byte // nil: from the bucket's start
	done   bool
	// stopped is set with done when the walk gave up on a damaged
	// file: it did not see every peer.
	stopped bool
}

// fillBuckets are the buckets whose keys name peers, in walk order.
var fillBuckets = [][]byte{bucketBindings, bucketWatermarks, bucketPushMeta}

// peerOf is the peer that key k of fillBuckets[bucket] names; ok is
// false for a key that cannot have a last-used time: a malformed
// watermark key (Check reports it) or a peer too long for a time's
// index key.
func peerOf(bucket int, k []byte) (peer []byte, ok bool) {
	peer = k
	if bucket == 1 {
		if len(k) <= len(protocol.StreamID{}) {
			return nil, false
		}
		peer = k[:len(k)-len(protocol.StreamID{})]
	}
	return peer, len(peer)+8 <= bolt.MaxKeySize
}

// fill gives the peers named in the next idleChunk keys from pos a
// last-used time of now if they have none, so that the state of files
// written before last-used times existed (or by programs that do not
// keep them) expires too, counted from the Open that found it. It
// returns the position to resume from and whether it wrote anything.
func (u *usage) fill(pos fillPos) (fillPos, bool, error) {
	if u.tx.Bucket(bucketLastUsed) != nil {
		if err := u.buckets(); err != nil {
			return pos, false, err
		}
	}
	changed := false
	for seen := 0; !pos.done && seen < idleChunk; {
		bkt := u.tx.Bucket(fillBuckets[pos.bucket])
		var k []byte
		if bkt != nil {
			c := bkt.Cursor()
			if pos.after == nil {
				k, _ = c.First()
			} else if k, _ = c.Seek(pos.after); bytes.Equal(k, pos.after) {
				k, _ = c.Next()
			}
			for ; k != nil && seen < idleChunk; k, _ = c.Next() {
				seen++
				pos.after = bytes.Clone(k)
				peer, ok := peerOf(pos.bucket, pos.after)
				if !ok || (u.lb != nil && u.lb.Get(peer) != nil) {
					continue
				}
				if err := u.buckets(); err != nil {
					return pos, false, err
				}
				if err := u.set(bytes.Clone(peer), u.now); err != nil {
					return pos, false, err
				}
				changed = true
			}
		}
		if k == nil {
			pos.after = nil
			pos.bucket++
			pos.done = pos.bucket == len(fillBuckets)
		}
	}
	return pos, changed, nil
}

// expire removes, oldest first, up to idleChunk peers last used before
// cutoff (Unix ms): their binding, their watermarks, their empty push
// outbox's meta and their last-used time. A peer whose push outbox holds
// messages is kept and its time set to now: its pushes must not lose
// their stream. next is the last-used time of the oldest peer left (0:
// none); more is true when peers used before cutoff are left.
func (u *usage) expire(cutoff int64) (expired int, next int64, more bool, err error) {
	ib := u.tx.Bucket(bucketLastUsedByTime)
	if ib == nil {
		return 0, 0, false, nil
	}
	if err := u.buckets(); err != nil {
		return 0, 0, false, err
	}
	keys := make([][]byte, 0, 64)
	c := ib.Cursor()
	k, _ := c.First()
	for ; k != nil && len(keys) < idleChunk; k, _ = c.Next() {
		if len(k) <= 8 {
			return 0, 0, false, fmt.Errorf("%w: last used index key %x", ErrCorrupt, k)
		}
		if int64(binary.BigEndian.Uint64(k)) >= cutoff {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		u.dirty = true
		if err := u.ib.Delete(k); err != nil {
			return 0, 0, false, err
		}
		peer := k[8:]
		// An index key whose record has another time is stale: the
		// record has an index key of its own.
		if v := u.lb.Get(peer); len(v) != 8 || binary.BigEndian.Uint64(v) != binary.BigEndian.Uint64(k) {
			continue
		}
		o, err := findOutbox(u.tx, string(peer))
		if err != nil {
			return 0, 0, false, err
		}
		if o.found && o.m.count > 0 {
			if err := u.set(peer, u.now); err != nil {
				return 0, 0, false, err
			}
			continue
		}
		// An outbox with acknowledged ranges keeps its meta, so that the
		// client's sequences go on past them (Status reads a record by
		// its sequence), and with it a time of now: the meta is looked
		// at again an IdleExpiry later, when pruning has most likely
		// taken the ranges (StatusRetention is shorter by default).
		ranged := o.found && hasRanges(u.tx, string(peer))
		if o.found && !ranged {
			if err := o.mb.Delete(peer); err != nil {
				return 0, 0, false, err
			}
		}
		if err := u.forget(peer); err != nil {
			return 0, 0, false, err
		}
		if ranged {
			if err := u.set(peer, u.now); err != nil {
				return 0, 0, false, err
			}
		}
		expired++
	}
	// Kept peers were set to now: the oldest left is what comes due next.
	if k, _ := ib.Cursor().First(); len(k) > 8 {
		next = int64(binary.BigEndian.Uint64(k))
		more = next < cutoff
	}
	return expired, next, more, nil
}

// forget deletes peer's binding, watermarks and last-used record. A
// watermark key is the peer's bytes and 16 stream bytes, so a longer peer
// whose name starts with this one shares the key run: only keys of
// exactly len(peer)+16 bytes are the peer's.
func (u *usage) forget(peer []byte) error {
	bb, wb := u.tx.Bucket(bucketBindings), u.tx.Bucket(bucketWatermarks)
	if bb == nil || wb == nil {
		return fmt.Errorf("%w: missing bucket", ErrCorrupt)
	}
	if err := bb.Delete(peer); err != nil {
		return err
	}
	var mine [][]byte
	c := wb.Cursor()
	for k, _ := c.Seek(peer); bytes.HasPrefix(k, peer); k, _ = c.Next() {
		if len(k) == len(peer)+len(protocol.StreamID{}) {
			mine = append(mine, bytes.Clone(k))
		}
	}
	for _, k := range mine {
		if err := wb.Delete(k); err != nil {
			return err
		}
	}
	return u.lb.Delete(peer)
}

// Touch records now as the last-used time of peer's binding and
// watermarks, so that Options.IdleExpiry counts from it; a server calls
// it at each session start, since reads (Binding, Watermark) record
// nothing. It is group committed with the store's other writes and
// returns once committed. A time recorded less than a hundredth of the
// expiry (at most an hour) ago is left as it is, at no cost: no commit.
func (b *Bolt) Touch(ctx context.Context, peer string) error {
	if b.isClosed() {
		return ErrClosed
	}
	if peer == "" {
		return errEmptyPeer
	}
	if len(peer)+8 > bolt.MaxKeySize {
		return fmt.Errorf("queue: peer name of %d bytes is too long", len(peer))
	}
	fresh := false
	now := b.nowMilli()
	err := b.view(func(tx *bolt.Tx) error {
		if lb := tx.Bucket(bucketLastUsed); lb != nil {
			if v := lb.Get([]byte(peer)); len(v) == 8 {
				at := int64(binary.BigEndian.Uint64(v))
				fresh = at <= now && now-at < touchGranularity(b.opts.IdleExpiry)
			}
		}
		return nil
	})
	if err != nil {
		return b.wrap("touch", err)
	}
	if fresh {
		return nil
	}
	return b.submit(ctx, "touch", &request{kind: reqTouch, key: []byte(peer), done: make(chan struct{})})
}

// lastUsed returns when peer's binding and watermarks were last used
// (recorded by SetWatermark, Bind or Touch), zero if never recorded.
func (b *Bolt) lastUsed(peer string) (time.Time, error) {
	var at int64
	err := b.view(func(tx *bolt.Tx) error {
		if lb := tx.Bucket(bucketLastUsed); lb != nil && peer != "" && len(peer) <= bolt.MaxKeySize {
			if v := lb.Get([]byte(peer)); len(v) == 8 {
				at = int64(binary.BigEndian.Uint64(v))
			}
		}
		return nil
	})
	if err != nil {
		return time.Time{}, b.wrap("last used", err)
	}
	return fromUnixMilli(at), nil
}

// checkLastUsed checks the last-used records: both buckets or neither,
// every value 8 bytes with its key in the index, and every index key
// naming a record of its time.
func checkLastUsed(tx *bolt.Tx, version uint64, add func(format string, args ...any) bool) {
	lb, ib := tx.Bucket(bucketLastUsed), tx.Bucket(bucketLastUsedByTime)
	if lb == nil || ib == nil {
		if lb != nil || ib != nil {
			add("last used records without their index, or the index without them")
		}
		if version >= formatVersion4 {
			add("format version %d without last used records", version)
		}
		return
	}
	if version >= formatVersion4 {
		// Version 4 promises a time for every peer.
		for i, name := range fillBuckets {
			bkt := tx.Bucket(name)
			if bkt == nil {
				continue
			}
			c := bkt.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				if peer, ok := peerOf(i, k); ok && lb.Get(peer) == nil && !add("%s names %q, which has no last used time (format version %d)", name, peer, version) {
					return
				}
			}
		}
	}
	c := lb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(v) != 8 {
			if !add("last used record of %q has %d bytes", k, len(v)) {
				return
			}
			continue
		}
		if ib.Get(usedKey(int64(binary.BigEndian.Uint64(v)), k)) == nil && !add("last used record of %q is missing from its index", k) {
			return
		}
	}
	c = ib.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		ok := len(k) > 8
		if ok {
			v := lb.Get(k[8:])
			ok = len(v) == 8 && bytes.Equal(v, k[:8])
		}
		if !ok && !add("last used index key %x names no such record", k) {
			return
		}
	}
}
