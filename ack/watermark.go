package ack

// Verdict is what a receiver does with an incoming sequence.
type Verdict uint8

// Verdicts returned by [Watermark.Check].
const (
	// Deliver: the sequence is the next one; hand it to the application.
	Deliver Verdict = iota + 1
	// Duplicate: the sequence was delivered before; drop it and ack again.
	Duplicate
	// Gap: the sequence skips ahead of the next one; a protocol error.
	Gap
)

// String returns the verdict's name.
func (v Verdict) String() string {
	switch v {
	case Deliver:
		return "deliver"
	case Duplicate:
		return "duplicate"
	case Gap:
		return "gap"
	}
	return "invalid"
}

// Watermark is the receiving side of one stream: the highest sequence
// delivered (or skipped) contiguously. It is the whole dedupe state, O(1)
// per stream. The zero value is a new stream (nothing delivered).
type Watermark struct {
	seq uint64
}

// NewWatermark returns a watermark resuming at seq (as loaded from disk).
func NewWatermark(seq uint64) Watermark { return Watermark{seq: seq} }

// Seq returns the highest sequence delivered (or skipped) contiguously.
func (w *Watermark) Seq() uint64 { return w.seq }

// Check classifies seq against the watermark without changing it.
func (w *Watermark) Check(seq uint64) Verdict {
	switch {
	case seq <= w.seq:
		return Duplicate
	case seq == w.seq+1:
		return Deliver
	}
	return Gap
}

// Advance records seq as delivered. It reports false, changing nothing,
// unless seq is exactly the next sequence.
func (w *Watermark) Advance(seq uint64) bool {
	if seq != w.seq+1 || seq == 0 { // seq == 0: w.seq+1 wrapped at the top
		return false
	}
	w.seq = seq
	return true
}

// Skip records that the sender passed over every sequence up to seq (a
// skip frame: they expired, were evicted or were too large): they count as
// delivered, without the handler. A seq at or below the watermark changes
// nothing; unlike Advance, seq may lie any distance ahead.
func (w *Watermark) Skip(seq uint64) {
	if seq > w.seq {
		w.seq = seq
	}
}
