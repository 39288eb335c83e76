package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Defaults for zero Options fields.
const (
	defaultMaxMessages   = 1_000_000
	defaultMaxBytes      = 1 << 30
	defaultLockTimeout   = time.Second
	defaultMaxBatch      = 1024
	defaultMaxBatchBytes = 4 << 20
	defaultCompactSize   = 1 << 20
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
	if c.LockTimeout == 0 {
		c.LockTimeout = defaultLockTimeout
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = defaultMaxBatch
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = defaultMaxBatchBytes
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
