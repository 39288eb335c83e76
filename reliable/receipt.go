package reliable

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/wsreliable/wsreliable/protocol"
)

// Receipt tracks one sent message until the peer settles it: a client's
// message to the server, or a server's push to one client.
type Receipt struct {
	id     protocol.MessageID
	client string // a push's recipient (its address); "" for a client's message
	seq    atomic.Uint64
	done   chan struct{}
	err    error

	// watch, when set, registers the receipt for settlement the first
	// time anyone looks at it: a server keeps no memory for the receipts
	// of pushes nobody waits on (offline clients cost disk, not memory).
	watch     func(*Receipt)
	watchOnce sync.Once
}

func newReceipt(id protocol.MessageID) *Receipt {
	return &Receipt{id: id, done: make(chan struct{})}
}

// watched registers r with its sender, once, if it registers lazily.
func (r *Receipt) watched() *Receipt {
	if r.watch != nil {
		r.watchOnce.Do(func() { r.watch(r) })
	}
	return r
}

// ID returns the message ID.
func (r *Receipt) ID() protocol.MessageID { return r.id }

// Seq returns the message's sequence number in its stream.
func (r *Receipt) Seq() uint64 { return r.seq.Load() }

// Done is closed when the receipt settles; Err then tells how.
func (r *Receipt) Done() <-chan struct{} { return r.watched().done }

// Err returns nil before the receipt settles and after an ack; a
// *RejectError after a rejection, expiry or eviction (matching
// ErrRejected, ErrExpired or ErrEvicted); ErrClosed if the sender closed
// first; or the error a client stopped on.
func (r *Receipt) Err() error {
	r.watched()
	select {
	case <-r.done:
		return r.err
	default:
		return nil
	}
}

// Wait blocks until the peer acknowledges the message (nil), rejects it,
// or it expires or is evicted (a *RejectError), the sender closes
// (ErrClosed; the message stays queued) or a client stops, or ctx ends
// (ctx's error).
func (r *Receipt) Wait(ctx context.Context) error {
	r.watched()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// receipts are the unsettled receipts of one sender, by message ID. A
// receipt settles once: the registry forgets it as it settles it.
type receipts struct {
	mu sync.Mutex
	m  map[protocol.MessageID]*Receipt
}

func (rs *receipts) init() { rs.m = make(map[protocol.MessageID]*Receipt) }

func (rs *receipts) add(list []*Receipt) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, r := range list {
		rs.m[r.id] = r
	}
}

func (rs *receipts) remove(list []*Receipt) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, r := range list {
		delete(rs.m, r.id)
	}
}

// settle settles the receipt of id, if it is still waiting, with err.
func (rs *receipts) settle(id protocol.MessageID, err error) {
	rs.mu.Lock()
	r := rs.m[id]
	delete(rs.m, id)
	rs.mu.Unlock()
	if r != nil {
		r.err = err
		close(r.done)
	}
}

// waiting returns the receipts not yet settled.
func (rs *receipts) waiting() []*Receipt {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	list := make([]*Receipt, 0, len(rs.m))
	for _, r := range rs.m {
		list = append(list, r)
	}
	return list
}

// settleAll settles every waiting receipt with err.
func (rs *receipts) settleAll(err error) {
	rs.mu.Lock()
	m := rs.m
	rs.m = make(map[protocol.MessageID]*Receipt)
	rs.mu.Unlock()
	for _, r := range m {
		r.err = err
		close(r.done)
	}
}
