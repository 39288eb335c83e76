package ack_test

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/wsreliable/wsreliable/ack"
)

// windowState is every observable value of a [ack.Window]. Acked and Sent
// are derived: the window shows Next (Sent+1) and InFlight (Sent-Acked).
type windowState struct {
	Acked, Sent, Next uint64
	InFlight, Room    int
}

func stateOf(w *ack.Window) windowState {
	sent := w.Next() - 1
	return windowState{
		Acked: sent - uint64(w.InFlight()), Sent: sent, Next: w.Next(),
		InFlight: w.InFlight(), Room: w.Room(),
	}
}

// checkWindow fails unless w shows want, and checks the invariants that
// hold for every window.
func checkWindow(t testing.TB, w *ack.Window, want windowState) {
	t.Helper()
	got := stateOf(w)
	if got != want {
		t.Fatalf("window state = %+v, want %+v", got, want)
	}
	checkWindowInvariants(t, w)
}

func checkWindowInvariants(t testing.TB, w *ack.Window) {
	t.Helper()
	s := stateOf(w)
	switch {
	case s.InFlight < 0:
		t.Fatalf("negative in flight %d", s.InFlight)
	case s.Room < 0:
		t.Fatalf("negative room %d", s.Room)
	}
}

func mustMarkSent(t testing.TB, w *ack.Window, seq uint64) {
	t.Helper()
	if err := w.MarkSent(seq); err != nil {
		t.Fatalf("MarkSent(%d): %v", seq, err)
	}
}

func mustAck(t testing.TB, w *ack.Window, seq uint64) {
	t.Helper()
	if _, err := w.Ack(seq); err != nil {
		t.Fatalf("Ack(%d): %v", seq, err)
	}
}

func TestNewWindow(t *testing.T) {
	cases := []struct {
		name  string
		max   int
		acked uint64
		want  windowState
	}{
		{"fresh", 4, 0, windowState{Acked: 0, Sent: 0, Next: 1, InFlight: 0, Room: 4}},
		{"resumed", 4, 41, windowState{Acked: 41, Sent: 41, Next: 42, InFlight: 0, Room: 4}},
		{"max 1", 1, 0, windowState{Next: 1, Room: 1}},
		{"max 0 means 1", 0, 0, windowState{Next: 1, Room: 1}},
		{"negative max means 1", -7, 3, windowState{Acked: 3, Sent: 3, Next: 4, Room: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkWindow(t, ack.NewWindow(tc.max, tc.acked), tc.want)
		})
	}
}

func TestWindowMarkSent(t *testing.T) {
	cases := []struct {
		name    string
		max     int
		acked   uint64
		setup   func(testing.TB, *ack.Window)
		seq     uint64
		wantErr bool
		want    windowState
	}{
		{
			name: "one", max: 4, seq: 1,
			want: windowState{Sent: 1, Next: 2, InFlight: 1, Room: 3},
		},
		{
			name: "several at once", max: 4, seq: 3,
			want: windowState{Sent: 3, Next: 4, InFlight: 3, Room: 1},
		},
		{
			name: "fill the window", max: 4, seq: 4,
			want: windowState{Sent: 4, Next: 5, InFlight: 4, Room: 0},
		},
		{
			name: "beyond the window", max: 4, seq: 5, wantErr: true,
			want: windowState{Sent: 0, Next: 1, InFlight: 0, Room: 4},
		},
		{
			name: "beyond the window after a partial send", max: 4, seq: 5, wantErr: true,
			setup: func(t testing.TB, w *ack.Window) { mustMarkSent(t, w, 2) },
			want:  windowState{Sent: 2, Next: 3, InFlight: 2, Room: 2},
		},
		{
			name: "window slides with acks", max: 4, seq: 6,
			setup: func(t testing.TB, w *ack.Window) { mustMarkSent(t, w, 4); mustAck(t, w, 2) },
			want:  windowState{Acked: 2, Sent: 6, Next: 7, InFlight: 4, Room: 0},
		},
		{
			name: "same sequence again is a no-op", max: 4, seq: 2,
			setup: func(t testing.TB, w *ack.Window) { mustMarkSent(t, w, 2) },
			want:  windowState{Sent: 2, Next: 3, InFlight: 2, Room: 2},
		},
		{
			name: "backwards", max: 4, seq: 1, wantErr: true,
			setup: func(t testing.TB, w *ack.Window) { mustMarkSent(t, w, 3) },
			want:  windowState{Sent: 3, Next: 4, InFlight: 3, Room: 1},
		},
		{
			name: "backwards below acked", max: 4, acked: 10, seq: 9, wantErr: true,
			want: windowState{Acked: 10, Sent: 10, Next: 11, Room: 4},
		},
		{
			name: "resumed window", max: 2, acked: 100, seq: 102,
			want: windowState{Acked: 100, Sent: 102, Next: 103, InFlight: 2, Room: 0},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := ack.NewWindow(tc.max, tc.acked)
			if tc.setup != nil {
				tc.setup(t, w)
			}
			err := w.MarkSent(tc.seq)
			if (err != nil) != tc.wantErr {
				t.Fatalf("MarkSent(%d) error = %v, want error %t", tc.seq, err, tc.wantErr)
			}
			checkWindow(t, w, tc.want)
		})
	}
}

