package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wsreliable/wsreliable/internal/pushid"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// evictedReason is the Reason of a record settled by an eviction, as in
// the queue package.
const evictedReason = "evicted to make room"

// limits are the per-client outbox limits; a negative field means no
// limit.
type limits struct {
	maxMessages int
	maxBytes    int64
	evict       bool
}

func (l limits) fits(messages int64, bytes int64) bool {
	return (l.maxMessages < 0 || messages <= int64(l.maxMessages)) && (l.maxBytes < 0 || bytes <= l.maxBytes)
}

func (l limits) fullError(client string, held, heldBytes int64, n int, size int64) error {
	return fmt.Errorf("%w: outbox of client %q holds %d messages of %d bytes, pushing %d of %d bytes; limits %d messages, %d bytes",
		queue.ErrFull, client, held, heldBytes, n, size, l.maxMessages, l.maxBytes)
}

// checkPush validates a Push call before anything is queued.
func (l limits) checkPush(msgs []queue.Push) error {
	if len(msgs) == 0 {
		return errors.New("postgres: push: no messages")
	}
	for i := range msgs {
		if err := checkClient(msgs[i].Client); err != nil {
			return err
		}
		if size := entrySize(&msgs[i].Entry); l.maxBytes >= 0 && size > l.maxBytes {
			return fmt.Errorf("%w: %d bytes for client %q, outbox limit %d", queue.ErrTooLarge, size, msgs[i].Client, l.maxBytes)
		}
	}
	return nil
}

// pushGroup is the messages of one Push call for one client.
type pushGroup = pushid.Group

// groupPushes groups the messages of msgs at positions fresh (nil: all)
// by client, in the order each client first appears.
func groupPushes(msgs []queue.Push, fresh []int) []pushGroup {
	return pushid.GroupBy(len(msgs), fresh,
		func(i int) string { return msgs[i].Client },
		func(i int) int64 { return entrySize(&msgs[i].Entry) })
}

// settleRec is one settlement record to write.
type settleRec struct {
	id      protocol.MessageID
	client  string
	seq     int64
	pending bool
	code    int32
	reason  string
}

// upsertSettledSQL writes the records settledArgs lays out, in ID
// order, a record replacing the table's for its ID. Settled records are
// written reported when $8 is true (Options.Queue.SettleReported).
const upsertSettledSQL = `
INSERT INTO wsr_settled (id, client, seq, pending, code, reason, at, reported)
SELECT t.id, t.client, t.seq, t.pending, t.code, t.reason, t.at, NOT t.pending AND $8::boolean
FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::boolean[], $5::integer[], $6::bytea[], $7::bigint[])
	AS t(id, client, seq, pending, code, reason, at)
ORDER BY t.id
ON CONFLICT (id) DO UPDATE SET client = EXCLUDED.client, seq = EXCLUDED.seq, pending = EXCLUDED.pending,
	code = EXCLUDED.code, reason = EXCLUDED.reason, at = EXCLUDED.at, reported = EXCLUDED.reported`

// settledArgs lays out recs for upsertSettledSQL: a later record for an
// ID replaces an earlier one; pending ones get no time, settled ones at,
// and reported (else all are unreported). Rows are written in ID order, so transactions
// writing overlapping IDs cannot deadlock on each other (each
// transaction writes its records in one statement).
func settledArgs(at int64, recs []settleRec, reported bool) []any {
	last := make(map[protocol.MessageID]int, len(recs))
	for i := range recs {
		last[recs[i].id] = i
	}
	keep := make([]*settleRec, 0, len(last))
	for i := range recs {
		if last[recs[i].id] == i {
			keep = append(keep, &recs[i])
		}
	}
	slices.SortFunc(keep, func(a, b *settleRec) int { return slices.Compare(a.id[:], b.id[:]) })
	var (
		ids, clients, reasons [][]byte
		seqs, ats             []int64
		codes                 []int32
		pending               []bool
	)
	for _, r := range keep {
		ids = append(ids, r.id[:])
		clients = append(clients, []byte(r.client))
		seqs = append(seqs, r.seq)
		pending = append(pending, r.pending)
		if r.pending {
			codes, reasons, ats = append(codes, 0), append(reasons, []byte{}), append(ats, 0)
		} else {
			codes, reasons, ats = append(codes, r.code), append(reasons, []byte(truncateReason(r.reason))), append(ats, at)
		}
	}
	return []any{ids, clients, seqs, pending, codes, reasons, ats, reported}
}

