package queue

import (
	"context"
	"errors"
)

// ErrFenced reports a write refused because another server has claimed the
// peer since this one did (see [Owner]). The session that made it must end:
// its client is already talking to the other server.
var ErrFenced = errors.New("queue: fenced out: another server owns this client now")

// Owner is implemented by a [ServerStore] that several servers share (a
// fleet). A client's state is written by one server at a time: the
// server claims the peer when a session starts, before it reads the
// peer's watermarks or push outbox, and from then on the store fences
// every write it makes for that peer (SetWatermark, Bind, Touch,
// AckOutbox) with the claim. Once another server claims the peer those
// writes fail with an error wrapping [ErrFenced] and change nothing.
// A store used by a single server does not implement it.
type Owner interface {
	// Claim makes this store the owner of peer's state, fencing out any
	// earlier owner, and returns once that is durable. Claiming a peer
	// this store already owns claims it afresh (a new epoch).
	Claim(ctx context.Context, peer string) error

	// Release forgets this store's claim on peer (its session ended).
	// Writes for peer then fail with ErrFenced until the next Claim. It
	// does not touch the database: another server's next Claim
	// supersedes the claim anyway.
	Release(peer string)
}

// Notifier is implemented by a [ServerStore] whose push outboxes other
// processes may write (a fleet): a push committed by any server reaches
// the server holding the client's session as a hint.
type Notifier interface {
	// Notify makes the store call fn with the client of every push
	// committed from now on, by any process sharing the store, from one
	// goroutine, until the store closes. A hint never precedes the commit
	// of its push, but hints can be lost: while the store's listening
	// connection is down (once it is back the store calls fn("") to say
	// so, and the server then looks at every client it serves), or when
	// a process dies between a push's commit and its hint (the server
	// also looks at every client now and then). A reconnecting client
	// always gets what its outbox holds.
	Notify(fn func(client string))
}