func TestWindowAck(t *testing.T) {
	cases := []struct {
		name     string
		acked    uint64 // initial acked mark
		sent     uint64 // MarkSent before the ack
		pre      []uint64
		seq      uint64
		wantPrev uint64
		wantErr  error
		want     windowState
	}{
		{
			name: "in order", sent: 3, seq: 1, wantPrev: 0,
			want: windowState{Acked: 1, Sent: 3, Next: 4, InFlight: 2, Room: 6},
		},
		{
			name: "cumulative", sent: 5, pre: []uint64{1}, seq: 4, wantPrev: 1,
			want: windowState{Acked: 4, Sent: 5, Next: 6, InFlight: 1, Room: 7},
		},
		{
			name: "everything sent", sent: 5, seq: 5, wantPrev: 0,
			want: windowState{Acked: 5, Sent: 5, Next: 6, InFlight: 0, Room: 8},
		},
		{
			name: "duplicate", sent: 5, pre: []uint64{3}, seq: 3, wantPrev: 3,
			want: windowState{Acked: 3, Sent: 5, Next: 6, InFlight: 2, Room: 6},
		},
		{
			name: "stale", sent: 5, pre: []uint64{4}, seq: 2, wantPrev: 4,
			want: windowState{Acked: 4, Sent: 5, Next: 6, InFlight: 1, Room: 7},
		},
		{
			name: "zero on a fresh window", seq: 0, wantPrev: 0,
			want: windowState{Next: 1, Room: 8},
		},
		{
			name: "stale below the resumed mark", acked: 50, sent: 52, seq: 7, wantPrev: 50,
			want: windowState{Acked: 50, Sent: 52, Next: 53, InFlight: 2, Room: 6},
		},
		{
			name: "beyond sent", sent: 3, pre: []uint64{1}, seq: 4, wantPrev: 1, wantErr: ack.ErrAckBeyondSent,
			want: windowState{Acked: 1, Sent: 3, Next: 4, InFlight: 2, Room: 6},
		},
		{
			name: "nothing sent", acked: 9, seq: 10, wantPrev: 9, wantErr: ack.ErrAckBeyondSent,
			want: windowState{Acked: 9, Sent: 9, Next: 10, Room: 8},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := ack.NewWindow(8, tc.acked)
			if tc.sent > tc.acked {
				mustMarkSent(t, w, tc.sent)
			}
			for _, seq := range tc.pre {
				mustAck(t, w, seq)
			}
			prev, err := w.Ack(tc.seq)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Ack(%d) error = %v, want %v", tc.seq, err, tc.wantErr)
			}
			if prev != tc.wantPrev {
				t.Errorf("Ack(%d) prev = %d, want %d", tc.seq, prev, tc.wantPrev)
			}
			checkWindow(t, w, tc.want)
		})
	}
}

