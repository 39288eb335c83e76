package postgres

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wsreliable/wsreliable/internal/pushid"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// outboxRow is a wsr_outboxes row locked by a writer transaction, as the
// transaction has changed it so far.
type outboxRow struct {
	stream                       []byte
	last, acked, messages, bytes int64
	isNew                        bool // not in the table: inserted at the end
	dirty                        bool // changed: written at the end
}

// heldEntry is an entry considered for eviction.
type heldEntry struct {
	seq  int64
	id   protocol.MessageID
	size int64
}

// outboxTx is the outbox work of one writer transaction: the acks and
// pushes of a batch, applied in order against the locked outbox rows,
// their statements pipelined (sent when a later step must read what
// they wrote, and at the end).
type outboxTx struct {
	s    *Store
	ctx  context.Context
	tx   pgx.Tx
	now  int64
	rows map[string]*outboxRow

	pending pgx.Batch
	// entries to insert, in push order, not yet queued in pending
	eClient, eID, eHeaders, ePayload [][]byte
	eSeq, eExpires, eSize            []int64
	// settlement records, in the order they were made
	recs []settleRec
}

// lock locks the outbox rows of clients (sorted, distinct) in client
// order, so that transactions of several nodes cannot deadlock on them.
// A client without a row gets none; a push creates it.
func (x *outboxTx) lock(clients [][]byte) error {
	rows, _ := x.tx.Query(x.ctx, `
SELECT client, stream, last_seq, acked, messages, bytes FROM wsr_outboxes
WHERE client = ANY($1) ORDER BY client FOR UPDATE`, clients)
	var (
		client []byte
		r      outboxRow
	)
	_, err := pgx.ForEachRow(rows, []any{&client, &r.stream, &r.last, &r.acked, &r.messages, &r.bytes}, func() error {
		row := r
		row.stream = slices.Clone(r.stream)
		x.rows[string(client)] = &row
		return nil
	})
	return err
}

// queueEntries moves the entries gathered so far into pending.
func (x *outboxTx) queueEntries() {
	if len(x.eClient) == 0 {
		return
	}
	x.pending.Queue(`
INSERT INTO wsr_entries (client, seq, id, headers, payload, expires, size, queued)
SELECT t.c, t.s, t.i, t.h, t.p, t.e, t.z, $8
FROM unnest($1::bytea[], $2::bigint[], $3::bytea[], $4::bytea[], $5::bytea[], $6::bigint[], $7::bigint[]) AS t(c, s, i, h, p, e, z)`,
		x.eClient, x.eSeq, x.eID, x.eHeaders, x.ePayload, x.eExpires, x.eSize, x.now)
	x.eClient, x.eSeq, x.eID, x.eHeaders, x.ePayload, x.eExpires, x.eSize = nil, nil, nil, nil, nil, nil, nil
}

// flush sends everything pending.
func (x *outboxTx) flush() error {
	x.queueEntries()
	if x.pending.Len() == 0 {
		return nil
	}
	err := x.tx.SendBatch(x.ctx, &x.pending).Close()
	x.pending = pgx.Batch{}
	return err
}

// fence checks the claims of acks in one statement, share-locking the
// owner rows, and fails the fenced acks with ErrFenced.
func (x *outboxTx) fence(acks []*op) error {
	peers := make([][]byte, len(acks))
	epochs := make([]int64, len(acks))
	for i, o := range acks {
		peers[i], epochs[i] = []byte(o.peer), o.epoch
	}
	rows, _ := x.tx.Query(x.ctx, `
SELECT o.peer, o.epoch FROM wsr_owners o
JOIN unnest($1::bytea[], $2::bigint[]) AS t(p, e) ON o.peer = t.p AND o.epoch = t.e
WHERE o.owner = $3 ORDER BY o.peer FOR SHARE OF o`, peers, epochs, x.s.node)
	type claim struct {
		peer  string
		epoch int64
	}
	valid := map[claim]bool{}
	var (
		peer  []byte
		epoch int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&peer, &epoch}, func() error {
		valid[claim{string(peer), epoch}] = true
		return nil
	}); err != nil {
		return err
	}
	for _, o := range acks {
		if !valid[claim{o.peer, o.epoch}] {
			o.err = fencedError(o.kind.String(), o.peer)
		}
	}
	return nil
}

