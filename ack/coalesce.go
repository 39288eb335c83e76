package ack

import "time"

// Coalescer merges cumulative acks: many delivered sequences become one ack
// frame, sent when enough have accumulated or the oldest has waited long
// enough, whichever comes first.
type Coalescer struct {
	maxCount int
	maxDelay time.Duration
	seq      uint64 // highest sequence waiting to be acked
	count    int    // sequences recorded since the last Take
	since    time.Time
}

// NewCoalescer returns a coalescer that asks for a flush after maxCount
// recorded sequences (at least 1) or maxDelay after the first unflushed
// one. A zero maxDelay means "flush as soon as the caller is idle": Due
// then reports true for any pending ack.
func NewCoalescer(maxCount int, maxDelay time.Duration) *Coalescer {
	if maxCount < 1 {
		maxCount = 1
	}
	return &Coalescer{maxCount: maxCount, maxDelay: maxDelay}
}

// Add records that everything up to seq may be acked and reports whether
// the count limit is reached, so the ack should go out now. Sequences
// lower than one already recorded only count towards the limit (a
// duplicate still needs an ack).
func (c *Coalescer) Add(seq uint64, now time.Time) (flush bool) {
	if c.count == 0 {
		c.since = now
	}
	c.count++
	if seq > c.seq {
		c.seq = seq
	}
	return c.count >= c.maxCount
}

// Pending reports whether an ack is waiting.
func (c *Coalescer) Pending() bool { return c.count > 0 }

// Due reports whether the waiting ack should go out at now.
func (c *Coalescer) Due(now time.Time) bool {
	return c.count > 0 && (c.count >= c.maxCount || !now.Before(c.since.Add(c.maxDelay)))
}

// Deadline returns when the waiting ack becomes due, and false when none
// is waiting. Once the count limit is reached the ack is due already and
// the deadline is the time of the first waiting sequence.
func (c *Coalescer) Deadline() (time.Time, bool) {
	if c.count == 0 {
		return time.Time{}, false
	}
	if c.count >= c.maxCount {
		return c.since, true
	}
	return c.since.Add(c.maxDelay), true
}

// Take returns the sequence to ack (everything up to it) and clears the
// pending state. It returns false when nothing is waiting.
func (c *Coalescer) Take() (uint64, bool) {
	if c.count == 0 {
		return 0, false
	}
	c.count = 0
	return c.seq, true
}
