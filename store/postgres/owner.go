package postgres

import (
	"context"
	"fmt"

	"github.com/wsreliable/wsreliable/queue"
)

// Claim makes this store the owner of peer's state: it upserts peer's
// wsr_owners row with this store's node ID and the next epoch, and
// remembers the epoch. Every later write for peer is fenced by it (see
// the package doc); a store that claimed peer earlier is fenced out.
// It returns once the claim is committed. See [queue.Owner].
func (s *Store) Claim(ctx context.Context, peer string) error {
	if s.isClosed() {
		return queue.ErrClosed
	}
	if peer == "" {
		return errEmptyPeer
	}
	var epoch int64
	err := s.pool.QueryRow(ctx, `
INSERT INTO wsr_owners (peer, owner, epoch) VALUES ($1, $2, 1)
ON CONFLICT (peer) DO UPDATE SET owner = EXCLUDED.owner, epoch = wsr_owners.epoch + 1, claimed_at = now()
RETURNING epoch`, []byte(peer), s.node).Scan(&epoch)
	if err != nil {
		return wrap("claim", err)
	}
	s.mu.Lock()
	// Two Claims of one store racing: the later epoch is the live one.
	if epoch > s.claims[peer] {
		s.claims[peer] = epoch
	}
	s.mu.Unlock()
	return nil
}

// Release forgets this store's claim on peer; writes for peer then fail
// with queue.ErrFenced until the next Claim. It does not touch the
// database. See [queue.Owner].
func (s *Store) Release(peer string) {
	s.mu.Lock()
	delete(s.claims, peer)
	s.mu.Unlock()
}

// epoch returns the epoch this store claimed peer at, or an error
// wrapping queue.ErrFenced if it holds no claim.
func (s *Store) epoch(op, peer string) (int64, error) {
	s.mu.Lock()
	e, ok := s.claims[peer]
	s.mu.Unlock()
	if !ok {
		return 0, fencedError(op, peer)
	}
	return e, nil
}

// fencedError reports a write for peer refused by fencing.
func fencedError(op, peer string) error {
	return fmt.Errorf("postgres: %s for %q: %w", op, peer, queue.ErrFenced)
}

// fenceSQL selects a row when this store (owner $2) still holds peer $1
// at epoch $3, share-locking the owner row until the transaction ends so
// that a Claim waits for it.
const fenceSQL = `SELECT 1 FROM wsr_owners WHERE peer = $1 AND owner = $2 AND epoch = $3 FOR SHARE`
