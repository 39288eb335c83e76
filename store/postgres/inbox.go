package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// Watermark returns the highest sequence of (peer, stream) delivered
// contiguously, 0 if the stream is unknown. It reads the database
// directly, unfenced.
func (s *Store) Watermark(peer string, stream protocol.StreamID) (uint64, error) {
	if s.isClosed() {
		return 0, queue.ErrClosed
	}
	ctx, cancel := s.readCtx()
	defer cancel()
	var seq int64
	err := s.pool.QueryRow(ctx,
		`SELECT seq FROM wsr_watermarks WHERE peer = $1 AND stream = $2`, []byte(peer), stream[:]).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, wrap("watermark", err)
	}
	return uint64(seq), nil
}

// SetWatermark records seq as the watermark of (peer, stream) unless a
// higher one is recorded (the watermark never moves back), with peer's
// last-used time, in the writer's next transaction, fenced by this
// store's claim on peer. It returns once committed; an error wrapping
// queue.ErrFenced means nothing changed.
func (s *Store) SetWatermark(ctx context.Context, peer string, stream protocol.StreamID, seq uint64) error {
	v, err := seqArg(seq)
	if err != nil {
		return err
	}
	return s.submit(ctx, &op{kind: opWatermark, peer: peer, stream: stream, seq: v})
}

// Binding returns the identity peer is bound to, "" if none.
func (s *Store) Binding(peer string) (string, error) {
	if s.isClosed() {
		return "", queue.ErrClosed
	}
	ctx, cancel := s.readCtx()
	defer cancel()
	var id []byte
	err := s.pool.QueryRow(ctx, `SELECT identity FROM wsr_bindings WHERE peer = $1`, []byte(peer)).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", wrap("binding", err)
	}
	return string(id), nil
}

// Bind binds peer to identity with peer's last-used time, fenced by this
// store's claim on peer, in the writer's next transaction.
func (s *Store) Bind(ctx context.Context, peer, identity string) error {
	return s.submit(ctx, &op{kind: opBind, peer: peer, identity: identity})
}

// Touch records now as peer's last-used time, from which
// Options.Queue.IdleExpiry counts, fenced by this store's claim on peer,
// in the writer's next transaction.
func (s *Store) Touch(ctx context.Context, peer string) error {
	return s.submit(ctx, &op{kind: opTouch, peer: peer})
}
