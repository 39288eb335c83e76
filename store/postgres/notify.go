package postgres

import (
	"context"
	"encoding/hex"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// notifyChannel is the LISTEN/NOTIFY channel of push hints; a payload is
// the client ID in hex (client IDs are arbitrary bytes, at most
// protocol.MaxClientIDLen = 256, far below NOTIFY's 8000-byte limit).
const notifyChannel = "wsr_push"

// Backoff of the listener's reconnects.
const (
	notifyMinBackoff = 50 * time.Millisecond
	notifyMaxBackoff = 5 * time.Second
)

// notifier is a Store's LISTEN side: one goroutine on a dedicated
// connection, started by the first Notify.
type notifier struct {
	connConfig *pgx.ConnConfig

	mu      sync.Mutex
	fns     []func(client string)
	started bool
	stopped bool
	cancel  context.CancelFunc // ends the listener; nil until started
}

// Notify makes the store call fn with the client of every push committed
// from now on by any process sharing the database, until the store
// closes; see [queue.Notifier]. All functions registered by Notify are
// called in registration order from one goroutine, which must not be
// blocked for long. The listener holds its own connection; after losing
// it, it reconnects with backoff (hints sent meanwhile are lost, as the
// interface allows). The first call returns once the goroutine is
// started, not once LISTEN is in effect. Notify on a closed store does
// nothing.
func (s *Store) Notify(fn func(client string)) {
	n := &s.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return
	}
	n.fns = append(n.fns, fn)
	if n.started {
		return
	}
	n.started = true
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	s.wg.Go(func() { s.listen(ctx) })
}

// stop ends the listener (Close waits for it through the store's wait
// group) and refuses later Notify calls.
func (n *notifier) stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopped = true
	if n.cancel != nil {
		n.cancel()
	}
}

// listen keeps a LISTEN connection until ctx ends, delivering hints.
func (s *Store) listen(ctx context.Context) {
	backoff := notifyMinBackoff
	for again := false; ; again = true {
		err := s.listenOnce(ctx, func() {
			backoff = notifyMinBackoff
			if again {
				// Hints sent while the listener was away are lost:
				// say so (queue.Notifier), so the server looks at
				// every client it serves.
				s.deliverHint("")
			}
		})
		if ctx.Err() != nil {
			return
		}
		d := rand.N(backoff) + backoff/2
		s.log.Warn("push listener lost its connection; reconnecting", "error", err, "retry_in", d)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		backoff = min(backoff*2, notifyMaxBackoff)
	}
}

// listenOnce connects, LISTENs (then calls listening) and delivers
// notifications until the connection fails or ctx ends.
func (s *Store) listenOnce(ctx context.Context, listening func()) error {
	conn, err := pgx.ConnectConfig(ctx, s.notify.connConfig)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	listening()
	for {
		nt, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		client, err := hex.DecodeString(nt.Payload)
		if err != nil {
			s.log.Warn("ignoring a malformed push hint", "payload_len", len(nt.Payload))
			continue
		}
		s.deliverHint(string(client))
	}
}

// deliverHint calls every Notify function with client ("": hints may
// have been lost).
func (s *Store) deliverHint(client string) {
	s.notify.mu.Lock()
	fns := s.notify.fns
	s.notify.mu.Unlock()
	for _, fn := range fns {
		fn(client)
	}
}
