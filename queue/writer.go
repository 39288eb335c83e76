package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wsreliable/wsreliable/protocol"
)

type reqKind uint8

const (
	reqAppend reqKind = iota + 1
	reqWatermark
	reqBind
	reqCompact
	reqPush
	reqAckOutbox
	reqMarkReported
	reqTouch
)

// request is one write handed to the writer goroutine. The writer fills
// seq (for appends), push (for pushes) and err, then closes done.
type request struct {
	kind   reqKind
	key    []byte   // watermark or binding key; client of an outbox ack; peer of a touch
	value  []byte   // identity
	values [][]byte // encoded entries of an append
	push   *pushReq // a push's messages and results
	size   int64    // entrySize of an append or a push
	seq    uint64   // watermark: value; append: assigned sequence; outbox ack: upTo
	// outcomes of an outbox ack, by sequence; nil for none.
	outcomes map[uint64]Outcome
	ids      []protocol.MessageID // MarkReported's IDs
	err      error
	done     chan struct{}
}

// errNoChange rolls back a transaction that would write nothing (every
// push in it refused, every outbox ack a no-op), so it costs no fsync.
var errNoChange = errors.New("queue: nothing to commit")

// submit hands r to the writer and waits for its answer. It honours ctx
// and Close only until the writer has taken r; from then on r completes.
func (b *Bolt) submit(ctx context.Context, op string, r *request) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("queue: %s: %w", op, err)
	}
	select {
	case b.reqs <- r:
	case <-ctx.Done():
		return fmt.Errorf("queue: %s: %w", op, ctx.Err())
	case <-b.closing:
		return ErrClosed
	}
	<-r.done
	return r.err
}

// defaultAckDelay is how long acked entries wait for an append to share
// their delete commit before the writer commits the delete on its own.
const defaultAckDelay = 50 * time.Millisecond