func TestWindowSkip(t *testing.T) {
	cases := []struct {
		name string
		sent uint64 // MarkSent before the skip; max 4, nothing acked
		skip uint64
		want windowState
	}{
		{"nothing sent", 0, 2, windowState{Sent: 2, Next: 3, InFlight: 2, Room: 2}},
		{"after sends", 1, 3, windowState{Sent: 3, Next: 4, InFlight: 3, Room: 1}},
		{"past the window", 2, 100, windowState{Sent: 100, Next: 101, InFlight: 100, Room: 0}},
		{"same sequence changes nothing", 3, 3, windowState{Sent: 3, Next: 4, InFlight: 3, Room: 1}},
		{"backwards changes nothing", 3, 1, windowState{Sent: 3, Next: 4, InFlight: 3, Room: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := ack.NewWindow(4, 0)
			if tc.sent > 0 {
				mustMarkSent(t, w, tc.sent)
			}
			w.Skip(tc.skip)
			checkWindow(t, w, tc.want)
		})
	}
	t.Run("acks for skipped sequences drain the window", func(t *testing.T) {
		w := ack.NewWindow(4, 0)
		w.Skip(10)
		if err := w.MarkSent(11); err == nil {
			t.Fatal("MarkSent(11) with 10 skipped and max 4 succeeded")
		}
		mustAck(t, w, 10)
		checkWindow(t, w, windowState{Acked: 10, Sent: 10, Next: 11, Room: 4})
		mustMarkSent(t, w, 11)
	})
}

// windowModel is the reference for [ack.Window]: the acked mark plus an
// explicit list of the sequences in flight on this connection.
type windowModel struct {
	max      int
	acked    uint64
	inFlight []uint64 // ascending, all > acked
}

func (m *windowModel) sent() uint64 {
	if len(m.inFlight) == 0 {
		return m.acked
	}
	return m.inFlight[len(m.inFlight)-1]
}

func (m *windowModel) room() int { return max(0, m.max-len(m.inFlight)) }

func (m *windowModel) state() windowState {
	return windowState{
		Acked: m.acked, Sent: m.sent(), Next: m.sent() + 1,
		InFlight: len(m.inFlight), Room: m.room(),
	}
}

// markSent accepts seq unless it goes backwards or lies more than max past
// the acked mark.
func (m *windowModel) markSent(seq uint64) (ok bool) {
	if seq < m.sent() || seq > m.acked+uint64(m.max) {
		return false
	}
	for s := m.sent() + 1; s <= seq; s++ {
		m.inFlight = append(m.inFlight, s)
	}
	return true
}

func (m *windowModel) ack(seq uint64) (prev uint64, ok bool) {
	prev = m.acked
	if seq <= m.acked {
		return prev, true
	}
	if seq > m.sent() {
		return prev, false
	}
	for len(m.inFlight) > 0 && m.inFlight[0] <= seq {
		m.inFlight = m.inFlight[1:]
	}
	m.acked = seq
	return prev, true
}

// skip accepts any seq; one at or below the highest sent changes nothing.
func (m *windowModel) skip(seq uint64) {
	for s := m.sent() + 1; s <= seq; s++ {
		m.inFlight = append(m.inFlight, s)
	}
}

// reconnect starts a new connection: the peer reports acked (never
// withdrawing an ack) and may allow a different maximum.
func (m *windowModel) reconnect(acked uint64, maxInFlight int) {
	m.acked = max(m.acked, acked)
	m.inFlight = nil
	m.max = max(1, maxInFlight)
}

