package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

type opKind uint8

const (
	opWatermark opKind = iota + 1
	opBind
	opTouch
	opAckOutbox
	opMarkReported
	opPush
)

func (k opKind) String() string {
	switch k {
	case opWatermark:
		return "set watermark"
	case opBind:
		return "bind"
	case opTouch:
		return "touch"
	case opAckOutbox:
		return "ack outbox"
	case opMarkReported:
		return "mark reported"
	case opPush:
		return "push"
	}
	return fmt.Sprintf("op %d", uint8(k))
}

// op is one write handed to the writer goroutine, which sets err and
// closes done.
type op struct {
	kind     opKind
	peer     string // the peer (client) the write is for; "" for opMarkReported
	stream   protocol.StreamID
	seq      int64 // watermark value; ack upTo
	identity string
	outcomes []queue.Outcome
	ids      []protocol.MessageID
	epoch    int64 // the claim the write is fenced by
	// a push's messages, grouped, and its results
	msgs    []queue.Push
	groups  []pushGroup
	seqs    []uint64
	evicted []queue.Evicted
	hints   []string // hex client IDs to NOTIFY once committed
	size    int64    // a push's entry sizes, against MaxBatchBytes
	err     error
	done    chan struct{}
}

// submit checks o, fences it with this store's claim on its peer, hands
// it to the writer and waits for its commit. It honours ctx and Close
// only until the writer has taken o; from then on o completes.
func (s *Store) submit(ctx context.Context, o *op) error {
	if s.isClosed() {
		return queue.ErrClosed
	}
	name := o.kind.String()
	if o.kind != opMarkReported && o.kind != opPush {
		if o.kind == opAckOutbox {
			if err := checkClient(o.peer); err != nil {
				return err
			}
		} else if o.peer == "" {
			return errEmptyPeer
		}
		e, err := s.epoch(name, o.peer)
		if err != nil {
			return err
		}
		o.epoch = e
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("postgres: %s: %w", name, err)
	}
	o.done = make(chan struct{})
	select {
	case s.ops <- o:
	case <-ctx.Done():
		return fmt.Errorf("postgres: %s: %w", name, ctx.Err())
	case <-s.closing:
		return queue.ErrClosed
	}
	<-o.done
	return o.err
}

// writer is the group-commit goroutine: it takes the writes that queued
// up while the previous transaction ran (up to MaxBatch calls and
// MaxBatchBytes of pushed entries, at least one call) and commits them
// together. It exits when the store closes, after the batch it holds
// (a call taken for the next batch is committed first).
func (s *Store) writer() {
	var next *op // taken, but over the previous batch's byte bound
	for {
		first := next
		next = nil
		if first == nil {
			select {
			case first = <-s.ops:
			case <-s.closing:
				return
			}
		}
		batch := []*op{first}
		bytes := first.size
	more:
		for len(batch) < s.opts.Queue.MaxBatch {
			select {
			case o := <-s.ops:
				if bytes+o.size > int64(s.opts.Queue.MaxBatchBytes) {
					next = o
					break more
				}
				batch = append(batch, o)
				bytes += o.size
			default:
				break more
			}
		}
		s.commit(batch)
		for _, o := range batch {
			close(o.done)
		}
	}
}

// commit applies batch in one transaction. A fenced write gets its own
// error and changes nothing; any other failure fails every write of the
// batch (none of them committed, or, when the commit itself was cut
// off, their outcome is unknown: they are idempotent to retry).
func (s *Store) commit(batch []*op) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.CommitTimeout)
	defer cancel()
	err := s.inTx(ctx, func(tx pgx.Tx) error { return s.apply(ctx, tx, batch) })
	if err == nil {
		s.done = s.due
		var hints []string
		for _, o := range batch {
			if o.kind == opPush && o.err == nil {
				hints = append(hints, o.hints...)
			}
		}
		s.hint(ctx, hints)
		return
	}
	s.log.Warn("group commit failed", "writes", len(batch), "error", err)
	for _, o := range batch {
		if !errors.Is(o.err, queue.ErrFenced) {
			o.err = wrap(o.kind.String(), err)
		}
	}
}