// run is the writer goroutine. b.reqs is unbuffered, so callers waiting to
// send are the queue: after taking the first request the writer drains
// every sender already waiting (up to MaxBatch requests and MaxBatchBytes)
// without blocking, and commits them in one transaction. Because a send
// completes only while the writer receives, no request can slip in after
// the writer has exited; its senders see b.closing instead.
//
// Every commit also deletes the entries acked since the last one. Acks
// that find the writer idle wait b.ackDelay for company, then are committed
// alone; so are those left when the store closes.
func (b *Bolt) run() {
	defer close(b.done)
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	armed := false
	// pruneT fires when reported records become due for pruning or idle
	// peers for expiry.
	pruneT := time.NewTimer(time.Hour)
	pruneT.Stop()
	pruneArmed := false
	var next *request // taken but left for the next batch (byte budget)
	shared := false   // the last batch held more than one request
	// release fires once the writer has been idle for releaseIdle after
	// a commit: then, and under a steady load once its commits have
	// written releaseAfter bytes of pages or releaseEvery has passed, it
	// releases the pages of the mapping.
	release := time.NewTimer(time.Hour)
	release.Stop()
	defer release.Stop()
	// A release of a large map takes tens of milliseconds (28 ms for
	// 580 MiB): it runs beside the writer, one at a time, and is done
	// before the writer is.
	var (
		releasing   sync.WaitGroup
		busy        atomic.Bool
		lastRelease = time.Now()
		// Pages the commits allocated (bbolt's count, which restarts
		// with the DB a compaction opens) at the last release.
		pagesAt int64
	)
	defer releasing.Wait()
	pages := func() int64 { st := b.db.Stats(); return st.TxStats.GetPageCount() }
	releaseNow := func() {
		lastRelease, pagesAt = time.Now(), pages()
		if busy.CompareAndSwap(false, true) {
			releasing.Go(func() {
				defer busy.Store(false)
				b.releasePages()
			})
		}
	}
	// quiet fires once the writer has been idle for b.compactIdle while
	// a compaction is wanted (see maybeCompact).
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	defer quiet.Stop()
	committed := func() {
		if !b.compactWanted.IsZero() {
			if time.Since(b.compactWanted) >= compactPause {
				b.maybeCompact(true)
			} else {
				quiet.Reset(time.Duration(b.compactIdle.Load()))
			}
		}
		n := pages()
		pagesAt = min(pagesAt, n)
		if time.Since(lastRelease) >= releaseEvery || (n-pagesAt)*int64(b.db.Info().PageSize) >= b.releaseAfter.Load() {
			releaseNow()
		}
		release.Reset(time.Duration(b.releaseIdle.Load()))
	}
	for {
		first := next
		next = nil
		if first == nil {
			if !armed && b.acksPending() {
				idle.Reset(time.Duration(b.ackDelay.Load()))
				armed = true
			}
			if due := b.dueAt(); !pruneArmed && due != 0 {
				pruneT.Reset(time.Duration(max(due-b.nowMilli(), 0)) * time.Millisecond)
				pruneArmed = true
			}
			select {
			case first = <-b.reqs:
			case <-b.wake:
				continue
			case <-release.C:
				if pages()*int64(b.db.Info().PageSize) >= b.reopenAfter.Load() {
					releasing.Wait() // its read transaction is on the old handle
					b.reopen()
					pagesAt = 0
				}
				releaseNow()
				continue
			case <-quiet.C:
				if !b.compactWanted.IsZero() {
					b.maybeCompact(true)
				}
				continue
			case <-idle.C:
				armed = false
				ok := b.commit(nil)
				committed()
				switch {
				case !ok:
					// Retry a failing delete (a full disk) less eagerly.
					idle.Reset(time.Second)
					armed = true
				case b.acksPending():
					// A long drain leaves more than one commit deletes.
					idle.Reset(0)
					armed = true
				}
				continue
			case <-pruneT.C:
				pruneArmed = false
				ok := b.commit(nil)
				committed()
				if !ok {
					pruneT.Reset(time.Second)
					pruneArmed = true
				}
				continue
			case <-b.closing:
				for b.acksPending() && b.commit(nil) {
				}
				return
			}
			if armed {
				idle.Stop()
				armed = false
			}
		}
		batch := []*request{first}
		bytes := first.size
		if shared {
			// The last commit answered several callers, who are
			// likely back with their next writes but may not have
			// run yet: the writer, woken by the first, would take it
			// alone. Let them queue first (a yield, not a wait: with
			// nothing else runnable it returns at once). 16 blocking
			// senders got about 45% more through.
			runtime.Gosched()
		}
	drain:
		for len(batch) < b.opts.MaxBatch {
			select {
			case r := <-b.reqs:
				if bytes+r.size > int64(b.opts.MaxBatchBytes) {
					next = r
					break drain
				}
				batch = append(batch, r)
				bytes += r.size
			default:
				break drain
			}
		}
		b.commit(batch)
		shared = len(batch) > 1
		committed()
		// The commit may have moved pruneAt or expireAt: arm again.
		if pruneArmed {
			pruneT.Stop()
			pruneArmed = false
		}
	}
}

// Releasing the mapped pages. bbolt reads the file through a shared
// memory map, and every page a read or a write's search touched stays
// mapped into the process, counted in its RSS, until the mapping is
// replaced: a server that queued pushes for 100,000 offline clients held
// hundreds of MiB of pages it would not read again until those clients
// came back. A store that is not being written to, and one under load
// every 64 MiB of pages written (a write's search maps about the pages
// it rewrites) or every minute, hands them back to the page cache (see
// releaseMapping), as a store that read its file with pread would hold
// them: disk cache the kernel reclaims first, not memory of the
// process. The pages still in use are mapped in again by the next read,
// a minor fault each.
const (
	defaultReleaseIdle  = 5 * time.Second
	defaultReleaseAfter = 64 << 20
	releaseEvery        = time.Minute
)

