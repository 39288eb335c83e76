package queue

import (
	"context"
	"log/slog"
	"time"

	"github.com/wsreliable/wsreliable/protocol"
)

// Entry is one queued message.
type Entry struct {
	// Seq is the entry's sequence number in the store's stream, assigned by
	// [Outbox.Append] (1, 2, 3 … never reused).
	Seq uint64
	// ID is the message ID.
	ID protocol.MessageID
	// Headers are the application headers; nil when there are none.
	Headers []protocol.Header
	// Payload is the message body.
	Payload []byte
	// Expires is when the message stops being worth delivering, in Unix
	// milliseconds; 0: never. The store only keeps it; senders check it.
	Expires int64
}

// Meta is the identity a store was created with. Both fields are generated
// once, when the file is created, and never change.
type Meta struct {
	// ClientID is a random UUID string generated for this store.
	ClientID string
	// Stream is the store's outgoing stream ID.
	Stream protocol.StreamID
}

// Stats is a snapshot of a store's outbox.
type Stats struct {
	Messages int    // entries queued (appended and not yet acked)
	Bytes    int64  // payload and header bytes of those entries
	FirstSeq uint64 // lowest queued sequence, 0 when empty
	LastSeq  uint64 // highest sequence ever assigned, 0 when none
	Acked    uint64 // highest sequence acknowledged
	FileSize int64  // size of the backing file, 0 for memory stores
	// DataBytes is the live data in the file: its pages in use, less
	// the free pages later writes reuse. It falls when entries are
	// deleted, while FileSize does not. 0 for memory stores.
	DataBytes int64
}

// Outbox is the sending role: one outgoing stream's durable entries.
// Implementations are safe for concurrent use; appends and acks from many
// goroutines are group committed.
type Outbox interface {
	// Append assigns the next sequence to e and commits it. It returns the
	// assigned sequence. When the store is at its limits it waits for space
	// until ctx ends (returning an error wrapping ErrFull and ctx's error),
	// or fails at once with ErrFull if the store was opened with
	// FailWhenFull. A full disk returns an error wrapping ErrDiskFull.
	Append(ctx context.Context, e Entry) (uint64, error)

	// AppendBatch appends entries in one commit, all or none, with
	// consecutive sequences in slice order, and returns the first. The
	// limits apply to the batch as a whole. It is how a caller with many
	// messages at hand amortises one fsync over all of them.
	AppendBatch(ctx context.Context, entries []Entry) (first uint64, err error)

	// Read returns up to max entries with Seq >= from in ascending order,
	// stopping before the total payload would exceed maxBytes (at least one
	// entry is returned if any exists). The returned entries own their
	// memory. Sizes count payload plus header keys and values, as the
	// limits do; max <= 0 or maxBytes <= 0 means no limit of that kind.
	Read(from uint64, max int, maxBytes int) ([]Entry, error)

	// Ack deletes every entry with Seq <= upTo and records upTo as acked.
	// Acking an already acked sequence is a no-op. An upTo beyond the last
	// assigned sequence acks up to the last assigned one, so entries
	// appended later are never taken as acked. It is AckWith without
	// outcomes.
	Ack(ctx context.Context, upTo uint64) error

	// AckWith is Ack with the outcomes of entries that settled without
	// being handled. With Options.TrackSettled each entry it deletes gets
	// a settlement record (Client ""): its outcome's code and reason when
	// outcomes lists its sequence, acknowledged otherwise. Without
	// TrackSettled the outcomes are ignored.
	AckWith(ctx context.Context, upTo uint64, outcomes []Outcome) error

	// Stats returns a snapshot of the outbox.
	Stats() Stats
}

// Inbox is the receiving role: per peer stream, the watermark (the whole
// dedupe state), and the identity each client ID is bound to. Writes are
// group committed with the store's other writes.
type Inbox interface {
	// Watermark returns the highest sequence of (peer, stream) delivered
	// contiguously, 0 if the stream is unknown.
	Watermark(peer string, stream protocol.StreamID) (uint64, error)

	// SetWatermark durably records seq as the watermark of (peer, stream)
	// unless a higher one is recorded: a watermark never moves back (a
	// lower seq succeeds and changes nothing but the last-used time), so
	// a late or repeated commit cannot undo a newer one.
	SetWatermark(ctx context.Context, peer string, stream protocol.StreamID, seq uint64) error

	// Binding returns the identity peer is bound to, "" if none.
	Binding(peer string) (string, error)

	// Bind durably binds peer to identity.
	Bind(ctx context.Context, peer, identity string) error

	// Touch durably records now as the last-used time of peer's binding
	// and watermarks, from which Options.IdleExpiry counts; SetWatermark
	// and Bind record it too, reads do not. A server calls it at each
	// session start. A time recorded recently (a hundredth of the expiry,
	// at most an hour) is kept, at no cost.
	Touch(ctx context.Context, peer string) error
}

