package ack_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/ack"
)

// t0 is an arbitrary start for the fake clock; nothing here reads a clock.
var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

type coalesceAdd struct {
	seq       uint64
	at        time.Duration // after t0
	wantFlush bool
}

func TestCoalescer(t *testing.T) {
	cases := []struct {
		name         string
		maxCount     int
		maxDelay     time.Duration
		adds         []coalesceAdd
		at           time.Duration // when Due is asked
		wantDue      bool
		wantDeadline time.Duration // after t0; only when something is pending
		wantTake     uint64
		wantPending  bool
	}{
		{
			name: "nothing added", maxCount: 3, maxDelay: ms(10), at: ms(100),
		},
		{
			name: "one, before the delay", maxCount: 3, maxDelay: ms(10),
			adds: []coalesceAdd{{1, 0, false}}, at: ms(9),
			wantDue: false, wantDeadline: ms(10), wantTake: 1, wantPending: true,
		},
		{
			name: "one, exactly at the delay", maxCount: 3, maxDelay: ms(10),
			adds: []coalesceAdd{{1, 0, false}}, at: ms(10),
			wantDue: true, wantDeadline: ms(10), wantTake: 1, wantPending: true,
		},
		{
			name: "delay runs from the first add", maxCount: 5, maxDelay: ms(10),
			adds: []coalesceAdd{{1, ms(2), false}, {2, ms(8), false}, {3, ms(11), false}}, at: ms(12),
			wantDue: true, wantDeadline: ms(12), wantTake: 3, wantPending: true,
		},
		{
			name: "count limit flushes", maxCount: 3, maxDelay: time.Hour,
			adds: []coalesceAdd{{1, 0, false}, {2, 0, false}, {3, 0, true}}, at: 0,
			wantDue: true, wantDeadline: 0, wantTake: 3, wantPending: true,
		},
		{
			// Regression: Deadline used to say first add + maxDelay here,
			// an hour after Due turned true.
			name: "count limit makes the deadline the first add", maxCount: 2, maxDelay: time.Hour,
			adds: []coalesceAdd{{1, ms(2), false}, {2, ms(5), true}}, at: ms(5),
			wantDue: true, wantDeadline: ms(2), wantTake: 2, wantPending: true,
		},
		{
			name: "past the count limit keeps asking", maxCount: 2, maxDelay: time.Hour,
			adds: []coalesceAdd{{1, 0, false}, {2, 0, true}, {3, 0, true}}, at: 0,
			wantDue: true, wantDeadline: 0, wantTake: 3, wantPending: true,
		},
		{
			name: "duplicates count towards the limit", maxCount: 3, maxDelay: time.Hour,
			adds: []coalesceAdd{{5, 0, false}, {5, 0, false}, {2, 0, true}}, at: 0,
			wantDue: true, wantDeadline: 0, wantTake: 5, wantPending: true,
		},
		{
			name: "lower sequence never lowers the ack", maxCount: 10, maxDelay: ms(1),
			adds: []coalesceAdd{{7, 0, false}, {3, 0, false}}, at: ms(1),
			wantDue: true, wantDeadline: ms(1), wantTake: 7, wantPending: true,
		},
		{
			name: "zero delay is due at once", maxCount: 10, maxDelay: 0,
			adds: []coalesceAdd{{1, ms(5), false}}, at: ms(5),
			wantDue: true, wantDeadline: ms(5), wantTake: 1, wantPending: true,
		},
		{
			name: "count 1 flushes every add", maxCount: 1, maxDelay: time.Hour,
			adds: []coalesceAdd{{1, 0, true}}, at: 0,
			wantDue: true, wantDeadline: 0, wantTake: 1, wantPending: true,
		},
		{
			name: "count 0 means 1", maxCount: 0, maxDelay: time.Hour,
			adds: []coalesceAdd{{1, 0, true}}, at: 0,
			wantDue: true, wantDeadline: 0, wantTake: 1, wantPending: true,
		},
		{
			name: "negative count means 1", maxCount: -5, maxDelay: time.Hour,
			adds: []coalesceAdd{{4, 0, true}}, at: 0,
			wantDue: true, wantDeadline: 0, wantTake: 4, wantPending: true,
		},
		{
			name: "sequence zero still needs an ack", maxCount: 2, maxDelay: ms(1),
			adds: []coalesceAdd{{0, 0, false}}, at: ms(1),
			wantDue: true, wantDeadline: ms(1), wantTake: 0, wantPending: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ack.NewCoalescer(tc.maxCount, tc.maxDelay)
			for _, a := range tc.adds {
				if got := c.Add(a.seq, t0.Add(a.at)); got != a.wantFlush {
					t.Fatalf("Add(%d, +%v) = %t, want %t", a.seq, a.at, got, a.wantFlush)
				}
			}
			if got := c.Pending(); got != tc.wantPending {
				t.Fatalf("Pending() = %t, want %t", got, tc.wantPending)
			}
			if got := c.Due(t0.Add(tc.at)); got != tc.wantDue {
				t.Errorf("Due(+%v) = %t, want %t", tc.at, got, tc.wantDue)
			}
			d, ok := c.Deadline()
			if ok != tc.wantPending {
				t.Errorf("Deadline() ok = %t, want %t", ok, tc.wantPending)
			}
			if ok && !d.Equal(t0.Add(tc.wantDeadline)) {
				t.Errorf("Deadline() = +%v, want +%v", d.Sub(t0), tc.wantDeadline)
			}
			if !ok && !d.IsZero() {
				t.Errorf("Deadline() = %v with nothing pending, want the zero time", d)
			}
			seq, ok := c.Take()
			if ok != tc.wantPending || seq != tc.wantTake {
				t.Errorf("Take() = %d, %t, want %d, %t", seq, ok, tc.wantTake, tc.wantPending)
			}
			// Take clears everything but the cumulative mark.
			if c.Pending() || c.Due(t0.Add(time.Hour)) {
				t.Error("still pending or due after Take")
			}
			if _, ok := c.Deadline(); ok {
				t.Error("Deadline() ok after Take")
			}
			if seq, ok := c.Take(); ok {
				t.Errorf("second Take() = %d, true", seq)
			}
		})
	}
}

