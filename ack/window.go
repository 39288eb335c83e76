package ack

import (
	"errors"
	"fmt"
)

// ErrAckBeyondSent reports a cumulative ack for a sequence that was never
// sent: a protocol violation by the peer.
var ErrAckBeyondSent = errors.New("ack: ack beyond the highest sent sequence")

// Window tracks the sending side of one stream on one connection: the
// sequences sent and not yet acknowledged, bounded by a maximum in flight.
// A new connection gets a new window, starting from what the peer reported
// in its handshake.
type Window struct {
	max   int
	acked uint64
	sent  uint64
}

// NewWindow returns a window allowing at most max unacknowledged sequences,
// starting with everything up to acked acknowledged. A max below 1 is
// treated as 1.
func NewWindow(max int, acked uint64) *Window {
	if max < 1 {
		max = 1
	}
	return &Window{max: max, acked: acked, sent: acked}
}

// Room returns how many more sequences may be sent now.
func (w *Window) Room() int {
	in := w.InFlight()
	if in >= w.max {
		return 0
	}
	return w.max - in
}

// InFlight returns the number of sent, unacknowledged sequences.
func (w *Window) InFlight() int { return int(w.sent - w.acked) }

// Next returns the next sequence to send.
func (w *Window) Next() uint64 { return w.sent + 1 }

// MarkSent records that every sequence up to seq has been sent. seq must
// not go backwards and must not exceed the window.
func (w *Window) MarkSent(seq uint64) error {
	if seq < w.sent {
		return fmt.Errorf("ack: sent %d after %d", seq, w.sent)
	}
	if seq-w.acked > uint64(w.max) {
		return fmt.Errorf("ack: sending %d exceeds the window (acked %d, max %d)", seq, w.acked, w.max)
	}
	w.sent = seq
	return nil
}

// Ack applies a cumulative ack for everything up to seq and returns the
// previous acked mark; sequences in (prev, seq] are newly acknowledged.
// A stale ack (seq at or below the acked mark) changes nothing and returns
// prev >= seq. An ack beyond the highest sequence sent or skipped returns
// ErrAckBeyondSent, changing nothing.
func (w *Window) Ack(seq uint64) (prev uint64, err error) {
	prev = w.acked
	if seq <= w.acked {
		return prev, nil
	}
	if seq > w.sent {
		return prev, fmt.Errorf("%w: ack %d, sent %d", ErrAckBeyondSent, seq, w.sent)
	}
	w.acked = seq
	return prev, nil
}

// Skip records that every sequence up to seq has been passed over (sent as
// a skip, not as data). Unlike MarkSent it may exceed the window: a skip
// costs the receiver one frame however many sequences it covers. Room is
// zero until acks bring the window back under its maximum.
func (w *Window) Skip(seq uint64) {
	if seq > w.sent {
		w.sent = seq
	}
}
