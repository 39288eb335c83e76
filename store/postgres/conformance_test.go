package postgres_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/queue/queuetest"
	"github.com/wsreliable/wsreliable/store/postgres"
	"github.com/wsreliable/wsreliable/store/postgres/pgtest"
)

// TestServerStore runs the queue conformance suite (the one Bolt and
// Memory pass) against the PostgreSQL store, each subtest in a schema
// of its own on one cluster.
func TestServerStore(t *testing.T) {
	c := pgtest.Start(t)
	clocks := map[queue.ServerStore]*atomic.Pointer[func() time.Time]{}
	queuetest.TestServerStore(t, queuetest.Harness{
		Open: func(t *testing.T, opts *queue.Options) queue.ServerStore {
			var o postgres.Options
			if opts != nil {
				o.Queue = *opts
			}
			clock := new(atomic.Pointer[func() time.Time])
			o.Now = func() time.Time {
				if now := clock.Load(); now != nil {
					return (*now)()
				}
				return time.Now()
			}
			s := openStore(t, c.NewSchema(t), &o)
			clocks[s] = clock
			return s
		},
		SetClock: func(s queue.ServerStore, now func() time.Time) { clocks[s].Store(&now) },
	})
}