// ack queues the deletion of the entries o acks and the records of
// their settlements (see [queue.Outboxes.AckOutbox]).
func (x *outboxTx) ack(o *op) {
	row := x.rows[o.peer]
	if row == nil {
		return // unknown client: a no-op
	}
	upTo := min(o.seq, row.last)
	if upTo <= row.acked {
		return
	}
	outcomes := make(map[int64]queue.Outcome, len(o.outcomes))
	for _, oc := range o.outcomes {
		if _, ok := outcomes[int64(oc.Seq)]; !ok && oc.Seq <= 1<<63-1 {
			outcomes[int64(oc.Seq)] = oc
		}
	}
	row.acked, row.dirty = upTo, true
	x.queueEntries()
	x.pending.Queue(`DELETE FROM wsr_entries WHERE client = $1 AND seq <= $2 RETURNING seq, id, size`,
		[]byte(o.peer), upTo).Query(func(rows pgx.Rows) error {
		var (
			recs   []settleRec
			seq    int64
			id     []byte
			size   int64
			client = o.peer
		)
		if _, err := pgx.ForEachRow(rows, []any{&seq, &id, &size}, func() error {
			r := settleRec{client: client, seq: seq}
			copy(r.id[:], id)
			if oc, ok := outcomes[seq]; ok {
				r.code, r.reason = int32(oc.Code), oc.Reason
			}
			recs = append(recs, r)
			row.messages--
			row.bytes -= size
			return nil
		}); err != nil {
			return err
		}
		// Later sequences replace earlier ones for a repeated ID, as
		// records written one by one would.
		slices.SortFunc(recs, func(a, b settleRec) int { return cmp.Compare(a.seq, b.seq) })
		x.recs = append(x.recs, recs...)
		return nil
	})
}

// push applies push op o: all of it, or, when an outbox is over its
// limits (ErrFull), nothing, with o.err set. See [queue.Outboxes.Push].
func (x *outboxTx) push(o *op) error {
	// Messages whose ID has a record were pushed before: they keep
	// their sequence and are not queued again.
	fresh, seqs, sameAs, err := x.dedupe(o.msgs)
	if errors.Is(err, queue.ErrIDInUse) {
		o.err = fmt.Errorf("postgres: push: %w", err)
		return nil
	}
	if err != nil {
		return err
	}
	groups := groupPushes(o.msgs, fresh)
	type plan struct {
		row   outboxRow // the row after the push
		evict []heldEntry
	}
	plans := make([]plan, len(groups))
	for i := range groups {
		g := &groups[i]
		p := &plans[i]
		if r := x.rows[g.Client]; r != nil {
			p.row = *r
		} else {
			id := uuid.New()
			p.row = outboxRow{stream: id[:], isNew: true}
		}
		var err error
		if p.evict, err = x.makeRoom(g, &p.row); err != nil {
			if isFull(err) {
				o.err = fmt.Errorf("postgres: push: %w", err)
				return nil
			}
			return err
		}
	}
	o.seqs = seqs
	o.evicted = nil
	for i, g := range groups {
		p := &plans[i]
		ob := &p.row
		if k := len(p.evict); k > 0 {
			x.queueEntries() // an evicted entry may be one pushed earlier in this transaction
			x.pending.Queue(`DELETE FROM wsr_entries WHERE client = $1 AND seq <= $2`, []byte(g.Client), p.evict[k-1].seq)
			for _, e := range p.evict {
				o.evicted = append(o.evicted, queue.Evicted{Client: g.Client, Seq: uint64(e.seq), ID: e.id})
				x.recs = append(x.recs, settleRec{id: e.id, client: g.Client, seq: e.seq, code: int32(protocol.RejectEvicted), reason: evictedReason})
				ob.bytes -= e.size
			}
			ob.acked += int64(k)
			ob.messages -= int64(k)
		}
		for _, j := range g.Idx {
			e := &o.msgs[j].Entry
			ob.last++
			o.seqs[j] = uint64(ob.last)
			x.eClient, x.eSeq, x.eID = append(x.eClient, []byte(g.Client)), append(x.eSeq, ob.last), append(x.eID, e.ID[:])
			x.eHeaders, x.ePayload = append(x.eHeaders, encodeHeaders(e.Headers)), append(x.ePayload, nonNil(e.Payload))
			x.eExpires, x.eSize = append(x.eExpires, e.Expires), append(x.eSize, entrySize(e))
			x.recs = append(x.recs, settleRec{id: e.ID, client: g.Client, seq: ob.last, pending: true})
		}
		ob.messages += int64(len(g.Idx))
		ob.bytes += g.Size
		ob.dirty = true
		x.rows[g.Client] = ob
	}
	pushid.Fill(o.seqs, sameAs)
	o.hints = o.hints[:0]
	for _, g := range groups {
		o.hints = append(o.hints, hex.EncodeToString([]byte(g.Client)))
	}
	return nil
}

