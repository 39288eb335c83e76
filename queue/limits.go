package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/wsreliable/wsreliable/protocol"
)

// Defaults for zero Options fields.
const (
	defaultMaxMessages   = 1_000_000
	defaultMaxBytes      = 1 << 30
	defaultLockTimeout   = time.Second
	defaultMaxBatch      = 1024
	defaultMaxBatchBytes = 4 << 20
	defaultCompactSize   = 1 << 20

	defaultOutboxMaxMessages = 10_000
	defaultOutboxMaxBytes    = 64 << 20
	defaultStatusRetention   = 24 * time.Hour
)

// withDefaults returns a copy of o (nil meaning all defaults) with zero
// fields filled in. It never modifies o. A negative LockTimeout, MaxBatch
// or MaxBatchBytes is an error naming the field.
func (o *Options) withDefaults() (Options, error) {
	var c Options
	if o != nil {
		c = *o
	}
	switch {
	case c.LockTimeout < 0:
		return c, fmt.Errorf("queue: Options.LockTimeout is negative (%s)", c.LockTimeout)
	case c.MaxBatch < 0:
		return c, fmt.Errorf("queue: Options.MaxBatch is negative (%d)", c.MaxBatch)
	case c.MaxBatchBytes < 0:
		return c, fmt.Errorf("queue: Options.MaxBatchBytes is negative (%d)", c.MaxBatchBytes)
	}
	if c.MaxMessages == 0 {
		c.MaxMessages = defaultMaxMessages
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = defaultMaxBytes
	}
	if c.OutboxMaxMessages == 0 {
		c.OutboxMaxMessages = defaultOutboxMaxMessages
	}
	if c.OutboxMaxBytes == 0 {
		c.OutboxMaxBytes = defaultOutboxMaxBytes
	}
	if c.LockTimeout == 0 {
		c.LockTimeout = defaultLockTimeout
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = defaultMaxBatch
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = defaultMaxBatchBytes
	}
	if c.StatusRetention == 0 {
		c.StatusRetention = defaultStatusRetention
	}
	if c.IdleExpiry == 0 {
		c.IdleExpiry = defaultIdleExpiry
	}
	if c.CompactSize == 0 {
		c.CompactSize = defaultCompactSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// limiter enforces MaxMessages and MaxBytes. It counts committed entries
// plus reservations of appends that are still on their way to a commit, so
// concurrent appends cannot overshoot the limits together.
type limiter struct {
	maxMessages int   // negative: no limit
	maxBytes    int64 // negative: no limit
	failFast    bool
	closing     <-chan struct{} // closed when the store closes

	mu       sync.Mutex
	messages int
	bytes    int64
	space    chan struct{} // closed (and replaced) when space is freed
}

func newLimiter(o *Options, closing <-chan struct{}, messages int, bytes int64) *limiter {
	return &limiter{
		maxMessages: o.MaxMessages,
		maxBytes:    o.MaxBytes,
		failFast:    o.FailWhenFull,
		closing:     closing,
		messages:    messages,
		bytes:       bytes,
		space:       make(chan struct{}),
	}
}

// reserve takes room for n entries of size bytes in all, waiting for space
// unless the store fails fast.
func (l *limiter) reserve(ctx context.Context, n int, size int64) error {
	if l.maxBytes >= 0 && size > l.maxBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, size, l.maxBytes)
	}
	for {
		l.mu.Lock()
		if (l.maxMessages < 0 || l.messages+n <= l.maxMessages) &&
			(l.maxBytes < 0 || l.bytes+size <= l.maxBytes) {
			l.messages += n
			l.bytes += size
			l.mu.Unlock()
			return nil
		}
		space := l.space
		l.mu.Unlock()
		if l.failFast {
			return ErrFull
		}
		select {
		case <-space:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrFull, ctx.Err())
		case <-l.closing:
			return ErrClosed
		}
	}
}

// release returns room for messages entries of bytes total and wakes the
// appends waiting for space.
func (l *limiter) release(messages int, bytes int64) {
	if messages == 0 && bytes == 0 {
		return
	}
	l.mu.Lock()
	l.messages -= messages
	l.bytes -= bytes
	close(l.space)
	l.space = make(chan struct{})
	l.mu.Unlock()
}

// errEmptyPeer rejects an empty peer name in watermarks and bindings.
var errEmptyPeer = errors.New("queue: empty peer name")

// errEmptyBatch rejects an AppendBatch without entries.
var errEmptyBatch = errors.New("queue: empty batch")

// outboxLimits are the per-client limits of [Outboxes]; a negative field
// means no limit.
type outboxLimits struct {
	maxMessages int
	maxBytes    int64
	evict       bool
}

func (o *Options) outboxLimits() outboxLimits {
	return outboxLimits{maxMessages: o.OutboxMaxMessages, maxBytes: o.OutboxMaxBytes, evict: o.OutboxEvict}
}

// fits reports whether an outbox of messages entries of bytes in all
// is within the limits.
func (l outboxLimits) fits(messages int, bytes int64) bool {
	return (l.maxMessages < 0 || messages <= l.maxMessages) && (l.maxBytes < 0 || bytes <= l.maxBytes)
}

// fullError reports a push over client's limits.
func (l outboxLimits) fullError(client string, held int, heldBytes int64, n int, size int64) error {
	return fmt.Errorf("%w: outbox of client %q holds %d messages of %d bytes, pushing %d of %d bytes; limits %d messages, %d bytes",
		ErrFull, client, held, heldBytes, n, size, l.maxMessages, l.maxBytes)
}

// checkPush validates a Push call's arguments before anything is queued:
// at least one message, client IDs not empty and not too long, no entry
// over the byte limit.
func (l outboxLimits) checkPush(msgs []Push) error {
	if len(msgs) == 0 {
		return errEmptyBatch
	}
	for i := range msgs {
		if err := checkClient(msgs[i].Client); err != nil {
			return err
		}
		if size := entrySize(&msgs[i].Entry); l.maxBytes >= 0 && size > l.maxBytes {
			return fmt.Errorf("%w: %d bytes for client %q, outbox limit %d", ErrTooLarge, size, msgs[i].Client, l.maxBytes)
		}
	}
	return nil
}

// checkClient rejects client IDs that cannot key an outbox.
func checkClient(client string) error {
	switch {
	case client == "":
		return errEmptyClient
	case len(client) > protocol.MaxClientIDLen:
		return fmt.Errorf("queue: client ID of %d bytes, longer than %d", len(client), protocol.MaxClientIDLen)
	}
	return nil
}

// errEmptyClient rejects an empty client ID in the outbox calls.
var errEmptyClient = errors.New("queue: empty client ID")
