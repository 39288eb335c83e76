package postgres_test

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/store/postgres/pgtest"
)

// TestFailover: writes from several goroutines (watermarks through the
// group commit, pushes in their own transactions) to a primary with a
// synchronous standby, through a multi-host DSN. After 3,000 acknowledged
// writes the primary's processes are SIGKILLed and the standby promoted;
// the same store carries on (its pool reconnects to the new primary)
// until 1,000 more writes are acknowledged. Then every acknowledged write
// is checked on the new primary: none may be missing.
func TestFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIPPING TestFailover in -short mode: it runs a primary and a standby")
	}
	c := pgtest.Start(t)
	c.StartStandby()
	s := openStore(t, c.MultiHostDSN(), nil)
	ctx := testCtx(t)
	const writers, pushers, before, after = 8, 4, 3000, 1000
	stream := protocol.StreamID{3}
	for i := range writers {
		if err := s.Claim(ctx, fmt.Sprint("peer-", i)); err != nil {
			t.Fatal(err)
		}
	}
	var (
		total, since atomic.Int64
		promoted     atomic.Bool
		firstAfter   atomic.Int64 // Unix ns of the first write acknowledged after the promotion
		killAt       = make(chan struct{})
		done         = make(chan struct{})
		stop         = make(chan struct{})
		errs         atomic.Int64
		wg           sync.WaitGroup
		lastWM       [writers]uint64
		pushed       [pushers][]protocol.MessageID
	)
	acked := func() {
		if total.Add(1) == before {
			close(killAt)
		}
		if promoted.Load() {
			firstAfter.CompareAndSwap(0, time.Now().UnixNano())
			if since.Add(1) == after {
				close(done)
			}
		}
	}
	// failed waits a little after a failed write (the database is away),
	// and reports false when the test is over.
	failed := func() bool {
		errs.Add(1)
		select {
		case <-stop:
			return false
		case <-time.After(10 * time.Millisecond):
			return true
		}
	}
	for i := range writers {
		wg.Go(func() {
			peer := fmt.Sprint("peer-", i)
			for n := uint64(1); ; {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.SetWatermark(ctx, peer, stream, n); err != nil {
					if !failed() {
						return
					}
					continue // the same n again: its outcome is unknown
				}
				lastWM[i] = n
				n++
				acked()
			}
		})
	}
	for j := range pushers {
		wg.Go(func() {
			client := fmt.Sprint("push-", j)
			for n := uint64(1); ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				var id protocol.MessageID
				binary.BigEndian.PutUint64(id[:], uint64(j))
				binary.BigEndian.PutUint64(id[8:], n)
				if _, _, err := s.Push(ctx, []queue.Push{{Client: client, Entry: queue.Entry{ID: id, Payload: id[:]}}}); err != nil {
					if !failed() {
						return
					}
					continue
				}
				pushed[j] = append(pushed[j], id)
				acked()
			}
		})
	}
	wait := func(ch chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(90 * time.Second):
			close(stop)
			wg.Wait()
			t.Fatalf("%s: not within 90 s (%d writes acknowledged, %d failed)", what, total.Load(), errs.Load())
		}
	}
	wait(killAt, "writes before the kill")
	c.Kill()
	killed := time.Now()
	ackedAtKill := total.Load()
	c.Promote()
	promoted.Store(true)
	promotedIn := time.Since(killed)
	wait(done, "writes after the promotion")
	close(stop)
	wg.Wait()

	// Check every acknowledged write on the new primary, from a new
	// store.
	check := openStore(t, c.DSN(), nil)
	lost := 0
	for i := range writers {
		wm, err := check.Watermark(fmt.Sprint("peer-", i), stream)
		if err != nil {
			t.Fatal(err)
		}
		if wm < lastWM[i] {
			lost += int(lastWM[i] - wm)
			t.Errorf("peer-%d: watermark %d on the new primary, %d was acknowledged", i, wm, lastWM[i])
		}
	}
	for j := range pushers {
		es, err := check.ReadOutbox(fmt.Sprint("push-", j), 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		have := map[protocol.MessageID]bool{}
		for _, e := range es {
			have[e.ID] = true
		}
		for _, id := range pushed[j] {
			if !have[id] {
				lost++
				t.Errorf("push-%d: acknowledged push %x missing on the new primary", j, id)
			}
		}
	}
	t.Logf("failover: %d writes acknowledged (%d before the kill), %d failed while the database was away, %d lost; promoted %v after the kill, first write acknowledged %v after the kill",
		total.Load(), ackedAtKill, errs.Load(), lost, promotedIn.Round(time.Millisecond),
		time.Duration(firstAfter.Load()-killed.UnixNano()).Round(time.Millisecond))
}