// dedupe sorts out the messages of msgs pushed before (see pushid.Sort):
// by the records this transaction made so far, then by those in the
// table that Status would find.
func (x *outboxTx) dedupe(msgs []queue.Push) (fresh []int, seqs []uint64, sameAs map[int]int, err error) {
	type pushed struct {
		client string
		seq    uint64
	}
	known := make(map[protocol.MessageID]pushed)
	for _, r := range x.recs {
		known[r.id] = pushed{r.client, uint64(r.seq)}
	}
	var ask [][]byte
	ms := make([]pushid.Msg, len(msgs))
	for i := range msgs {
		id := msgs[i].Entry.ID
		ms[i] = pushid.Msg{Client: msgs[i].Client, ID: id, New: msgs[i].NewID}
		if _, ok := known[id]; !ok && id != (protocol.MessageID{}) && !msgs[i].NewID {
			ask = append(ask, id[:])
		}
	}
	if len(ask) > 0 {
		rows, err := x.tx.Query(x.ctx, `SELECT id, client, seq FROM wsr_settled WHERE id = ANY($1) AND NOT (reported AND at < $2)`,
			ask, x.s.retentionCutoff())
		if err != nil {
			return nil, nil, nil, err
		}
		var (
			id, client []byte
			seq        int64
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &client, &seq}, func() error {
			var mid protocol.MessageID
			if len(id) != len(mid) {
				return fmt.Errorf("%w: wsr_settled id %x", queue.ErrCorrupt, id)
			}
			copy(mid[:], id)
			known[mid] = pushed{string(client), uint64(seq)} // asked only for IDs not known
			return nil
		})
		if err != nil {
			return nil, nil, nil, err
		}
	}
	return pushid.Sort(ms, func(id protocol.MessageID) (string, uint64, bool, error) {
		p, ok := known[id]
		return p.client, p.seq, ok, nil
	}, queue.ErrIDInUse)
}