// Reopening the file. For every page it reused from its freelist, a
// bbolt handle remembers which transaction did (its allocs map), until
// the page is freed again: an entry for each such page still in use,
// which only closing the handle gives back. A server that queued 10
// pushes for each of 100,000 offline clients held 3.6 MiB of it, and a
// bigger store holds more: memory that grows with what the store keeps.
// Once a handle's commits have written defaultReopenAfter of pages, the
// writer, when next idle for releaseIdle, replaces it with a new handle on
// the same file (reopenDB, which keeps the file locked throughout).
const defaultReopenAfter = 64 << 20

// errReopenUnsupported: this platform does not reopen the file.
var errReopenUnsupported = errors.New("queue: reopen unsupported here")

// reopen replaces b.db with a new handle on the same file. Only the
// writer calls it, between commits; readers wait only for the swap.
func (b *Bolt) reopen() {
	db, file, err := reopenDB(b.path, &b.opts, b.file)
	switch {
	case errors.Is(err, errReopenUnsupported):
		return
	case errors.Is(err, ErrLocked):
		b.log.Error("queue: reopen failed and lost the file lock; another process may open the file", "path", b.path, "err", err)
		return
	case err != nil:
		b.log.Warn("queue: reopen failed; the current handle stays", "path", b.path, "err", err)
		return
	}
	b.swapDB(db, file, "reopen")
	b.reopens.Add(1)
	b.log.Debug("queue: reopened", "path", b.path)
}

// swapDB makes db, which holds file, the store's handle, and closes the
// one it replaces (after a compaction or a reopen, named by why). Readers
// wait only for the swap. Only the writer calls it.
func (b *Bolt) swapDB(db *bolt.DB, file *os.File, why string) {
	b.dbMu.Lock()
	old := b.db
	b.db, b.file = db, file
	b.dbMu.Unlock()
	if err := old.Close(); err != nil {
		b.log.Warn("queue: close the handle replaced by a "+why, "path", b.path, "err", err)
	}
}

// releasePages releases the pages of the mapping. The read transaction
// it runs in keeps the mapping in place: bbolt remaps (a write growing
// the file past it) only once no read transaction is open, and a
// compaction or Close replaces the DB only under dbMu, which view holds.
func (b *Bolt) releasePages() {
	err := b.view(func(tx *bolt.Tx) error {
		return releaseMapping(tx.DB().Info().Data, tx.Size())
	})
	if err != nil {
		b.log.Debug("queue: releasing mapped pages", "path", b.path, "err", err)
		return
	}
	b.releases.Add(1)
}

// dueAt is the earliest of pruneAt and expireAt that is set, 0 if
// neither is.
func (b *Bolt) dueAt() int64 {
	switch {
	case b.pruneAt == 0:
		return b.expireAt
	case b.expireAt == 0:
		return b.pruneAt
	}
	return min(b.pruneAt, b.expireAt)
}

// acksPending reports whether acked entries await their delete commit.
func (b *Bolt) acksPending() bool {
	b.stMu.Lock()
	defer b.stMu.Unlock()
	return b.ackTo > b.state.acked
}

// txIn is what one write transaction is asked to do besides its writes.
type txIn struct {
	ackTo    uint64             // delete the client outbox up to here
	outcomes map[uint64]Outcome // the client outbox's outcomes (TrackSettled)
	now      int64              // Unix ms: At of the records settled
	prune    bool               // prune reported records settled before now-retention
	expire   bool               // expire peers idle since before now-IdleExpiry
	fill     fillPos            // where to go on giving peers a last-used time
}

// txOut is what a write transaction did.
type txOut struct {
	freed    int64 // entrySize sum of the client outbox entries deleted
	changed  bool  // anything was written
	reported int64 // earliest At newly reported (0: none)
	pruned   bool  // pruning ran; next and more are valid
	next     int64 // At of the oldest reported record left (0: none)
	more     bool  // records due for pruning are left
	drained  bool  // a push outbox was acked to empty
	recorded bool  // a last-used time was written
	timed    bool  // the file became version 4 (see Bolt.timed)

	expired   bool    // expiry ran; expNext, expMore and fill are valid
	expNext   int64   // last-used time of the oldest peer left (0: none)
	expMore   bool    // peers due for expiry, or peers to fill in, are left
	fill      fillPos // where the fill walk stopped
	freedRecs bool    // pruning or expiry deleted something and is done for now
}

