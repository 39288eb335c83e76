package postgres

import (
	"time"

	"github.com/wsreliable/wsreliable/queue"
)

// Row overheads DataBytes adds to the bytes of the pushes queued: an
// entry row (its key, sequence, expiry, size and tuple header) and a
// settlement record (ID, client, times and tuple header), both with their
// share of the indexes. Estimates, rounded up.
const (
	entryRowBytes   = 128
	settledRowBytes = 128
)

// statsMaxAge is how long Stats answers from its last reading.
const statsMaxAge = time.Second

// Stats reports the push outboxes of the whole database, shared by every
// node: Messages and Bytes are the pushes queued and their payload and
// header bytes; DataBytes adds an estimate of the rows holding them and
// of the settlement records (entryRowBytes and settledRowBytes each, the
// records counted by PostgreSQL's planner estimate). DataBytes is what
// reliable.ServerOptions.MaxStoreBytes holds the store to: unlike the
// tables' sizes on disk, it falls when pushes are acknowledged. Stats
// reads the database at most once a second and answers from its last
// reading in between, or when the database cannot be read, plus what
// this store pushed since (other nodes' pushes count from the next
// reading). FileSize is
// 0; the sequence fields are those of a client store and stay 0.
func (s *Store) Stats() queue.Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	now := time.Now()
	if !s.statsAt.IsZero() && now.Sub(s.statsAt) < statsMaxAge || s.isClosed() {
		return s.withPushed()
	}
	// Reset before reading: a push committed meanwhile may count twice
	// until the next reading, never not at all.
	pushed := s.pushedSince.Swap(0)
	ctx, cancel := s.readCtx()
	defer cancel()
	var messages, bytes, settled int64
	err := s.pool.QueryRow(ctx, `
SELECT coalesce(sum(messages), 0)::bigint, coalesce(sum(bytes), 0)::bigint,
	(SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'wsr_settled'::regclass)
FROM wsr_outboxes`).Scan(&messages, &bytes, &settled)
	if err != nil {
		s.log.Warn("reading the store's size failed; using the last reading", "error", err)
		s.pushedSince.Add(pushed)
		s.statsAt = now // not again before statsMaxAge
		return s.withPushed()
	}
	s.stats = queue.Stats{
		Messages:  int(messages),
		Bytes:     bytes,
		DataBytes: bytes + messages*entryRowBytes + settled*settledRowBytes,
	}
	s.statsAt = now
	return s.withPushed()
}

// withPushed is the last reading plus this store's pushes since.
// s.statsMu is held.
func (s *Store) withPushed() queue.Stats {
	st := s.stats
	st.DataBytes += s.pushedSince.Load()
	return st
}

// countPushed adds a committed push of msgs to pushedSince.
func (s *Store) countPushed(n int, bytes int64) {
	s.pushedSince.Add(bytes + int64(n)*(entryRowBytes+settledRowBytes))
}