// makeRoom decides which of the oldest entries of ob must go so that g
// fits, reading their sizes page by page (after sending what is pending,
// so that entries pushed earlier in the transaction are there). Without
// eviction, or when g alone is over the limits, a push that does not fit
// fails with queue.ErrFull.
func (x *outboxTx) makeRoom(g *pushGroup, ob *outboxRow) ([]heldEntry, error) {
	l, n := x.s.limits, int64(len(g.Idx))
	if l.fits(ob.messages+n, ob.bytes+g.Size) {
		return nil, nil
	}
	if !l.evict || !l.fits(n, g.Size) {
		return nil, l.fullError(g.Client, ob.messages, ob.bytes, len(g.Idx), g.Size)
	}
	if err := x.flush(); err != nil {
		return nil, err
	}
	var (
		evict []heldEntry
		freed int64
		page  []heldEntry
		after = ob.acked
	)
	for k := int64(0); !l.fits(ob.messages-k+n, ob.bytes-freed+g.Size); k++ {
		if len(page) == 0 {
			rows, _ := x.tx.Query(x.ctx, `SELECT seq, id, size FROM wsr_entries WHERE client = $1 AND seq > $2 ORDER BY seq LIMIT 256`,
				[]byte(g.Client), after)
			var (
				h  heldEntry
				id []byte
			)
			if _, err := pgx.ForEachRow(rows, []any{&h.seq, &id, &h.size}, func() error {
				copy(h.id[:], id)
				page = append(page, h)
				return nil
			}); err != nil {
				return nil, err
			}
			if len(page) == 0 {
				// Only counts that disagree with the entries get here.
				return nil, l.fullError(g.Client, ob.messages, ob.bytes, len(g.Idx), g.Size)
			}
			after = page[len(page)-1].seq
		}
		evict = append(evict, page[0])
		freed += page[0].size
		page = page[1:]
	}
	return evict, nil
}

// finish queues the settlement records and the changed outbox rows and
// sends everything.
func (x *outboxTx) finish() error {
	x.queueEntries()
	if len(x.recs) > 0 {
		q := x.s.opts.Queue
		x.pending.Queue(upsertSettledSQL, settledArgs(x.now, x.recs, q.SettleReported)...)
		if q.SettleReported && q.StatusRetention < 0 {
			// Reported records are not kept: these go at once.
			x.pending.Queue(`DELETE FROM wsr_settled WHERE reported AND id = ANY($1)`, settledArgs(x.now, x.recs, true)[0])
		}
	}
	var (
		newC, newS, upd        [][]byte
		newL, newA, newM, newB []int64
		updL, updA, updM, updB []int64
	)
	names := make([]string, 0, len(x.rows))
	for c, r := range x.rows {
		if r.dirty {
			names = append(names, c)
		}
	}
	slices.Sort(names)
	for _, c := range names {
		r := x.rows[c]
		if r.isNew {
			newC, newS = append(newC, []byte(c)), append(newS, r.stream)
			newL, newA, newM, newB = append(newL, r.last), append(newA, r.acked), append(newM, r.messages), append(newB, r.bytes)
		} else {
			upd = append(upd, []byte(c))
			updL, updA, updM, updB = append(updL, r.last), append(updA, r.acked), append(updM, r.messages), append(updB, r.bytes)
		}
	}
	if len(upd) > 0 {
		x.pending.Queue(`
UPDATE wsr_outboxes o SET last_seq = t.l, acked = t.a, messages = t.m, bytes = t.b
FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[]) AS t(c, l, a, m, b)
WHERE o.client = t.c`, upd, updL, updA, updM, updB)
	}
	if len(newC) > 0 {
		// A concurrent transaction creating one of these rows makes
		// this insert fail with a unique violation; the whole
		// transaction then runs again and finds the row.
		x.pending.Queue(`
INSERT INTO wsr_outboxes (client, stream, last_seq, acked, messages, bytes)
SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])`,
			newC, newS, newL, newA, newM, newB)
		// A new outbox names a peer, which gets a last-used time as a
		// binding or a watermark does, so that sweep removes the outbox
		// once it is empty and idle. A sweep deleting the peer's row
		// meanwhile holds its lock: the upsert waits, then inserts.
		x.pending.Queue(`
INSERT INTO wsr_peers (peer, last_used) SELECT unnest($1::bytea[]), $2
ON CONFLICT (peer) DO UPDATE SET last_used = GREATEST(wsr_peers.last_used, EXCLUDED.last_used)`, newC, x.now)
	}
	return x.flush()
}

// isFull reports an ErrFull refusal, which fails one push, not the batch.
func isFull(err error) bool { return errors.Is(err, queue.ErrFull) }