// commit runs batch, and the deletes of the entries acked since the last
// commit, in one transaction and answers every request in batch. A failed
// transaction fails every request and changes nothing. It reports whether
// the transaction (if any) succeeded.
func (b *Bolt) commit(batch []*request) bool {
	in := txIn{now: b.nowMilli()}
	b.stMu.Lock()
	st := b.state
	in.ackTo = b.ackTo
	if len(b.ackOutcomes) > 0 {
		in.outcomes = make(map[uint64]Outcome, len(b.ackOutcomes))
		for seq, o := range b.ackOutcomes {
			in.outcomes[seq] = o
		}
	}
	b.stMu.Unlock()
	before := st
	in.prune = b.pruneAt != 0 && in.now >= b.pruneAt
	in.expire = b.expireAt != 0 && in.now >= b.expireAt
	in.fill = b.fill

	var writes, compacts []*request
	for _, r := range batch {
		if r.kind == reqCompact {
			compacts = append(compacts, r)
		} else {
			writes = append(writes, r)
		}
	}

	var err error
	var out txOut
	ran := len(writes) > 0 || in.ackTo > st.acked || in.prune || in.expire
	if ran {
		err = b.update(func(tx *bolt.Tx) error {
			st = before // a retry of fn must start over
			var ferr error
			out, ferr = b.apply(tx, writes, in, &st)
			if ferr == nil && !out.changed {
				return errNoChange
			}
			return ferr
		})
		if errors.Is(err, errNoChange) {
			err, ran = nil, false
		}
		if h := b.testAfterCommit.Load(); h != nil && err == nil && ran {
			(*h)()
		}
	}
	if err == nil && out.pruned {
		// Also when nothing was pruned and the transaction rolled back:
		// what it found still holds.
		switch {
		case out.more:
			b.pruneAt = in.now
		case out.next != 0:
			b.pruneAt = out.next + b.retention.Milliseconds()
		default:
			b.pruneAt = 0
		}
	}
	if err == nil && out.expired {
		b.fill = out.fill
		switch {
		case out.expMore:
			b.expireAt = in.now
		case out.expNext != 0:
			b.expireAt = out.expNext + b.opts.IdleExpiry.Milliseconds()
		default:
			b.expireAt = 0
		}
	}
	if err != nil {
		if errors.Is(err, ErrDiskFull) {
			if !b.diskFull {
				b.log.Warn("queue: disk full", "path", b.path, "err", err)
			}
			b.diskFull = true
		}
		for _, r := range writes {
			r.err = err
			r.seq = 0
		}
	} else if ran {
		if b.diskFull {
			b.log.Info("queue: commits succeed again", "path", b.path)
			b.diskFull = false
		}
		if out.reported != 0 && b.retention > 0 {
			if due := out.reported + b.retention.Milliseconds(); b.pruneAt == 0 || due < b.pruneAt {
				b.pruneAt = due
			}
		}
		b.timed = b.timed || out.timed
		if out.recorded && b.opts.IdleExpiry > 0 && b.expireAt == 0 {
			b.expireAt = in.now + b.opts.IdleExpiry.Milliseconds()
		}
		b.commits.Add(1)
		b.stMu.Lock()
		b.state = st
		// Acks released their room when they were made; appends
		// reserved theirs before they were submitted.
		b.ackBytes = max(b.ackBytes-out.freed, 0)
		if b.ackTo == st.acked {
			b.ackBytes = 0
		}
		for seq := range b.ackOutcomes {
			if seq <= st.acked {
				delete(b.ackOutcomes, seq)
			}
		}
		b.stMu.Unlock()
	}
	for _, r := range writes {
		close(r.done)
	}

	if len(compacts) > 0 {
		cerr := b.compact()
		for _, r := range compacts {
			r.err = cerr
			close(r.done)
		}
	} else if err == nil && (st.acked > before.acked && st.messages() == 0 || (out.drained || out.freedRecs) && !b.compactPaused()) {
		b.maybeCompact(false)
	}
	return err == nil
}