// Store is a client's store: its outbox to the server, the inbox state
// of the server's stream to it, and the identity the file was created
// with. [Bolt] and [Memory] implement it. Its [Settlements] hold records
// of its own outbox's entries only with Options.TrackSettled (settled
// ones, never pending), and those of the push outboxes of a store that
// also serves as a [ServerStore].
type Store interface {
	Outbox
	Inbox
	Settlements

	// Meta returns the store's client ID and stream ID.
	Meta() Meta

	// Close waits for pending commits and releases the store. Calls after
	// Close return ErrClosed. Close is idempotent.
	Close() error
}

// ServerStore is a server's store: the inbox role for every client stream
// and the outbox role for the pushes to every client. [Bolt] and [Memory]
// implement it; a fleet backend implements exactly this.
type ServerStore interface {
	Inbox
	Outboxes

	// Close waits for pending commits and releases the store. Calls after
	// Close return ErrClosed. Close is idempotent.
	Close() error
}

// Push is one message for one client's outbox.
type Push struct {
	// Client is the outbox's key (a client ID); not empty, at most
	// protocol.MaxClientIDLen bytes.
	Client string
	// Entry is the message; its Seq is ignored and assigned.
	Entry Entry
	// NewID promises that Entry.ID was made for this push (a UUIDv7
	// this process just generated), so that no earlier push can have
	// it: the store does not look it up. Leave it false for an ID that
	// came from elsewhere (an application's, or derived from one), which
	// makes the push idempotent.
	NewID bool
}

// OutboxInfo describes one client's outbox.
type OutboxInfo struct {
	Client   string            // the client ID
	Stream   protocol.StreamID // created randomly on the first push to the client; zero if never pushed to
	FirstSeq uint64            // lowest sequence still held, 0 when empty
	LastSeq  uint64            // highest sequence ever assigned, 0 if none
	Acked    uint64            // every sequence <= Acked is gone (acked or evicted)
	Messages int               // entries held
	Bytes    int64             // their size sum (payload plus header keys and values)
	Oldest   time.Time         // when the oldest held entry was pushed (millisecond precision); zero when empty
}

// Evicted is an entry dropped to make room under [Options.OutboxEvict].
type Evicted struct {
	Client string             // whose outbox
	Seq    uint64             // the entry's sequence there
	ID     protocol.MessageID // its message ID
}

// Outboxes is the server's outbox role: one outgoing stream per client,
// kept in the same file as the inbox state. Implementations are safe for
// concurrent use and keep no per-client state in memory ([Memory] aside,
// which keeps everything there).
//
// Push and AckOutbox are group committed with the other writes of a
// [Store]: each returns once the transaction holding it is committed (and
// synced, unless the store was opened with NoSync).
type Outboxes interface {
	// Push appends every message to its client's outbox in ONE commit,
	// all or none, and returns the assigned sequences in the order of msgs
	// (several messages for one client get consecutive sequences in slice
	// order). Messages of one call for the same client count together
	// against the per-outbox limits (OutboxMaxMessages, OutboxMaxBytes).
	// Over them it either fails the whole call with an error wrapping
	// ErrFull (default) or, with Options.OutboxEvict, deletes the oldest
	// entries of that outbox in the same commit and returns them in
	// evicted (in call order of the clients, ascending sequence). Push
	// never waits for space. A call whose messages for one client exceed
	// the limits on their own fails with ErrFull even under OutboxEvict.
	// An entry larger than the per-outbox byte limit fails with
	// ErrTooLarge; a full disk with ErrDiskFull; an empty msgs or an
	// empty or too long client ID with an error. Each message pushed gets
	// a pending settlement record, and each evicted entry a settled one
	// (code 5, protocol.RejectEvicted), in the same commit.
	//
	// Push is idempotent by message ID: a message whose ID the store has
	// a record of (pending, or settled and not yet pruned, see
	// [Settlements]) is not queued again and gets the recorded sequence,
	// and so does a message repeating the ID of an earlier one of the
	// call. A producer that retries a push whose outcome it did not
	// learn (a timeout, a failover) with the same IDs therefore queues
	// each message once. An ID recorded for another client fails the
	// call with ErrIDInUse. A zero ID is never taken for a repeat.
	Push(ctx context.Context, msgs []Push) (seqs []uint64, evicted []Evicted, err error)

	// OutboxInfo returns client's outbox; a client never pushed to has a
	// zero Stream and zero counts (not an error).
	OutboxInfo(client string) (OutboxInfo, error)

	// ReadOutbox is Read for client's outbox (same max/maxBytes rules;
	// returned entries own their memory; Seq and Expires filled in). An
	// unknown client has no entries.
	ReadOutbox(client string, from uint64, max int, maxBytes int) ([]Entry, error)

	// AckOutbox deletes client's entries with Seq <= upTo in a synced
	// commit (group-committed with other writes) and returns when it is
	// committed. upTo beyond LastSeq acks up to LastSeq. A no-op for an
	// unknown client or an already acked sequence. Every entry it deletes
	// gets a settlement record in the same commit: the code and reason of
	// its outcome when outcomes lists its sequence, acknowledged (code 0)
	// otherwise; outcomes for other sequences are ignored.
	AckOutbox(ctx context.Context, client string, upTo uint64, outcomes []Outcome) error

	// Clients lists outboxes (including empty ones that have a stream) in
	// client order (bytewise), starting after the given client ("" = from
	// the start), at most limit (<= 0: 100).
	Clients(after string, limit int) ([]OutboxInfo, error)

	// Settlements covers every push: pending while queued, settled when
	// acked or evicted.
	Settlements
}

