package ack_test

import (
	"fmt"
	"math"
	mathrand "math/rand"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/quick"

	"github.com/wsreliable/wsreliable/ack"
)

func TestVerdictString(t *testing.T) {
	cases := []struct {
		v    ack.Verdict
		want string
	}{
		{ack.Deliver, "deliver"},
		{ack.Duplicate, "duplicate"},
		{ack.Gap, "gap"},
		{0, "invalid"},
		{ack.Gap + 1, "invalid"},
		{255, "invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.v.String(); got != tc.want {
				t.Errorf("Verdict(%d).String() = %q, want %q", uint8(tc.v), got, tc.want)
			}
		})
	}
}

func TestWatermarkZeroValue(t *testing.T) {
	var w ack.Watermark
	if got := w.Seq(); got != 0 {
		t.Fatalf("zero Watermark Seq() = %d, want 0", got)
	}
	if got := w.Check(1); got != ack.Deliver {
		t.Fatalf("zero Watermark Check(1) = %v, want deliver", got)
	}
	if w != ack.NewWatermark(0) {
		t.Fatal("zero Watermark differs from NewWatermark(0)")
	}
}

func TestWatermarkCheck(t *testing.T) {
	cases := []struct {
		name string
		mark uint64
		seq  uint64
		want ack.Verdict
	}{
		{"first on a new stream", 0, 1, ack.Deliver},
		{"zero on a new stream", 0, 0, ack.Duplicate},
		{"gap on a new stream", 0, 2, ack.Gap},
		{"next", 41, 42, ack.Deliver},
		{"current", 41, 41, ack.Duplicate},
		{"old", 41, 1, ack.Duplicate},
		{"zero", 41, 0, ack.Duplicate},
		{"skips one", 41, 43, ack.Gap},
		{"far ahead", 41, math.MaxUint64, ack.Gap},
		{"last possible", math.MaxUint64 - 1, math.MaxUint64, ack.Deliver},
		{"at the top", math.MaxUint64, math.MaxUint64, ack.Duplicate},
		{"wrapped at the top", math.MaxUint64, 0, ack.Duplicate},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := ack.NewWatermark(tc.mark)
			if got := w.Check(tc.seq); got != tc.want {
				t.Fatalf("NewWatermark(%d).Check(%d) = %v, want %v", tc.mark, tc.seq, got, tc.want)
			}
			if got := w.Seq(); got != tc.mark {
				t.Fatalf("Check changed Seq from %d to %d", tc.mark, got)
			}
		})
	}
}

func TestWatermarkAdvance(t *testing.T) {
	cases := []struct {
		name   string
		mark   uint64
		seq    uint64
		wantOK bool
	}{
		{"first on a new stream", 0, 1, true},
		{"zero on a new stream", 0, 0, false},
		{"gap on a new stream", 0, 2, false},
		{"next", 41, 42, true},
		{"current", 41, 41, false},
		{"old", 41, 3, false},
		{"skips one", 41, 43, false},
		{"last possible", math.MaxUint64 - 1, math.MaxUint64, true},
		// Regression: at the top, seq+1 wraps to 0; Advance must not
		// accept 0 and rewind the watermark (Check calls it a duplicate).
		{"wrapped at the top", math.MaxUint64, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := ack.NewWatermark(tc.mark)
			verdict := w.Check(tc.seq)
			if ok := w.Advance(tc.seq); ok != tc.wantOK {
				t.Fatalf("NewWatermark(%d).Advance(%d) = %t, want %t", tc.mark, tc.seq, ok, tc.wantOK)
			}
			if (verdict == ack.Deliver) != tc.wantOK {
				t.Errorf("Check(%d) = %v disagrees with Advance = %t", tc.seq, verdict, tc.wantOK)
			}
			want := tc.mark
			if tc.wantOK {
				want = tc.seq
			}
			if got := w.Seq(); got != want {
				t.Fatalf("Seq() = %d after Advance(%d), want %d", got, tc.seq, want)
			}
		})
	}
}

func TestWatermarkSkip(t *testing.T) {
	cases := []struct {
		name string
		mark uint64
		seq  uint64
		want uint64
	}{
		{"new stream", 0, 5, 5},
		{"to the next", 41, 42, 42},
		{"far ahead", 41, 1000, 1000},
		{"to the top", 41, math.MaxUint64, math.MaxUint64},
		{"current changes nothing", 41, 41, 41},
		{"old changes nothing", 41, 3, 41},
		{"zero changes nothing", 41, 0, 41},
		{"zero on a new stream", 0, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := ack.NewWatermark(tc.mark)
			w.Skip(tc.seq)
			if got := w.Seq(); got != tc.want {
				t.Fatalf("NewWatermark(%d) after Skip(%d): Seq() = %d, want %d", tc.mark, tc.seq, got, tc.want)
			}
			// Everything up to the new mark is a duplicate; the one after
			// it is delivered.
			if got := w.Check(tc.want); got != ack.Duplicate {
				t.Errorf("Check(%d) = %v after the skip, want duplicate", tc.want, got)
			}
			if tc.want < math.MaxUint64 {
				if got := w.Check(tc.want + 1); got != ack.Deliver {
					t.Errorf("Check(%d) = %v after the skip, want deliver", tc.want+1, got)
				}
			}
		})
	}
}