// A compaction copies the live data with every write waiting: 42 MiB of
// a server's pushes and settlement records took 1.3 s, in the middle of
// a stream whose outbox had just drained. So one that would copy more
// than compactNowMax is left for a quiet moment: until the writer has
// been idle for a second, or, under a load that never pauses, until
// it has waited compactPause. A client's drained queue, the common case,
// leaves little to copy and is compacted at once.
const (
	compactNowMax      = 4 << 20
	defaultCompactIdle = time.Second
)

// maybeCompact compacts the file if it is worth it (shouldCompact), at
// once when the copy is small or quiet is true, else marks it wanted
// (b.compactWanted): after every commit the run loop runs it once
// compactPause has passed, or waits for the writer to be idle. Only the
// writer calls it.
func (b *Bolt) maybeCompact(quiet bool) {
	worth, live := b.shouldCompact()
	if !worth {
		b.compactWanted = time.Time{}
		return
	}
	if !quiet && live > compactNowMax {
		if b.compactWanted.IsZero() {
			b.compactWanted = time.Now()
		}
		return
	}
	b.compactWanted = time.Time{}
	if err := b.compact(); err != nil {
		b.log.Warn("queue: compaction failed", "path", b.path, "err", err)
	}
}

// apply deletes the entries up to in.ackTo, performs writes and prunes
// when asked, all in tx, advancing st. A push refused for its limits
// fails alone (its err is set) and the others go on; any error returned
// fails the whole transaction.
func (b *Bolt) apply(tx *bolt.Tx, writes []*request, in txIn, st *state) (txOut, error) {
	out, err := b.applyWrites(tx, writes, in, st)
	if err == nil {
		if fail := b.testFailCommit.Load(); fail != nil {
			err = (*fail)()
		}
	}
	return out, err
}

