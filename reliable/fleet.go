package reliable

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// A fleet is several servers sharing one store (ServerOptions.Store
// implementing queue.Owner): any of them serves any client, and a push
// made on one reaches a client connected to another. What changes for a
// server in a fleet:
//
//   - a session claims its client in the store before it reads the
//     client's state, and reads it afresh (another server may have moved
//     it on since this one last served the client);
//   - a write the store fences out ends the session: the client is
//     already on another server;
//   - a push hint (queue.Notifier) wakes the client's session here, and
//     the server polls (fleetPoll) for what hints cannot carry:
//     settlements made by other servers, for the receipts waited on here;
//     every fleetSweep it also looks at every session, for pushes whose
//     hint was lost.

// fleetPoll is how often a server in a fleet looks for settlements made by
// other servers, for the receipts waited on here and OnSettled.
const fleetPoll = time.Second

// fleetSweep is how often a server in a fleet looks at every client it
// serves for pushes whose hint was lost (a process died between a push's
// commit and its hint): a store read per session, so not often.
const fleetSweep = 30 * time.Second

// fleet is the fleet side of a server; nil methods do nothing when the
// store is not shared.
type fleet struct {
	owner queue.Owner
	done  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

// newFleet starts the fleet side of s if its store is shared: nil if not.
func newFleet(s *Server) *fleet {
	owner, _ := s.store.(queue.Owner)
	notifier, _ := s.store.(queue.Notifier)
	if owner == nil && notifier == nil {
		return nil
	}
	f := &fleet{owner: owner, done: make(chan struct{})}
	if notifier != nil {
		notifier.Notify(func(client string) {
			if client == "" {
				s.wakeAll()
				return
			}
			s.wakeClient(client)
		})
	}
	f.wg.Go(func() { f.poll(s) })
	return f
}

// poll re-checks, every fleetPoll, the receipts waited on here and the
// settlement records, which other servers may have settled.
func (f *fleet) poll(s *Server) {
	t := time.NewTicker(fleetPoll)
	defer t.Stop()
	sweep := time.NewTicker(fleetSweep)
	defer sweep.Stop()
	for {
		select {
		case <-t.C:
			s.recheckReceipts()
			s.reporter.kick()
		case <-sweep.C:
			s.wakeAll()
		case <-f.done:
			return
		}
	}
}

func (f *fleet) stop() {
	if f == nil {
		return
	}
	f.once.Do(func() { close(f.done) })
	f.wg.Wait()
}

// claim makes this server the owner of client's state in a shared store.
// It reports false if the store is not shared.
func (f *fleet) claim(ctx context.Context, client string) (bool, error) {
	if f == nil || f.owner == nil {
		return false, nil
	}
	return true, f.owner.Claim(ctx, client)
}

func (f *fleet) release(client string) {
	if f != nil && f.owner != nil {
		f.owner.Release(client)
	}
}

// storeCloseCode is the close code and reason for a session whose store
// write failed with err.
func storeCloseCode(err error) (protocol.CloseCode, string) {
	if errors.Is(err, queue.ErrFenced) {
		return protocol.CloseGoingAway, "client moved to another server"
	}
	return protocol.CloseInternal, "store unavailable"
}

// wakeAll kicks every session: push hints may have been lost.
func (s *Server) wakeAll() {
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.kick()
	}
}

// statusMany is the optional method of a shared store that reads many
// settlement records in one query (store/postgres has it); the records
// not found are left out of the map.
type statusMany interface {
	StatusMany(ids []protocol.MessageID) (map[protocol.MessageID]queue.Settled, error)
}

// recheckPage bounds the IDs of one StatusMany call.
const recheckPage = 1000

// recheckReceipts settles the receipts waited on here that the store
// says have settled (on another server of the fleet): a query per
// recheckPage receipts with StatusMany, else a Status read each.
func (s *Server) recheckReceipts() {
	waiting := s.receipts.waiting()
	settle := func(rec queue.Settled) {
		if !rec.Pending {
			s.receipts.settle(rec.ID, settlementOf(rec, "").Err())
		}
	}
	if sm, ok := s.store.(statusMany); ok {
		for len(waiting) > 0 {
			page := waiting[:min(len(waiting), recheckPage)]
			waiting = waiting[len(page):]
			ids := make([]protocol.MessageID, len(page))
			for i, r := range page {
				ids[i] = r.id
			}
			recs, err := sm.StatusMany(ids)
			if err != nil {
				s.log.Warn("reading the status of waited-on pushes failed", "error", err)
				return
			}
			for _, rec := range recs {
				settle(rec)
			}
		}
		return
	}
	for _, r := range waiting {
		if rec, found, err := s.store.Status(r.id); err == nil && found {
			settle(rec)
		}
	}
}