// TestWatermarkModel checks Watermark against a reference that remembers
// every delivered sequence in a set: a sequence in the set is a duplicate,
// the smallest one missing from it is delivered, anything else is a gap;
// a skip puts every sequence up to it in the set.
func TestWatermarkModel(t *testing.T) {
	const (
		seeds = 50
		ops   = 10_000
	)
	for seed := range uint64(seeds) {
		t.Run("", func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 0x3a7e))
			start := r.Uint64N(100)
			w := ack.NewWatermark(start)
			delivered := map[uint64]bool{}
			for s := range start + 1 {
				delivered[s] = true // 0 is never a deliverable sequence
			}
			low := uint64(0) // the smallest sequence not in delivered
			lowest := func() uint64 {
				for delivered[low] {
					low++
				}
				return low
			}
			next := start + 1
			skips := 0
			for i := range ops {
				// Mostly near the watermark: old, current, next, a little ahead.
				var seq uint64
				if r.IntN(3) == 0 {
					seq = next
				} else {
					seq = uint64(max(0, int64(next)+int64(r.IntN(12))-8))
				}
				if r.IntN(8) == 0 {
					skips++
					w.Skip(seq)
					for s := lowest(); s <= seq; s++ {
						delivered[s] = true
					}
					next = max(next, seq+1)
					if got, want := w.Seq(), lowest()-1; got != want {
						t.Fatalf("op %d: Seq() = %d after Skip(%d), model %d", i, got, seq, want)
					}
					continue
				}
				var want ack.Verdict
				switch {
				case delivered[seq]:
					want = ack.Duplicate
				case seq == lowest():
					want = ack.Deliver
				default:
					want = ack.Gap
				}
				if got := w.Check(seq); got != want {
					t.Fatalf("op %d: Check(%d) = %v at %d, model %v", i, seq, got, w.Seq(), want)
				}
				ok := w.Advance(seq)
				if ok != (want == ack.Deliver) {
					t.Fatalf("op %d: Advance(%d) = %t, model verdict %v", i, seq, ok, want)
				}
				if ok {
					delivered[seq] = true
					next = seq + 1
				}
				if got, want := w.Seq(), lowest()-1; got != want {
					t.Fatalf("op %d: Seq() = %d, model %d", i, got, want)
				}
			}
			if skips == 0 {
				t.Fatal("Skip never ran")
			}
		})
	}
}

// payload is what the durable outbox holds for seq; resends carry the same.
func payload(seq uint64) string { return fmt.Sprintf("m%d", seq) }

type dataFrame struct {
	seq     uint64
	payload string
}

// exactlyOnce is one run of a sender and a receiver over a faulty link.
type exactlyOnce struct {
	n       uint64 // messages 1..n to deliver
	faulty  int    // steps during which faults are injected
	faultPc int    // chance of a fault per step, in percent

	stats struct{ dups, replays, drops, reconnects, gaps int }
}

