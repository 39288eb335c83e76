package reliable

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// reporter drives OnSettled from the store's settlement records, so every
// settlement is reported at least once: also those made by an earlier run
// of the process, or whose report a crash cut short. It reads what is
// unreported, calls the callback, then marks it reported. One goroutine,
// woken after each commit that may have settled messages; it starts by
// reporting what an earlier run left.
type reporter struct {
	store    queue.Settlements
	fn       func(Settlement) // nil: records are only marked reported
	clientID string           // the ClientID of records of a client's own outbox
	log      *slog.Logger

	wake chan struct{} // capacity 1
	done chan struct{} // closed by stop
	wg   sync.WaitGroup
	once sync.Once
}

// reportPage is how many records one round reports.
const reportPage = 256

func newReporter(store queue.Settlements, fn func(Settlement), clientID string, log *slog.Logger) *reporter {
	r := &reporter{store: store, fn: fn, clientID: clientID, log: log,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	notify(r.wake)
	r.wg.Go(r.run)
	return r
}

// kick asks for a round: settlement records may have been written.
func (r *reporter) kick() { notify(r.wake) }

// stop reports what is left and waits for the goroutine.
func (r *reporter) stop() {
	r.once.Do(func() { close(r.done) })
	r.wg.Wait()
}

// reportRecheck is how long after a round the reporter looks again: a
// client store writes its records with the delete commit that follows an
// ack (within 50 ms), not with the ack itself.
const reportRecheck = 100 * time.Millisecond

func (r *reporter) run() {
	recheck := time.NewTimer(time.Hour)
	recheck.Stop()
	defer recheck.Stop()
	for {
		select {
		case <-r.wake:
			r.report()
			recheck.Reset(reportRecheck)
		case <-recheck.C:
			if r.report() > 0 {
				recheck.Reset(reportRecheck)
			}
		case <-r.done:
			r.report()
			return
		}
	}
}

// report reports every unreported record, a page at a time, and returns
// how many it reported.
func (r *reporter) report() (n int) {
	for {
		recs, err := r.store.Unreported(reportPage)
		if err != nil {
			r.log.Warn("reading settlements failed; they will be reported later", "error", err)
			return n
		}
		if len(recs) == 0 {
			return n
		}
		ids := make([]protocol.MessageID, len(recs))
		for i, rec := range recs {
			ids[i] = rec.ID
			if r.fn != nil {
				r.fn(r.settlement(rec))
			}
		}
		if err := r.store.MarkReported(context.Background(), ids); err != nil {
			r.log.Warn("recording reported settlements failed; they will be reported again", "error", err)
			return n
		}
		n += len(recs)
		if len(recs) < reportPage {
			return n
		}
	}
}

func (r *reporter) settlement(rec queue.Settled) Settlement { return settlementOf(rec, r.clientID) }