// The single-statement writes. Each selects the fence row first (share
// locked, so a Claim waits for this transaction); the data-modifying
// parts read from it, so a fenced write changes nothing, and the count
// says whether it was fenced.
const (
	watermarkSQL = `
WITH o AS (` + fenceSQL + `),
w AS (
	INSERT INTO wsr_watermarks (peer, stream, seq) SELECT $1, $4, $5 FROM o
	ON CONFLICT (peer, stream) DO UPDATE SET seq = GREATEST(wsr_watermarks.seq, EXCLUDED.seq)
),
t AS (
	INSERT INTO wsr_peers (peer, last_used) SELECT $1, $6 FROM o
	ON CONFLICT (peer) DO UPDATE SET last_used = GREATEST(wsr_peers.last_used, EXCLUDED.last_used)
)
SELECT count(*) FROM o`
	bindSQL = `
WITH o AS (` + fenceSQL + `),
b AS (
	INSERT INTO wsr_bindings (peer, identity) SELECT $1, $4 FROM o
	ON CONFLICT (peer) DO UPDATE SET identity = EXCLUDED.identity
),
t AS (
	INSERT INTO wsr_peers (peer, last_used) SELECT $1, $5 FROM o
	ON CONFLICT (peer) DO UPDATE SET last_used = GREATEST(wsr_peers.last_used, EXCLUDED.last_used)
)
SELECT count(*) FROM o`
	touchSQL = `
WITH o AS (` + fenceSQL + `),
t AS (
	INSERT INTO wsr_peers (peer, last_used) SELECT $1, $4 FROM o
	ON CONFLICT (peer) DO UPDATE SET last_used = GREATEST(wsr_peers.last_used, EXCLUDED.last_used)
)
SELECT count(*) FROM o`
)

// apply runs batch's writes in tx: the single-statement ones (and the
// pruning of settlement records, when due) pipelined in one round trip,
// then the outbox acks and pushes, then the idle expiry when due. Rows
// are locked in (peer, stream) and client order, so two nodes' batches
// do not deadlock on each other. The next pruning and expiry times it
// sets in s.due take effect if the transaction commits.
func (s *Store) apply(ctx context.Context, tx pgx.Tx, batch []*op) error {
	sorted := slices.Clone(batch)
	slices.SortFunc(sorted, func(a, b *op) int {
		return cmp.Or(cmp.Compare(a.peer, b.peer), slices.Compare(a.stream[:], b.stream[:]))
	})
	now := s.nowMilli()
	s.due = s.done
	var (
		b      pgx.Batch
		acks   []*op
		pushes []*op
		report []protocol.MessageID
	)
	for _, o := range sorted {
		o.err = nil
		fenced := func(row pgx.Row) error {
			var n int
			if err := row.Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				o.err = fencedError(o.kind.String(), o.peer)
			}
			return nil
		}
		peer := []byte(o.peer)
		switch o.kind {
		case opWatermark:
			b.Queue(watermarkSQL, peer, s.node, o.epoch, o.stream[:], o.seq, now).QueryRow(fenced)
		case opBind:
			b.Queue(bindSQL, peer, s.node, o.epoch, []byte(o.identity), now).QueryRow(fenced)
		case opTouch:
			b.Queue(touchSQL, peer, s.node, o.epoch, now).QueryRow(fenced)
		case opAckOutbox:
			acks = append(acks, o)
		case opPush:
			pushes = append(pushes, o)
		case opMarkReported:
			report = append(report, o.ids...)
		}
	}
	if len(report) > 0 {
		ids := make([][]byte, len(report))
		for i := range report {
			ids[i] = report[i][:]
		}
		if s.opts.Queue.StatusRetention < 0 {
			b.Queue(`DELETE FROM wsr_settled WHERE id = ANY($1) AND NOT pending AND NOT reported`, ids)
		} else {
			b.Queue(`UPDATE wsr_settled SET reported = true WHERE id = ANY($1) AND NOT pending AND NOT reported`, ids)
		}
	}
	if r := s.opts.Queue.StatusRetention; r > 0 && now >= s.done.pruneAt {
		// Reported records past the retention go, a chunk per commit at
		// most every hundredth of the retention (Status hides them
		// meanwhile).
		b.Queue(`DELETE FROM wsr_settled WHERE id IN (
			SELECT id FROM wsr_settled WHERE reported AND at < $1 ORDER BY at LIMIT 1024)`, now-r.Milliseconds())
		s.due.pruneAt = now + max(r.Milliseconds()/100, 1)
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return err
		}
	}
	if len(acks)+len(pushes) > 0 {
		if err := s.applyOutboxes(ctx, tx, now, acks, pushes); err != nil {
			return err
		}
	}
	if e := s.opts.Queue.IdleExpiry; e > 0 && now >= s.done.sweepAt {
		if err := s.sweep(ctx, tx, now); err != nil {
			return err
		}
		s.due.sweepAt = now + min(e/100, time.Hour).Milliseconds()
	}
	return nil
}