// run sends messages 1..e.n from a sender using ack.Window, which starts
// each connection from the receiver's watermark and so resends what was not
// acked, to a receiver using ack.Watermark and ack.Coalescer, which acks
// when Add asks and whenever its input runs dry. For the first e.faulty
// steps the link duplicates and replays data and acks, drops frames and
// breaks the connection. It returns the payloads the receiver delivered to
// the application.
func (e *exactlyOnce) run(t testing.TB, r *rand.Rand, window int) []string {
	t.Helper()
	var (
		win       = ack.NewWindow(window, 0)
		acked     uint64 // the sender's acked mark, which outlives windows
		mark      ack.Watermark
		co        = ack.NewCoalescer(1 + r.IntN(4))
		toRecv    []dataFrame // the connection, sender to receiver
		toSend    []uint64    // the connection, receiver to sender (acks)
		history   []dataFrame // every data frame ever put on a connection
		ackLog    []uint64    // every ack ever put on a connection
		delivered []string
	)
	reconnect := func() {
		e.stats.reconnects++
		toRecv, toSend = nil, nil
		co.Take() // the handshake carries the watermark instead
		acked = max(acked, mark.Seq())
		win = ack.NewWindow(window, acked)
	}
	sendAck := func() {
		if seq, ok := co.Take(); ok {
			toSend = append(toSend, seq)
			ackLog = append(ackLog, seq)
		}
	}
	receive := func(f dataFrame) {
		switch mark.Check(f.seq) {
		case ack.Deliver:
			if !mark.Advance(f.seq) {
				t.Fatalf("Advance(%d) refused a deliverable sequence", f.seq)
			}
			delivered = append(delivered, f.payload)
		case ack.Duplicate:
			// Drop it, but ack again.
		case ack.Gap:
			e.stats.gaps++
			reconnect() // a protocol error closes the connection
			return
		}
		if co.Add(mark.Seq()) {
			sendAck()
		}
	}

	const maxSteps = 1_000_000
	for step := 0; acked < e.n; step++ {
		if step == maxSteps {
			t.Fatalf("not done after %d steps: acked %d, watermark %d of %d", step, acked, mark.Seq(), e.n)
		}
		// The sender fills the window from the durable outbox.
		for win.Room() > 0 && win.Next() <= e.n {
			f := dataFrame{win.Next(), payload(win.Next())}
			if err := win.MarkSent(f.seq); err != nil {
				t.Fatalf("MarkSent(%d) with room %d: %v", f.seq, win.Room(), err)
			}
			toRecv = append(toRecv, f)
			history = append(history, f)
		}

		if step < e.faulty && r.IntN(100) < e.faultPc {
			switch r.IntN(6) {
			case 0: // duplicate a queued data frame
				if len(toRecv) > 0 {
					e.stats.dups++
					toRecv = append(toRecv, toRecv[r.IntN(len(toRecv))])
				}
			case 1: // replay any data frame ever sent, maybe on an old connection
				e.stats.replays++
				toRecv = append(toRecv, history[r.IntN(len(history))])
			case 2: // duplicate or replay an ack
				if len(ackLog) > 0 {
					e.stats.replays++
					toSend = append(toSend, ackLog[r.IntN(len(ackLog))])
				}
			case 3: // lose a data frame
				if len(toRecv) > 0 {
					e.stats.drops++
					i := r.IntN(len(toRecv))
					toRecv = slices.Delete(toRecv, i, i+1)
				}
			case 4: // lose an ack
				if len(toSend) > 0 {
					e.stats.drops++
					i := r.IntN(len(toSend))
					toSend = slices.Delete(toSend, i, i+1)
				}
			case 5: // the connection breaks
				reconnect()
			}
		}

		// One event on the link, in FIFO order per direction.
		switch {
		case len(toRecv) > 0 && (len(toSend) == 0 || r.IntN(2) == 0):
			f := toRecv[0]
			toRecv = toRecv[1:]
			receive(f)
		case len(toSend) > 0:
			seq := toSend[0]
			toSend = toSend[1:]
			if _, err := win.Ack(seq); err != nil {
				t.Fatalf("sender Ack(%d): %v", seq, err)
			}
			acked = max(acked, seq)
		default:
			// Nothing in flight either way: the heartbeat times out on
			// a connection that lost the tail.
			reconnect()
		}
		if len(toRecv) == 0 {
			sendAck() // the receiver's input ran dry
		}

		// Safety: the sender never holds as acked what the receiver lacks.
		if acked > mark.Seq() {
			t.Fatalf("sender acked %d, receiver delivered only %d", acked, mark.Seq())
		}
	}
	return delivered
}

// TestExactlyOnceOverFaultyLink checks, with testing/quick choosing the
// parameters, that Window (resending what was not acked) and Watermark deliver
// every sequence exactly once and in order over a link that duplicates,
// replays and loses frames and breaks the connection.
func TestExactlyOnceOverFaultyLink(t *testing.T) {
	var total exactlyOnce
	prop := func(seed uint64, n uint8, window uint8, faultPc uint8) bool {
		r := rand.New(rand.NewPCG(seed, 0xfa17))
		e := &exactlyOnce{
			n:       uint64(n)%200 + 1,
			faulty:  2000,
			faultPc: int(faultPc) % 60,
		}
		w := int(window) % 17 // 0 is normalised to 1
		got := e.run(t, r, w)
		want := make([]string, e.n)
		for i := range want {
			want[i] = payload(uint64(i) + 1)
		}
		if !slices.Equal(got, want) {
			t.Logf("seed %d n %d window %d faults %d%%: delivered %v", seed, e.n, w, e.faultPc, got)
			return false
		}
		total.stats.dups += e.stats.dups
		total.stats.replays += e.stats.replays
		total.stats.drops += e.stats.drops
		total.stats.reconnects += e.stats.reconnects
		total.stats.gaps += e.stats.gaps
		return true
	}
	cfg := &quick.Config{MaxCount: 1000, Rand: mathrand.New(mathrand.NewSource(1))}
	if err := quick.Check(prop, cfg); err != nil {
		t.Fatal(err)
	}
	// The property is only worth something if the faults happened.
	s := total.stats
	t.Logf("faults injected: %+v", s)
	if s.dups == 0 || s.replays == 0 || s.drops == 0 || s.reconnects == 0 || s.gaps == 0 {
		t.Fatalf("some fault never happened: %+v", s)
	}
}
