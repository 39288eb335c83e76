package ack_test

import (
	"errors"
	"fmt"

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
	fmt.Printf("acked %d..2, in flight %d, room %d\n", prev+1, w.InFlight(), w.Room())

	prev, _ = w.Ack(1) // a stale ack changes nothing
	fmt.Println("stale ack, acked up to", prev, "in flight", w.InFlight())

	_, err := w.Ack(5)
	fmt.Println(errors.Is(err, ack.ErrAckBeyondSent))

	// The connection drops; the peer's handshake says it has up to 2, so
	// the next connection's window resends from 3.
	w = ack.NewWindow(3, 2)
	fmt.Println("resend from", w.Next())
	// Output:
	// send 1
	// send 2
	// send 3
	// acked 1..2, in flight 1, room 2
	// stale ack, acked up to 2 in flight 1
	// true
	// resend from 3
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

	// The sender skips 4 to 6 (they expired): 7 is next.
	w.Skip(6)
	fmt.Println(7, w.Check(7))
	// Output:
	// 1 deliver
	// 2 deliver
	// 2 duplicate
	// 4 gap
	// 3 deliver
	// 1 duplicate
	// watermark 3
	// 7 deliver
}

func ExampleCoalescer() {
	c := ack.NewCoalescer(3) // one ack per 3 delivered at most

	for seq := uint64(1); seq <= 4; seq++ {
		if c.Add(seq) { // the third reaches the count
			up, _ := c.Take()
			fmt.Println("ack up to", up)
		}
	}
	// Input runs dry: the receiver flushes what is waiting.
	if up, ok := c.Take(); ok {
		fmt.Println("idle, ack up to", up)
	}
	_, ok := c.Take()
	fmt.Println("waiting:", ok)
	// Output:
	// ack up to 3
	// idle, ack up to 4
	// waiting: false
}
