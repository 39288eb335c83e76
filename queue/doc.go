// Package queue keeps an endpoint's durable state: the outbox of one
// outgoing stream (entries with sequence numbers waiting for the peer's
// acknowledgement) and the receive side's watermarks and identity
// bindings. [Store] is the interface; [Bolt] keeps it in one bbolt file
// and [Memory] keeps it in memory for tests.
//
// # Guarantees
//
// Once [Outbox.Append] returns a sequence the entry is committed: a later
// [Open] of the same file returns it from [Outbox.Read] until [Outbox.Ack]
// covers it. Sequences start at 1, increase by one per entry and are never
// reused, not even after every entry was acknowledged. The store's
// [Meta] (client ID and stream ID) is created with the file and never
// changes. A watermark or binding is durable once its call returns.
//
// A damaged file, a foreign bbolt file or a truncated one is reported as
// [ErrCorrupt] and a file from a newer program as [ErrVersion]; the store
// never panics on what it reads from disk. [Check] verifies a file
// completely (bbolt's page check plus the invariants of the outbox and of
// every push outbox) and is meant for tests and tools after a crash;
// [Inspect] reads a file's identity and statistics, and [InspectFile] also
// the server state it holds, a page of clients at a time.
//
// # Push outboxes
//
// A server also keeps one outgoing stream per client: [Outboxes], which
// [Bolt] and [Memory] implement. [Bolt] keeps them in the same file, in
// two flat buckets (meta by client ID, entries by client ID and
// sequence) created by the first push, which also makes the file format
// version 2 (files written before it open unchanged), and reads a
// client's outbox from the file when asked, so an offline client costs
// disk, not memory. Each client named by an outbox, a binding or a
// watermark has a last-used time from its first write; a file that
// promises so (format version 4) is not walked at Open, so that opening
// a store of many offline clients reads none of them. An [Outboxes.Push] of one message
// to many clients is one transaction and one fsync, all or none; each
// client's stream ID is created at its first push and its sequences, like
// the client outbox's, are never reused. Each outbox has its own limits
// (Options.OutboxMaxMessages, Options.OutboxMaxBytes): over them a push
// fails with [ErrFull] or, with Options.OutboxEvict, evicts the outbox's
// oldest entries and reports them. [Outboxes.AckOutbox] deletes in a
// synced commit and returns when it is done.
//
// # Settlement records
//
// [Settlements] keep, per message ID, how each message settled, so that
// a sender can report every settlement at least once, even one made
// while it was down or whose report a crash cut short, and answer what
// became of a message after it left the queue. [Outboxes.Push] writes a
// pending record per message; [Outboxes.AckOutbox] settles every entry
// it deletes (code 0, or the code of its [Outcome]) and an eviction
// settles with code 5, each in the commit that deletes the entry. The
// client outbox does the same only with Options.TrackSettled, through
// [Outbox.AckWith]: its ack is deferred, so the outcomes wait in memory
// until the delete commit, and a crash before it brings the entries back
// instead. [Settlements.Unreported] lists settled records oldest first
// until [Settlements.MarkReported] covers them; unreported records are
// never pruned. Reported ones are kept for Options.StatusRetention (24 h
// by default) after they settled; the writer prunes them oldest first,
// at most 1,024 a commit, with the commits that come due or on its own.
// Records are keyed by message ID, and a push of an ID that has a record
// is not queued again ([Outboxes.Push] is idempotent).
//
// With Options.SettleReported (a sender without OnSettled) records
// settle already reported, and a [Bolt] outbox ack writes one
// acknowledged range, (from, upTo] at a time with the IDs it covers,
// instead of rewriting a record per entry: Status reads a pending record
// inside a range as acknowledged, and pruning deletes a range with the
// records it lists. An outbox with ranges keeps its meta through idle
// expiry, so that its client's sequences never fall in an old range.
//
// # Idle expiry
//
// A peer's binding and watermarks (one per stream) would otherwise stay
// on disk for ever, one set per client ID that ever connected. Every
// SetWatermark and Bind records the peer's last-used time, and so does
// [Inbox.Touch], which a server calls at each session start since reads
// record nothing. The writer deletes the binding, the watermarks and the
// empty push outbox of every peer idle for longer than
// Options.IdleExpiry (30 days by default), oldest first, at most 1,024
// peers a commit, with the commits that come due or on its own; a peer
// whose push outbox holds messages is kept until they are acked. [Bolt]
// keeps the times in two buckets created by the first of them; state
// found without one (a file written before they were kept) counts as
// used when the store was opened. A receiver resumes a stream it has no
// watermark for from the sender's lowest held sequence, so what the
// sender still holds is delivered once; only a message handled whose
// ack never reached its sender before the sender stayed away for the
// whole IdleExpiry is delivered again.
//
// # Group commit
//
// A [Bolt] owns one writer goroutine. Append, SetWatermark and Bind hand
// their write to it and wait. Ack only records the acknowledgement (it
// takes effect at once for Stats, Read's callers and the limits); the
// writer deletes the entries in its next commit, or on its own after a
// short idle delay, so deletes ride along with appends instead of costing
// a commit each. The writer takes one write, then every write already
// waiting, up to Options.MaxBatch writes and
// Options.MaxBatchBytes entry bytes, and commits them in one bbolt
// transaction, which is one fsync. Under load many callers therefore share
// an fsync, without any timer delaying a lone caller. A call honours its
// context until the writer has taken it; from then on it completes.
//
// When a transaction fails, every write of that batch fails with the same
// error and none of it is visible; the store stays usable and later
// batches may succeed. A full disk yields an error matching both
// [ErrDiskFull] and syscall.ENOSPC.
//
// # Durability settings
//
// By default every batch is fsynced before its callers return, so a
// returned Append survives a power cut. With Options.NoSync the commit
// skips fsync: a returned Append then survives a crash of the process (the
// data is in the kernel's page cache) but not a power cut or kernel crash,
// where the last commits may be lost and, as bbolt's documentation warns
// for NoSync, the file itself may be damaged: the kernel may write a
// commit's meta page before the pages it points to. The default never
// skips fsync, not even for deletes.
//
// # Limits
//
// Options.MaxMessages and Options.MaxBytes bound the outbox; bytes are
// payload plus header keys and values. An Append that would exceed them
// waits until acks make room or its context ends (an error wrapping
// [ErrFull] and the context's error), or fails at once with [ErrFull] when
// Options.FailWhenFull is set. An entry larger than MaxBytes fails with
// [ErrTooLarge]. Appends waiting for the writer already hold their room,
// so concurrent appends cannot overshoot the limits together.
//
// # Compaction
//
// bbolt reuses freed pages but never shrinks its file. When an ack leaves
// the outbox or a push outbox empty, or pruning or idle expiry has
// caught up after deleting, and the file is larger than
// Options.CompactSize (and has at least doubled since the last
// compaction), the writer copies the live data into a temp file in the
// same directory, syncs it and renames it over the store; [Bolt.Compact] forces this. The original stays intact
// until the rename, which is atomic, so a crash at any point leaves one
// complete store (and perhaps a temp file, removed by the next Open).
// Every write waits while the copy runs, about a second per 90 MiB of
// live data, so a compaction that would copy more than 4 MiB (a server's
// other outboxes and its settlement records) waits until the writer has
// been idle for a second, or, under a load that never pauses, for a
// minute. The copy commits every 256 KiB, so its memory does not grow
// with the data it copies.
//
// # Memory
//
// A store that has not committed for 5 s (and one under load every 64
// MiB of pages written, or every minute) hands the pages of bbolt's
// memory map back to the page cache (Linux), and, once its bbolt handle
// has written 64 MiB of pages, opens the file again with a fresh handle,
// which drops bbolt's record of the pages it reused. The new handle takes
// over the old one's locked file description, so the file stays locked.
//
// # Concurrency
//
// Both stores are safe for concurrent use. Reads (Read, Watermark,
// Binding, Stats) run in parallel with the writer in read transactions and
// wait only while compaction or a reopen swaps the handle. Only one [Bolt] can have a
// file open: bbolt locks it with flock, so a second Open, from another
// process or this one, fails with [ErrLocked] after Options.LockTimeout.
// Close stops the writer after its current batch, makes waiting calls
// return [ErrClosed] and returns once the goroutine has exited and the
// file is closed.
package queue