// Push appends every message to its client's outbox in one transaction,
// all or none, and then wakes the listeners of every process sharing
// the database (a NOTIFY on wsr_push per client, sent right after the
// commit; see hint for why not in it). Concurrent calls are group
// committed by the writer, each call all or none: one refused with
// ErrFull changes nothing and fails alone. See [queue.Outboxes.Push]
// for the limits, evictions and settlement records; a Push is not
// fenced.
func (s *Store) Push(ctx context.Context, msgs []queue.Push) ([]uint64, []queue.Evicted, error) {
	if s.isClosed() {
		return nil, nil, queue.ErrClosed
	}
	if err := s.limits.checkPush(msgs); err != nil {
		return nil, nil, err
	}
	o := &op{kind: opPush, msgs: msgs, groups: groupPushes(msgs, nil)}
	for _, g := range o.groups {
		o.size += g.Size
	}
	if err := s.submit(ctx, o); err != nil {
		return nil, nil, err
	}
	s.countPushed(len(msgs), o.size) // repeats included: an overestimate
	return o.seqs, o.evicted, nil
}

// hint sends the NOTIFY of committed pushes, in a transaction of its own
// that does not wait for its commit to be flushed. Not in the push's
// transaction: PostgreSQL holds a database-wide lock from a notifying
// transaction's pre-commit until its commit is flushed, which made
// every push wait for the previous one's fsync (about 200 pushes a
// second in all, from any number of connections or nodes; measured).
// A hint that fails is logged and dropped: receivers also poll.
func (s *Store) hint(ctx context.Context, clients []string) {
	if len(clients) == 0 {
		return
	}
	_, err := s.pool.Exec(ctx, `
WITH s AS (SELECT set_config('synchronous_commit', 'off', true))
SELECT count(pg_notify('`+notifyChannel+`', c)) FROM s, unnest($1::text[]) AS c`, clients)
	if err != nil {
		s.log.Warn("push hint not sent", "clients", len(clients), "error", err)
	}
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// AckOutbox deletes client's entries with Seq <= upTo and records their
// settlements, in the writer's next transaction, fenced by this store's
// claim on client; see [queue.Outboxes.AckOutbox]. An error wrapping
// queue.ErrFenced means nothing changed.
func (s *Store) AckOutbox(ctx context.Context, client string, upTo uint64, outcomes []queue.Outcome) error {
	v := int64(min(upTo, 1<<63-1))
	return s.submit(ctx, &op{kind: opAckOutbox, peer: client, seq: v, outcomes: outcomes})
}

// outboxInfoSQL reads outbox rows with their oldest entry.
const outboxInfoSQL = `
SELECT o.client, o.stream, o.last_seq, o.acked, o.messages, o.bytes, f.seq, f.queued
FROM wsr_outboxes o
LEFT JOIN LATERAL (SELECT seq, queued FROM wsr_entries e WHERE e.client = o.client ORDER BY seq LIMIT 1) f ON true`

// scanInfo scans one row of outboxInfoSQL.
func scanInfo(row pgx.Row) (queue.OutboxInfo, error) {
	var (
		client, stream                []byte
		last, acked, messages, nbytes int64
		first, queued                 *int64
	)
	if err := row.Scan(&client, &stream, &last, &acked, &messages, &nbytes, &first, &queued); err != nil {
		return queue.OutboxInfo{}, err
	}
	info := queue.OutboxInfo{
		Client: string(client), LastSeq: uint64(last), Acked: uint64(acked),
		Messages: int(messages), Bytes: nbytes,
	}
	copy(info.Stream[:], stream)
	if first != nil {
		info.FirstSeq = uint64(*first)
		info.Oldest = time.UnixMilli(*queued)
	}
	return info, nil
}

// OutboxInfo returns client's outbox; a client never pushed to has a zero
// Stream and zero counts. See [queue.Outboxes.OutboxInfo].
func (s *Store) OutboxInfo(client string) (queue.OutboxInfo, error) {
	if err := checkClient(client); err != nil {
		return queue.OutboxInfo{}, err
	}
	if s.isClosed() {
		return queue.OutboxInfo{}, queue.ErrClosed
	}
	ctx, cancel := s.readCtx()
	defer cancel()
	info, err := scanInfo(s.pool.QueryRow(ctx, outboxInfoSQL+` WHERE o.client = $1`, []byte(client)))
	if errors.Is(err, pgx.ErrNoRows) {
		return queue.OutboxInfo{Client: client}, nil
	}
	if err != nil {
		return queue.OutboxInfo{Client: client}, wrap("outbox info", err)
	}
	return info, nil
}

// Clients lists outboxes in bytewise client order after the given client,
// at most limit (<= 0: 100). See [queue.Outboxes.Clients].
func (s *Store) Clients(after string, limit int) ([]queue.OutboxInfo, error) {
	if s.isClosed() {
		return nil, queue.ErrClosed
	}
	ctx, cancel := s.readCtx()
	defer cancel()
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.pool.Query(ctx, outboxInfoSQL+` WHERE o.client > $1 ORDER BY o.client LIMIT $2`, []byte(after), limit)
	if err != nil {
		return nil, wrap("clients", err)
	}
	defer rows.Close()
	var out []queue.OutboxInfo
	for rows.Next() {
		info, err := scanInfo(rows)
		if err != nil {
			return nil, wrap("clients", err)
		}
		out = append(out, info)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("clients", err)
	}
	return out, nil
}

// ReadOutbox returns up to max entries of client's outbox with Seq >=
// from, stopping before the total size would exceed maxBytes (at least
// one entry is returned if any exists); max or maxBytes <= 0: no limit
// of that kind. See [queue.Outboxes.ReadOutbox].
func (s *Store) ReadOutbox(client string, from uint64, max int, maxBytes int) ([]queue.Entry, error) {
	if err := checkClient(client); err != nil {
		return nil, err
	}
	if s.isClosed() {
		return nil, queue.ErrClosed
	}
	ctx, cancel := s.readCtx()
	defer cancel()
	var limit *int64
	if max > 0 {
		l := int64(max)
		limit = &l
	}
	f := int64(min(from, 1<<63-1))
	rows, err := s.pool.Query(ctx, `
SELECT seq, id, headers, payload, expires FROM wsr_entries
WHERE client = $1 AND seq >= $2 ORDER BY seq LIMIT $3`, []byte(client), f, limit)
	if err != nil {
		return nil, wrap("read outbox", err)
	}
	defer rows.Close()
	var (
		out   []queue.Entry
		total int64
	)
	for rows.Next() {
		var (
			e       queue.Entry
			seq     int64
			id, hdr []byte
		)
		if err := rows.Scan(&seq, &id, &hdr, &e.Payload, &e.Expires); err != nil {
			return nil, wrap("read outbox", err)
		}
		e.Seq = uint64(seq)
		copy(e.ID[:], id)
		if e.Headers, err = decodeHeaders(hdr); err != nil {
			return nil, wrap("read outbox", err)
		}
		size := entrySize(&e)
		if maxBytes > 0 && len(out) > 0 && total+size > int64(maxBytes) {
			break
		}
		out = append(out, e)
		total += size
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("read outbox", err)
	}
	return out, nil
}

// retentionCutoff is the settlement time (Unix ms) before which a
// reported record is gone, pruned or not.
func (s *Store) retentionCutoff() int64 {
	if r := s.opts.Queue.StatusRetention; r > 0 {
		return s.nowMilli() - r.Milliseconds()
	}
	return math.MinInt64
}

// Status returns the settlement record of message id; see
// [queue.Settlements.Status].
func (s *Store) Status(id protocol.MessageID) (queue.Settled, bool, error) {
	if s.isClosed() {
		return queue.Settled{}, false, queue.ErrClosed
	}
	ctx, cancel := s.readCtx()
	defer cancel()
	rows, err := s.pool.Query(ctx, settledSQL+` WHERE id = $1 AND NOT (reported AND at < $2)`, id[:], s.retentionCutoff())
	if err != nil {
		return queue.Settled{}, false, wrap("status", err)
	}
	out, err := collectSettled(rows)
	if err != nil || len(out) == 0 {
		return queue.Settled{}, false, wrap("status", err)
	}
	return out[0], true, nil
}

// StatusMany returns the settlement records of ids that Status would
// find, in one query, by ID; a server of a fleet rechecks the receipts
// it waits on with it.
func (s *Store) StatusMany(ids []protocol.MessageID) (map[protocol.MessageID]queue.Settled, error) {
	if s.isClosed() {
		return nil, queue.ErrClosed
	}
	ctx, cancel := s.readCtx()
	defer cancel()
	keys := make([][]byte, len(ids))
	for i := range ids {
		keys[i] = ids[i][:]
	}
	rows, err := s.pool.Query(ctx, settledSQL+` WHERE id = ANY($1) AND NOT (reported AND at < $2)`, keys, s.retentionCutoff())
	if err != nil {
		return nil, wrap("status", err)
	}
	recs, err := collectSettled(rows)
	if err != nil {
		return nil, wrap("status", err)
	}
	out := make(map[protocol.MessageID]queue.Settled, len(recs))
	for _, r := range recs {
		out[r.ID] = r
	}
	return out, nil
}

// Unreported returns up to max (<= 0: 100) settled records not yet
// marked reported, oldest settlement first (ties in ID order); see
// [queue.Settlements.Unreported].
func (s *Store) Unreported(max int) ([]queue.Settled, error) {
	if s.isClosed() {
		return nil, queue.ErrClosed
	}
	ctx, cancel := s.readCtx()
	defer cancel()
	if max <= 0 {
		max = 100
	}
	rows, err := s.pool.Query(ctx,
		settledSQL+` WHERE NOT pending AND NOT reported ORDER BY at, id LIMIT $1`, max)
	if err != nil {
		return nil, wrap("unreported", err)
	}
	out, err := collectSettled(rows)
	return out, wrap("unreported", err)
}

// MarkReported marks the records of ids as reported (deletes them with a
// negative StatusRetention) and prunes reported records past the
// retention, in the writer's next transaction; see
// [queue.Settlements.MarkReported]. It is not fenced.
func (s *Store) MarkReported(ctx context.Context, ids []protocol.MessageID) error {
	if s.isClosed() {
		return queue.ErrClosed
	}
	if len(ids) == 0 {
		return nil
	}
	return s.submit(ctx, &op{kind: opMarkReported, ids: ids})
}

const settledSQL = `SELECT id, client, seq, pending, code, reason, at FROM wsr_settled`

func collectSettled(rows pgx.Rows) ([]queue.Settled, error) {
	var (
		out            []queue.Settled
		id, client, rs []byte
		seq, at        int64
		pending        bool
		code           int32
	)
	_, err := pgx.ForEachRow(rows, []any{&id, &client, &seq, &pending, &code, &rs, &at}, func() error {
		st := queue.Settled{Client: string(client), Seq: uint64(seq), Pending: pending, Code: uint16(code), Reason: string(rs)}
		copy(st.ID[:], id)
		if at != 0 {
			st.At = time.UnixMilli(at)
		}
		out = append(out, st)
		return nil
	})
	return out, err
}
