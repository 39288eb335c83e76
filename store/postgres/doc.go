// Package postgres keeps a wsreliable server's state in PostgreSQL, so
// that several gateway processes (a fleet) can serve the same clients:
// any node accepts any client, and a node that dies takes nothing with it.
//
// [Open] returns a [*Store] that implements [queue.ServerStore] (the
// inbox role: watermarks, bindings; the outbox role: per-client push
// outboxes and their settlement records) with the semantics the queue
// package documents for [queue.Bolt], plus [queue.Owner] (claim and
// fence a client's state) and [queue.Notifier] (cross-node push hints).
// Pass it as reliable.ServerOptions.Store.
//
// # Ownership and fencing
//
// A client's state is written by one node at a time. [Store.Claim] bumps
// the epoch of the client's row in wsr_owners and names this store as
// its owner; every later write for that client (SetWatermark, Bind,
// Touch, AckOutbox, and the watermark advance of [Store.Handler]) checks
// owner and epoch in the same transaction, holding a share lock on the
// owner row until it commits. A store whose claim has been superseded
// writes nothing: its calls fail with an error wrapping
// [queue.ErrFenced]. Writes for a peer this store never claimed (or
// released) are fenced too. Push is not fenced: any node may queue a
// message for any client.
//
// # Group commit
//
// Watermark, binding, touch, push, outbox-ack and MarkReported writes
// from many goroutines are handed to one writer goroutine that commits
// them together, each caller learning its own result: a fenced write,
// or a push refused with ErrFull, fails alone and changes nothing; a
// failed commit fails every write of the batch. Each Push call is all or
// none, and a call for many clients is never split. After the commit
// the writer sends a NOTIFY on channel wsr_push per pushed client.
//
// # Durability
//
// A call returns nil only after PostgreSQL reported its commit. With
// synchronous_commit=on and a synchronous standby that means the commit
// is on two machines' disks; a failover loses nothing a call
// acknowledged. A write in flight when the connection breaks returns an
// error (its outcome is unknown: it may have committed), never a false
// success; the writes here are idempotent or sequence-checked, so
// retrying them is safe.
//
// # Expiry
//
// Idle peers (Options.Queue.IdleExpiry) and reported settlement records
// past Options.Queue.StatusRetention are deleted by the writer's
// commits, in chunks, as the queue package's stores do. An idle peer's
// claim (its wsr_owners row) goes with it: a store still holding that
// claim is then fenced for the peer, and the peer's next session claims
// it afresh. Node IDs are unique per Open, so a recreated row can never
// make an old claim of another node valid again.
package postgres
