package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
)

// peerOf is the peer key of a message: the name the server claims and
// keeps its watermarks under, the client's address (its client ID
// within its identity's namespace).
func peerOf(m *reliable.Message) string { return m.Address }

// Handler returns a reliable.Handler that applies each message exactly
// once: in one transaction it checks this store's claim on the
// message's client, advances the watermark of (client, m.Stream) to
// m.Seq, and calls fn with the transaction, committing both together.
//
//   - A message at or below the watermark was applied before: nothing
//     is done and the handler returns nil, so it is acknowledged again.
//   - fn returns nil: the transaction commits; a commit that fails
//     returns an error, and the retry finds the message applied or not,
//     never half.
//   - fn returns an error wrapping reliable.ErrRejected: fn's writes are
//     rolled back (to a savepoint) but the watermark advance commits,
//     as reliable's inbox advances past a rejected message, and the
//     error is returned (the message is rejected).
//   - fn returns any other error: everything rolls back and the error is
//     returned (reliable retries the message).
//   - The claim is gone (another node took the client over): nothing is
//     done and the error wraps queue.ErrFenced, which is not a
//     rejection: the message is delivered again on the new owner.
//
// fn must do its writes through tx and must not commit or roll it back.
// The ctx passed to fn is the handler's. fn runs inside the transaction,
// which holds a share lock on the client's owner row: work between its
// statements longer than Options.StalledTxTimeout (5 s) makes the
// database end the transaction (the message is then delivered again).
func (s *Store) Handler(fn func(ctx context.Context, tx pgx.Tx, m *reliable.Message) error) reliable.Handler {
	return func(ctx context.Context, m *reliable.Message) error {
		return s.handle(ctx, m, fn)
	}
}

func (s *Store) handle(ctx context.Context, m *reliable.Message, fn func(ctx context.Context, tx pgx.Tx, m *reliable.Message) error) error {
	if s.isClosed() {
		return fmt.Errorf("postgres: handler: %w", queue.ErrClosed)
	}
	peer := peerOf(m)
	epoch, err := s.epoch("handler", peer)
	if err != nil {
		return err
	}
	seq, err := seqArg(m.Seq)
	if err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return wrap("handler", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var one int
	err = tx.QueryRow(ctx, fenceSQL, []byte(peer), s.node, epoch).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fencedError("handler", peer)
	}
	if err != nil {
		return wrap("handler", err)
	}
	// The row lock this takes serializes handlers of the same stream
	// until commit; a second one then finds the watermark advanced.
	tag, err := tx.Exec(ctx, `
INSERT INTO wsr_watermarks (peer, stream, seq) VALUES ($1, $2, $3)
ON CONFLICT (peer, stream) DO UPDATE SET seq = EXCLUDED.seq WHERE wsr_watermarks.seq < EXCLUDED.seq`,
		[]byte(peer), m.Stream[:], seq)
	if err != nil {
		return wrap("handler", err)
	}
	if tag.RowsAffected() == 0 {
		return nil // a duplicate: applied before
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return wrap("handler", err)
	}
	herr := fn(ctx, sp, m)
	switch {
	case herr == nil:
		if err := sp.Commit(ctx); err != nil {
			return wrap("handler", err)
		}
	case errors.Is(herr, reliable.ErrRejected):
		if err := sp.Rollback(ctx); err != nil {
			return wrap("handler", err)
		}
	default:
		return herr
	}
	if err := tx.Commit(ctx); err != nil {
		return wrap("handler: commit", err)
	}
	return herr
}