func TestCoalescerAfterTake(t *testing.T) {
	c := ack.NewCoalescer(3, ms(10))
	c.Add(1, t0)
	c.Add(9, t0.Add(ms(1)))
	if seq, _ := c.Take(); seq != 9 {
		t.Fatalf("Take() = %d, want 9", seq)
	}

	// The delay restarts with the first add after Take.
	c.Add(2, t0.Add(ms(50)))
	if d, _ := c.Deadline(); !d.Equal(t0.Add(ms(60))) {
		t.Fatalf("Deadline() = +%v, want +60ms", d.Sub(t0))
	}
	if c.Due(t0.Add(ms(59))) {
		t.Fatal("due before the restarted delay")
	}
	// The count restarts too: two more adds do not reach 3.
	if c.Add(3, t0.Add(ms(51))) {
		t.Fatal("flush after 2 adds since Take")
	}
	if !c.Add(4, t0.Add(ms(52))) {
		t.Fatal("no flush after 3 adds since Take")
	}
	// A duplicate of something acked before Take re-acks the cumulative
	// mark, which never goes down.
	if seq, ok := c.Take(); !ok || seq != 9 {
		t.Fatalf("Take() = %d, %t, want 9, true", seq, ok)
	}
}

// TestCoalescerModel runs random adds, clock ticks and takes against a
// reference that keeps every pending add in a list.
func TestCoalescerModel(t *testing.T) {
	const (
		seeds = 50
		ops   = 10_000
	)
	for seed := range uint64(seeds) {
		t.Run("", func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 0xc0a1))
			maxCount := r.IntN(6)
			maxDelay := ms(r.IntN(5))
			c := ack.NewCoalescer(maxCount, maxDelay)
			type added struct {
				seq uint64
				at  time.Time
			}
			var (
				pending []added
				high    uint64 // highest sequence ever added
				now     = t0
			)
			limit := max(1, maxCount)
			for i := range ops {
				switch r.IntN(4) {
				case 0, 1:
					seq := uint64(max(0, int(high)+r.IntN(6)-3))
					pending = append(pending, added{seq, now})
					high = max(high, seq)
					if got, want := c.Add(seq, now), len(pending) >= limit; got != want {
						t.Fatalf("op %d: Add(%d) = %t, want %t (%d pending, limit %d)", i, seq, got, want, len(pending), limit)
					}
				case 2:
					now = now.Add(ms(r.IntN(3)))
				case 3:
					seq, ok := c.Take()
					if ok != (len(pending) > 0) || (ok && seq != high) {
						t.Fatalf("op %d: Take() = %d, %t, want %d, %t", i, seq, ok, high, len(pending) > 0)
					}
					pending = nil
				}

				wantDue := len(pending) > 0 &&
					(len(pending) >= limit || !now.Before(pending[0].at.Add(maxDelay)))
				if got := c.Pending(); got != (len(pending) > 0) {
					t.Fatalf("op %d: Pending() = %t with %d pending", i, got, len(pending))
				}
				if got := c.Due(now); got != wantDue {
					t.Fatalf("op %d: Due() = %t, want %t", i, got, wantDue)
				}
				// Deadline agrees with Due: a timer set for it fires no
				// earlier than Due turns true, and no later.
				d, ok := c.Deadline()
				if ok != (len(pending) > 0) {
					t.Fatalf("op %d: Deadline() ok = %t with %d pending", i, ok, len(pending))
				}
				if ok && !now.Before(d) != wantDue {
					t.Fatalf("op %d: Deadline() = +%v at +%v, but Due() = %t (%d pending, limit %d)",
						i, d.Sub(t0), now.Sub(t0), wantDue, len(pending), limit)
				}
			}
		})
	}
}