func (b *Bolt) applyWrites(tx *bolt.Tx, writes []*request, in txIn, st *state) (txOut, error) {
	var out txOut
	mb, ob := tx.Bucket(bucketMeta), tx.Bucket(bucketOutbox)
	wb, bb := tx.Bucket(bucketWatermarks), tx.Bucket(bucketBindings)
	if mb == nil || ob == nil || wb == nil || bb == nil {
		return out, fmt.Errorf("%w: %s: missing bucket", ErrCorrupt, b.path)
	}
	rc := &recorder{tx: tx, now: in.now, reportedAtSettle: b.opts.SettleReported, keep: b.retention >= 0}
	u := &usage{tx: tx, now: in.now, skip: touchGranularity(b.opts.IdleExpiry)}
	runs := make(pushRuns)
	// Keys only ever grow at the end, so full pages split no further.
	ob.FillPercent = 0.95
	old := *st
	if in.ackTo > st.acked {
		// The rest, if any, goes in the next commits.
		upTo := min(in.ackTo, st.acked+maxDeletes)
		var settle func(uint64, protocol.MessageID) error
		if b.opts.TrackSettled {
			settle = func(seq uint64, id protocol.MessageID) error { return rc.settle("", seq, id, in.outcomes) }
		}
		var err error
		if out.freed, err = b.deleteUpTo(ob, nil, upTo, settle); err != nil {
			return out, err
		}
		out.changed = true
		st.acked = upTo
		st.bytes = max(st.bytes-out.freed, 0)
		if st.acked == st.last {
			st.bytes = 0 // resets any drift from undecodable entries
		}
	}
	for _, r := range writes {
		var err error
		var c bool
		switch r.kind {
		case reqAppend:
			c = true
			r.seq = st.last + 1
			for _, v := range r.values {
				st.last++
				if err := ob.Put(seqKey(st.last), v); err != nil {
					return out, err
				}
			}
			st.bytes += r.size
		case reqWatermark:
			// A watermark never moves back: a lower one is not written.
			if old := wb.Get(r.key); len(old) == 8 && binary.BigEndian.Uint64(old) >= r.seq {
				c, err = u.touch(r.key[:len(r.key)-len(protocol.StreamID{})])
			} else if err = wb.Put(r.key, u64(r.seq)); err == nil {
				c = true
				_, err = u.touch(r.key[:len(r.key)-len(protocol.StreamID{})])
			}
		case reqBind:
			if err = bb.Put(r.key, r.value); err == nil {
				c = true
				_, err = u.touch(r.key)
			}
		case reqTouch:
			c, err = u.touch(r.key)
		case reqPush:
			c, err = b.applyPush(tx, r, rc, u, runs)
		case reqAckOutbox:
			var drained bool
			c, drained, err = b.applyAckOutbox(tx, r, rc)
			out.drained = out.drained || drained
		case reqMarkReported:
			c, err = rc.markReported(r.ids, b.retention >= 0)
		}
		out.changed = out.changed || c
		if err != nil {
			return out, err
		}
	}
	runs.fill(tx)
	if in.prune {
		n, next, more, err := rc.prune(in.now - b.retention.Milliseconds())
		switch {
		case errors.Is(err, ErrCorrupt):
			// A damaged index must not fail the writes it rides with:
			// pruning stops until the next Open; Check reports it.
			b.log.Warn("queue: pruning settlement records stopped", "path", b.path, "err", err)
			out.pruned = true
		case err != nil:
			return out, err
		default:
			out.pruned, out.next, out.more = true, next, more
			out.changed = out.changed || n > 0
			out.freedRecs = out.freedRecs || (n > 0 && !more)
		}
	}
	if in.expire {
		if err := b.applyExpiry(u, in, &out); err != nil {
			return out, err
		}
	}
	// The walk has seen every peer: promise it to later Opens.
	fill := in.fill
	if out.expired {
		fill = out.fill
	}
	if fill.done && !fill.stopped && !b.timed && b.opts.IdleExpiry > 0 && tx.Bucket(bucketLastUsed) != nil {
		if err := bumpVersion(tx, formatVersion4); err != nil {
			return out, err
		}
		out.timed, out.changed = true, true
	}
	out.recorded = u.recorded
	out.reported = rc.reported
	if *st != old {
		for _, kv := range []struct {
			k []byte
			v uint64
		}{{keyLastSeq, st.last}, {keyAcked, st.acked}, {keyBytes, uint64(st.bytes)}} {
			if err := mb.Put(kv.k, u64(kv.v)); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// applyExpiry gives the next chunk of peers without one a last-used time
// and then expires the next chunk of peers idle for longer than
// IdleExpiry (see [usage.fill] and [usage.expire]), filling in out.
func (b *Bolt) applyExpiry(u *usage, in txIn, out *txOut) error {
	fill, filled, err := u.fill(in.fill)
	if err == nil {
		var n int
		n, out.expNext, out.expMore, err = u.expire(in.now - b.opts.IdleExpiry.Milliseconds())
		out.changed = out.changed || filled || u.dirty
		out.freedRecs = out.freedRecs || (n > 0 && !out.expMore)
	}
	switch {
	case errors.Is(err, ErrCorrupt):
		// As for pruning: expiry stops until the next Open; Check
		// reports the damage.
		b.log.Warn("queue: idle expiry stopped", "path", b.path, "err", err)
		out.expired, out.expNext, out.expMore, out.fill = true, 0, false, fillPos{done: true, stopped: true}
		return nil
	case err != nil:
		return err
	}
	out.expired, out.fill = true, fill
	out.expMore = out.expMore || !fill.done
	return nil
}

// deleteChunk is how many keys deleteUpTo collects before deleting them;
// maxDeletes bounds the entries one commit deletes, so that a drained
// backlog of millions is deleted in commits of bounded size and memory.
const (
	deleteChunk = 1024
	maxDeletes  = 1 << 16
)

// deleteUpTo deletes the outbox entries with Seq <= upTo under key prefix
// (nil for the client outbox), walking from the first, and returns their
// total entrySize. When settle is not nil it
// is called with the sequence and message ID of each deleted entry (a
// zero ID for an entry too damaged to tell). It collects a chunk of
// keys with a cursor, deletes them, then seeks past them: a bbolt cursor
// skips an element when Next follows Delete, and First after deletes
// walks every emptied leaf again.
func (b *Bolt) deleteUpTo(ob *bolt.Bucket, prefix []byte, upTo uint64, settle func(seq uint64, id protocol.MessageID) error) (int64, error) {
	var freed int64
	seqs := make([]uint64, 0, deleteChunk)
	var ids []protocol.MessageID
	if settle != nil {
		ids = make([]protocol.MessageID, 0, deleteChunk)
	}
	key := entryKey(prefix, 0)
	seqAt := key[len(prefix):]
	first := true
	for {
		seqs, ids = seqs[:0], ids[:0]
		c := ob.Cursor()
		var k, v []byte
		if first && prefix == nil {
			k, v = c.First()
		} else {
			k, v = c.Seek(key)
		}
		first = false
		for ; len(seqs) < deleteChunk; k, v = c.Next() {
			seq, ok, err := entrySeq(prefix, k)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", b.path, err)
			}
			if !ok || seq > upTo {
				break
			}
			size, err := storedSize(v)
			if err != nil {
				// Deleting an acked entry must not fail because it is
				// damaged; only the byte count loses its share.
				b.log.Warn("queue: deleting undecodable entry", "path", b.path, "seq", seq, "err", err)
				size = 0
			}
			freed += size
			seqs = append(seqs, seq)
			if settle != nil {
				h, _ := decodeHead(v)
				ids = append(ids, h.id)
			}
		}
		if len(seqs) == 0 {
			return freed, nil
		}
		// One cursor for all the deletes: Bucket.Delete would allocate
		// a cursor, and its search stack, per key.
		for _, seq := range seqs {
			binary.BigEndian.PutUint64(seqAt, seq)
			if k, _ := c.Seek(key); !bytes.Equal(k, key) {
				return 0, fmt.Errorf("%w: %s: outbox entry %d vanished while deleting", ErrCorrupt, b.path, seq)
			}
			if err := c.Delete(); err != nil {
				return 0, err
			}
		}
		for i, id := range ids {
			if err := settle(seqs[i], id); err != nil {
				return 0, err
			}
		}
		binary.BigEndian.PutUint64(seqAt, seqs[len(seqs)-1]+1)
	}
}

// update runs fn in one read-write transaction: one fsync unless NoSync.
// Only the writer goroutine calls it, so it reads b.db without dbMu.
func (b *Bolt) update(fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if err == nil || errors.Is(err, ErrCorrupt) {
			return
		}
		if isNoSpace(err) {
			err = &diskFullError{path: b.path, err: err}
		} else {
			err = fmt.Errorf("queue: commit %s: %w", b.path, err)
		}
	}()
	defer recoverCorrupt(b.path, &err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return b.db.Update(fn)
}

// shouldCompact reports whether the file is worth compacting, and how
// many bytes of live data a compaction would copy: above
// CompactSize, more than twice its size after the last compaction (so a
// store whose watermarks alone exceed CompactSize is not rewritten after
// every ack), and at most half of it live data (so one client's outbox
// draining does not rewrite a file full of other clients' pushes while
// they stream). Only the writer calls it.
func (b *Bolt) shouldCompact() (worth bool, live int64) {
	if b.opts.CompactSize < 0 {
		return false, 0
	}
	fi, err := os.Stat(b.path)
	if err != nil {
		return false, 0
	}
	if fi.Size() <= b.opts.CompactSize || fi.Size() <= 2*b.compactedSize {
		return false, 0
	}
	var hwm int64
	if err := b.db.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil }); err != nil {
		return false, 0
	}
	live = hwm - int64(b.db.Stats().FreeAlloc)
	return 2*live <= fi.Size(), live
}

