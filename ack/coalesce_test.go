package ack_test

import (
	"math/rand/v2"
	"testing"

	"github.com/wsreliable/wsreliable/ack"
)

type coalesceAdd struct {
	seq       uint64
	wantFlush bool
}

func TestCoalescer(t *testing.T) {
	cases := []struct {
		name     string
		maxCount int
		adds     []coalesceAdd
		wantTake uint64
		wantOK   bool
	}{
		{
			name: "nothing added", maxCount: 3,
		},
		{
			name: "one, below the limit", maxCount: 3,
			adds:     []coalesceAdd{{1, false}},
			wantTake: 1, wantOK: true,
		},
		{
			name: "count limit flushes", maxCount: 3,
			adds:     []coalesceAdd{{1, false}, {2, false}, {3, true}},
			wantTake: 3, wantOK: true,
		},
		{
			name: "past the count limit keeps asking", maxCount: 2,
			adds:     []coalesceAdd{{1, false}, {2, true}, {3, true}},
			wantTake: 3, wantOK: true,
		},
		{
			name: "duplicates count towards the limit", maxCount: 3,
			adds:     []coalesceAdd{{5, false}, {5, false}, {2, true}},
			wantTake: 5, wantOK: true,
		},
		{
			name: "lower sequence never lowers the ack", maxCount: 10,
			adds:     []coalesceAdd{{7, false}, {3, false}},
			wantTake: 7, wantOK: true,
		},
		{
			name: "count 1 flushes every add", maxCount: 1,
			adds:     []coalesceAdd{{1, true}},
			wantTake: 1, wantOK: true,
		},
		{
			name: "count 0 means 1", maxCount: 0,
			adds:     []coalesceAdd{{1, true}},
			wantTake: 1, wantOK: true,
		},
		{
			name: "negative count means 1", maxCount: -5,
			adds:     []coalesceAdd{{4, true}},
			wantTake: 4, wantOK: true,
		},
		{
			name: "sequence zero still needs an ack", maxCount: 2,
			adds:     []coalesceAdd{{0, false}},
			wantTake: 0, wantOK: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ack.NewCoalescer(tc.maxCount)
			for _, a := range tc.adds {
				if got := c.Add(a.seq); got != a.wantFlush {
					t.Fatalf("Add(%d) = %t, want %t", a.seq, got, a.wantFlush)
				}
			}
			seq, ok := c.Take()
			if ok != tc.wantOK || seq != tc.wantTake {
				t.Errorf("Take() = %d, %t, want %d, %t", seq, ok, tc.wantTake, tc.wantOK)
			}
			// Take clears what is waiting.
			if seq, ok := c.Take(); ok {
				t.Errorf("second Take() = %d, true", seq)
			}
		})
	}
}

func TestCoalescerAfterTake(t *testing.T) {
	c := ack.NewCoalescer(3)
	c.Add(1)
	c.Add(9)
	if seq, _ := c.Take(); seq != 9 {
		t.Fatalf("Take() = %d, want 9", seq)
	}

	// The count restarts with Take: three more adds reach 3.
	if c.Add(2) || c.Add(3) {
		t.Fatal("flush after fewer than 3 adds since Take")
	}
	if !c.Add(4) {
		t.Fatal("no flush after 3 adds since Take")
	}
	// A duplicate of something acked before Take re-acks the cumulative
	// mark, which never goes down.
	if seq, ok := c.Take(); !ok || seq != 9 {
		t.Fatalf("Take() = %d, %t, want 9, true", seq, ok)
	}
}

// TestCoalescerModel runs random adds and takes against a reference that
// keeps every add since the last take in a list.
func TestCoalescerModel(t *testing.T) {
	const (
		seeds = 50
		ops   = 10_000
	)
	for seed := range uint64(seeds) {
		t.Run("", func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 0xc0a1))
			maxCount := r.IntN(6) - 1 // -1 and 0 mean 1
			c := ack.NewCoalescer(maxCount)
			var (
				pending []uint64 // added since the last take
				high    uint64   // highest sequence ever added
			)
			limit := max(1, maxCount)
			for i := range ops {
				switch r.IntN(3) {
				case 0, 1:
					seq := uint64(max(0, int(high)+r.IntN(6)-3))
					pending = append(pending, seq)
					high = max(high, seq)
					if got, want := c.Add(seq), len(pending) >= limit; got != want {
						t.Fatalf("op %d: Add(%d) = %t, want %t (%d pending, limit %d)", i, seq, got, want, len(pending), limit)
					}
				case 2:
					seq, ok := c.Take()
					if ok != (len(pending) > 0) || (ok && seq != high) {
						t.Fatalf("op %d: Take() = %d, %t, want %d, %t", i, seq, ok, high, len(pending) > 0)
					}
					pending = nil
				}
			}
		})
	}
}