// Options configure a store. The zero value (or a nil *Options) is a safe
// default: fsync on every commit, generous limits, blocking when full.
type Options struct {
	// NoSync skips fsync on commit. Committed entries then survive a
	// process crash (they are in the kernel's page cache) but not a power
	// cut or kernel crash. Zero: fsync every commit.
	NoSync bool
	// MaxMessages limits queued entries. Zero: 1,000,000. Negative: no limit.
	MaxMessages int
	// MaxBytes limits the payload and header bytes of queued entries.
	// Zero: 1 GiB. Negative: no limit.
	MaxBytes int64
	// FailWhenFull makes Append fail at once with ErrFull instead of
	// waiting for space until its context ends. Zero: wait.
	FailWhenFull bool
	// LockTimeout bounds the wait for the file lock held by another
	// process; then Open fails with ErrLocked. Zero: 1 s.
	LockTimeout time.Duration
	// MaxBatch limits the writes committed in one transaction. Zero: 1024.
	MaxBatch int
	// MaxBatchBytes limits the payload bytes committed in one transaction.
	// Zero: 4 MiB.
	MaxBatchBytes int
	// CompactSize is the file size above which a store is compacted once
	// its outbox has drained. Zero: 1 MiB. Negative: never compact.
	CompactSize int64
	// OutboxMaxMessages limits the entries of each client's outbox (see
	// [Outboxes]). Zero: 10,000. Negative: no limit.
	OutboxMaxMessages int
	// OutboxMaxBytes limits the payload and header bytes of each client's
	// outbox. Zero: 64 MiB. Negative: no limit. The store-wide MaxBytes
	// does not count the outboxes.
	OutboxMaxBytes int64
	// OutboxEvict makes a push to a full outbox evict that outbox's oldest
	// entries instead of failing with ErrFull. Zero: fail.
	OutboxEvict bool
	// StatusRetention is how long a settlement record is kept after it
	// settled, once it has been marked reported (see [Settlements]);
	// unreported records are never pruned. Zero: 24 h. Negative: a
	// record is deleted as soon as it is marked reported.
	StatusRetention time.Duration
	// IdleExpiry is how long a peer's binding and watermarks are kept
	// after they were last used (written, or refreshed by [Inbox.Touch]).
	// The writer then deletes them, at most 1,024 peers a commit, with
	// the empty push outbox of the peer, if any; a peer whose push outbox
	// holds messages is never expired. State found without a last-used
	// time (a file written before they were kept) counts as used when
	// the store was opened. Zero: 30 days. Negative: never.
	//
	// Deleting a watermark is safe for dedupe because a receiver resumes
	// a stream it has no watermark for from the sender's lowest held
	// sequence: what the sender still holds is delivered, what it
	// dropped stays dropped. The exception is a message handled and
	// watermarked whose ack never reached its sender before the sender
	// went away for longer than IdleExpiry: it is delivered again.
	IdleExpiry time.Duration
	// TrackSettled makes the client outbox (Append, Ack, AckWith) write
	// a settlement record for every entry its acks delete. Zero: off, at
	// no cost. The push outboxes always write them.
	TrackSettled bool
	// SettleReported writes every settlement record already marked
	// reported, for a sender that nobody reports settlements to (no
	// OnSettled) and that reads them only through Status: it saves the
	// unreported index's write at settlement and the later
	// MarkReported, and in a [Bolt] store an outbox ack writes one
	// acknowledged range for the entries it acknowledges instead of a
	// record each (format version 3). Records are then pruned
	// StatusRetention after they settled (at once with a negative
	// retention). Records settled unreported by an earlier run stay
	// unreported until marked. Zero: off.
	SettleReported bool
	// Logger receives state changes (open, compaction, disk full). Nil:
	// discard.
	Logger *slog.Logger
}