// compactPause is the least time between the last compaction and one
// the writer starts because a push outbox drained or records were
// pruned: a busy server whose push outboxes keep draining would
// otherwise copy its live data again and again. A drained client outbox
// and Compact are not held back.
const compactPause = time.Minute

// compactPaused reports whether the last compaction was within
// compactPause.
func (b *Bolt) compactPaused() bool {
	return !b.compactedAt.IsZero() && time.Since(b.compactedAt) < compactPause
}

// compactTxBytes is how many bytes of keys and values one transaction of
// a compaction's copy carries. bbolt keeps a transaction's copied values
// and its dirty pages in memory until it commits (unsynced: the copy is
// synced once at the end), so this bounds the memory a compaction takes.
// With 64 MiB transactions, compacting 185 MiB of live data (a server's
// pushes and settlement records) mapped 400 MiB of heap and took 4.1 s;
// with 256 KiB it took 2.0 s and the heap did not grow.
const compactTxBytes = 256 << 10

// compact copies the live data into a temp file next to the store, syncs
// it, renames it over the store and switches to it. It runs on the writer
// goroutine, so no write runs meanwhile; readers are excluded only while
// the handle is swapped.
//
// The copy is opened (and locked) before the rename, so the lock on the
// path is never released. A crash before the rename leaves the original
// untouched plus a temp file that the next Open removes; rename is atomic,
// so a crash after it leaves the complete copy.
func (b *Bolt) compact() (err error) {
	start := time.Now()
	var sizeBefore int64
	if fi, err := os.Stat(b.path); err == nil {
		sizeBefore = fi.Size()
	}
	dir := filepath.Dir(b.path)
	f, err := os.CreateTemp(dir, tempPrefix(b.path)+"*")
	if err != nil {
		return b.compactError(err)
	}
	tmp := f.Name()
	_ = f.Close()

	var dst *bolt.DB
	done := false
	defer func() {
		if !done {
			if dst != nil {
				_ = dst.Close()
			}
			_ = os.Remove(tmp)
		}
	}()
	defer recoverCorrupt(b.path, &err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))

	var dstFile *os.File
	dst, err = bolt.Open(tmp, 0o600, &bolt.Options{
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			dstFile = f
			return f, err
		},
		Timeout:      b.opts.LockTimeout,
		NoSync:       true, // synced once below
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		dst = nil
		return b.compactError(err)
	}
	if err := bolt.Compact(dst, b.db, compactTxBytes); err != nil {
		return b.compactError(err)
	}
	if err := dst.Sync(); err != nil {
		return b.compactError(err)
	}
	if err := os.Rename(tmp, b.path); err != nil {
		return b.compactError(err)
	}
	done = true
	if err := syncDir(dir); err != nil {
		// The rename happened; only its durability across a power cut
		// is in doubt, and either file is a complete store.
		b.log.Warn("queue: sync directory after compaction", "dir", dir, "err", err)
	}
	dst.NoSync = b.opts.NoSync

	b.swapDB(dst, dstFile, "compaction")

	if fi, err := os.Stat(b.path); err == nil {
		b.compactedSize = fi.Size()
	}
	b.compactedAt = time.Now()
	b.log.Info("queue: compacted", "path", b.path, "size_before", sizeBefore,
		"size_after", b.compactedSize, "duration", time.Since(start))
	return nil
}

func (b *Bolt) compactError(err error) error {
	if isNoSpace(err) {
		return &diskFullError{path: b.path, err: err}
	}
	return fmt.Errorf("queue: compact %s: %w", b.path, err)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