// TestWindowModel drives a Window and the model with the same random
// operations and compares every observable after each one. A reconnect
// replaces the Window with a new one, as the outbox does.
func TestWindowModel(t *testing.T) {
	const (
		seeds = 50
		ops   = 10_000
	)
	for seed := range uint64(seeds) {
		t.Run("", func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 0x5eed))
			start := r.Uint64N(1000)
			initMax := r.IntN(16)
			w := ack.NewWindow(initMax, start)
			m := &windowModel{acked: start, max: max(1, initMax)}
			checkWindow(t, w, m.state())

			// between returns a value in [lo, hi].
			between := func(lo, hi uint64) uint64 { return lo + r.Uint64N(hi-lo+1) }
			var counts [10]int
			for i := range ops {
				op := r.IntN(len(counts))
				counts[op]++
				var desc string
				switch op {
				case 0, 1: // MarkSent within room (twice as often: it drives the rest)
					seq := m.sent() + uint64(r.IntN(m.room()+1))
					desc = "MarkSent within room"
					wantOK := m.markSent(seq)
					if err := w.MarkSent(seq); (err == nil) != wantOK {
						t.Fatalf("op %d: MarkSent(%d) = %v, model ok %t", i, seq, err, wantOK)
					}
				case 2: // MarkSent outside the rules: backwards or past the window
					var seq uint64
					if r.IntN(2) == 0 && m.sent() > 0 {
						seq = between(m.sent()-min(m.sent(), 5), m.sent()-1)
						desc = "MarkSent backwards"
					} else {
						seq = m.acked + uint64(m.max) + 1 + r.Uint64N(3)
						desc = "MarkSent past window"
					}
					if m.markSent(seq) {
						t.Fatalf("op %d: model accepted %s %d", i, desc, seq)
					}
					if err := w.MarkSent(seq); err == nil {
						t.Fatalf("op %d: %s(%d) succeeded", i, desc, seq)
					}
				case 3, 4, 5, 6, 7:
					var seq uint64
					switch op {
					case 3:
						desc, seq = "in-order ack", m.acked+1
					case 4:
						desc, seq = "out-of-order ack", between(m.acked, m.sent())
					case 5:
						desc, seq = "stale ack", between(m.acked-min(m.acked, 10), m.acked)
					case 6:
						desc, seq = "duplicate ack", m.acked
					case 7:
						desc, seq = "ack beyond sent", m.sent()+1+r.Uint64N(3)
					}
					wantPrev, wantOK := m.ack(seq)
					prev, err := w.Ack(seq)
					if (err == nil) != wantOK {
						t.Fatalf("op %d: %s Ack(%d) = %v, model ok %t", i, desc, seq, err, wantOK)
					}
					if err != nil && !errors.Is(err, ack.ErrAckBeyondSent) {
						t.Fatalf("op %d: %s Ack(%d) = %v, want ErrAckBeyondSent", i, desc, seq, err)
					}
					if prev != wantPrev {
						t.Fatalf("op %d: %s Ack(%d) prev = %d, want %d", i, desc, seq, prev, wantPrev)
					}
				case 8: // Skip: ahead (maybe past the window) or backwards
					seq := between(m.sent()-min(m.sent(), 5), m.sent()+20)
					desc = "Skip"
					m.skip(seq)
					w.Skip(seq)
				case 9:
					// Reconnect: the peer reports a mark between what we know
					// acked and what we sent (acks may have been lost), or
					// occasionally a stale, lower one the outbox ignores.
					var seq uint64
					if r.IntN(5) == 0 {
						seq = between(m.acked-min(m.acked, 10), m.acked)
					} else {
						seq = between(m.acked, m.sent())
					}
					n := r.IntN(18) - 1
					desc = "reconnect"
					m.reconnect(seq, n)
					w = ack.NewWindow(n, m.acked)
				}
				if got, want := stateOf(w), m.state(); got != want {
					t.Fatalf("seed %d op %d (%s): window %+v, model %+v", seed, i, desc, got, want)
				}
				checkWindowInvariants(t, w)
			}
			for op, n := range counts {
				if n == 0 {
					t.Errorf("operation %d never ran", op)
				}
			}
		})
	}
}
