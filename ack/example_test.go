package ack_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/wsreliable/wsreliable/ack"
)

func ExampleWindow() {
	w := ack.NewWindow(3, 0) // at most 3 unacknowledged, nothing acked yet

	for w.Room() > 0 {
		seq := w.Next()
		if err := w.MarkSent(seq); err != nil {
			panic(err)
		}
		fmt.Println("send", seq)
	}

	prev, _ := w.Ack(2) // cumulative: 1 and 2 arrived
	fmt.Printf("acked %d..%d, in flight %d, room %d\n", prev+1, w.Acked(), w.InFlight(), w.Room())

	w.Ack(1) // a stale ack changes nothing
	fmt.Println("acked", w.Acked())

	// The connection drops; the peer's handshake says it has up to 2, so
	// the sender resends from 3.
	w.Reset(2)
	fmt.Println("resend from", w.Next())

	_, err := w.Ack(5)
	fmt.Println(errors.Is(err, ack.ErrAckBeyondSent))
	// Output:
	// send 1
	// send 2
	// send 3
	// acked 1..2, in flight 1, room 2
	// acked 2
	// resend from 3
	// true
}

func ExampleWatermark() {
	var w ack.Watermark // a new stream: nothing delivered

	for _, seq := range []uint64{1, 2, 2, 4, 3, 1} {
		v := w.Check(seq)
		if v == ack.Deliver {
			w.Advance(seq)
		}
		fmt.Println(seq, v)
	}
	fmt.Println("watermark", w.Seq())
	// Output:
	// 1 deliver
	// 2 deliver
	// 2 duplicate
	// 4 gap
	// 3 deliver
	// 1 duplicate
	// watermark 3
}

func ExampleCoalescer() {
	c := ack.NewCoalescer(3, 10*time.Millisecond)
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

	c.Add(1, start)
	c.Add(2, start.Add(time.Millisecond))
	deadline, _ := c.Deadline()
	fmt.Println("due at", deadline.Sub(start), "due now:", c.Due(start.Add(2*time.Millisecond)))

	if c.Add(3, start.Add(2*time.Millisecond)) { // the third reaches the count
		seq, _ := c.Take()
		fmt.Println("ack up to", seq)
	}
	fmt.Println("pending:", c.Pending())
	// Output:
	// due at 10ms due now: false
	// ack up to 3
	// pending: false
}
