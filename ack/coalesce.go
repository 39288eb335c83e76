package ack

// Coalescer merges cumulative acks: many delivered sequences become one ack
// frame. Add reports when enough have accumulated that the ack should go
// out now; otherwise the caller takes the ack whenever it chooses to flush
// (for example when its input runs dry).
type Coalescer struct {
	maxCount int
	seq      uint64 // highest sequence waiting to be acked
	count    int    // sequences recorded since the last Take
}

// NewCoalescer returns a coalescer that asks for a flush after maxCount
// recorded sequences. A maxCount below 1 is treated as 1.
func NewCoalescer(maxCount int) *Coalescer {
	if maxCount < 1 {
		maxCount = 1
	}
	return &Coalescer{maxCount: maxCount}
}

// Add records that everything up to seq may be acked and reports whether
// the count limit is reached, so the ack should go out now. Sequences
// lower than one already recorded only count towards the limit (a
// duplicate still needs an ack).
func (c *Coalescer) Add(seq uint64) (flush bool) {
	c.count++
	if seq > c.seq {
		c.seq = seq
	}
	return c.count >= c.maxCount
}

// Take returns the sequence to ack (everything up to it) and clears the
// pending state; the cumulative mark stays, so a later Add of a lower
// sequence acks it again. Take returns false when nothing is waiting.
func (c *Coalescer) Take() (uint64, bool) {
	if c.count == 0 {
		return 0, false
	}
	c.count = 0
	return c.seq, true
}