// applyOutboxes applies a batch's outbox acks and pushes: it checks the
// acks' claims, locks every outbox concerned in client order, deletes
// what the acks cover, then applies the pushes in turn, and writes the
// settlement records of all of them in one statement.
func (s *Store) applyOutboxes(ctx context.Context, tx pgx.Tx, now int64, acks, pushes []*op) error {
	x := &outboxTx{s: s, ctx: ctx, tx: tx, now: now, rows: map[string]*outboxRow{}}
	seen := map[string]bool{}
	var clients [][]byte
	add := func(c string) {
		if !seen[c] {
			seen[c] = true
			clients = append(clients, []byte(c))
		}
	}
	for _, o := range acks {
		add(o.peer)
	}
	for _, o := range pushes {
		for _, g := range o.groups {
			add(g.Client)
		}
	}
	slices.SortFunc(clients, func(a, b []byte) int { return slices.Compare(a, b) })
	if len(acks) > 0 {
		if err := x.fence(acks); err != nil {
			return err
		}
	}
	if err := x.lock(clients); err != nil {
		return err
	}
	for _, o := range acks {
		if o.err == nil {
			x.ack(o)
		}
	}
	// The pushes' limits count what the acks leave.
	if err := x.flush(); err != nil {
		return err
	}
	for _, o := range pushes {
		if err := x.push(o); err != nil {
			return err
		}
	}
	return x.finish()
}

// sweepChunk bounds the idle peers one commit expires.
const sweepChunk = 1024

// sweep deletes the binding, watermarks and empty push outbox of up to
// sweepChunk peers unused for longer than IdleExpiry (their wsr_peers
// time), as the queue package's stores do. A peer whose push outbox
// holds messages is kept and counts as used now. Outbox rows are locked
// before their entries are counted, so a concurrent Push either
// committed its entries first (the peer is kept) or finds the outbox
// gone once it gets the lock, and creates it afresh.
func (s *Store) sweep(ctx context.Context, tx pgx.Tx, now int64) error {
	rows, _ := tx.Query(ctx, `
SELECT peer FROM wsr_peers WHERE last_used < $1 ORDER BY last_used LIMIT $2 FOR UPDATE SKIP LOCKED`,
		now-s.opts.Queue.IdleExpiry.Milliseconds(), sweepChunk)
	idle, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil || len(idle) == 0 {
		return err
	}
	slices.SortFunc(idle, func(a, b []byte) int { return slices.Compare(a, b) })
	if _, err := tx.Exec(ctx, `SELECT 1 FROM wsr_outboxes WHERE client = ANY($1) ORDER BY client FOR UPDATE`, idle); err != nil {
		return err
	}
	rows, _ = tx.Query(ctx, `SELECT DISTINCT client FROM wsr_entries WHERE client = ANY($1)`, idle)
	busy, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return err
	}
	var b pgx.Batch
	if len(busy) > 0 {
		b.Queue(`UPDATE wsr_peers SET last_used = $2 WHERE peer = ANY($1)`, busy, now)
		idle = slices.DeleteFunc(idle, func(p []byte) bool {
			return slices.ContainsFunc(busy, func(q []byte) bool { return string(p) == string(q) })
		})
	}
	if len(idle) > 0 {
		b.Queue(`DELETE FROM wsr_watermarks WHERE peer = ANY($1)`, idle)
		b.Queue(`DELETE FROM wsr_bindings WHERE peer = ANY($1)`, idle)
		b.Queue(`DELETE FROM wsr_outboxes WHERE client = ANY($1)`, idle)
		b.Queue(`DELETE FROM wsr_peers WHERE peer = ANY($1)`, idle)
		// The claims go too (an attacker's 120,000 client IDs must not
		// stay as owner rows): a claim held on an idle peer is then
		// fenced, and the peer's next session claims it afresh.
		b.Queue(`DELETE FROM wsr_owners WHERE peer = ANY($1)`, idle)
		s.log.Info("expired idle peers", "peers", len(idle))
	}
	return tx.SendBatch(ctx, &b).Close()
}
