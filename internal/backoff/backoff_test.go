package backoff_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/internal/backoff"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func seeded() func() float64 {
	return rand.New(rand.NewPCG(1, 2)).Float64
}

func TestNextBounds(t *testing.T) {
	const (
		lo = 100 * time.Millisecond
		hi = 30 * time.Second
	)
	r := seeded()
	for attempt := range 20 {
		ceiling := min(hi, lo<<attempt)
		var maxSeen time.Duration
		for range 1000 {
			b := backoff.New(backoff.Policy{Min: lo, Max: hi, Rand: r})
			for range attempt {
				b.Next()
			}
			d := b.Next()
			if d < 0 || d > ceiling {
				t.Fatalf("attempt %d: delay %v outside [0, %v]", attempt, d, ceiling)
			}
			maxSeen = max(maxSeen, d)
		}
		// With 1000 uniform draws the largest is above 90% of the
		// ceiling with probability 1-0.9^1000; anything less means the
		// window is not growing as it should.
		if maxSeen < ceiling*9/10 {
			t.Errorf("attempt %d: largest of 1000 delays %v, want near %v", attempt, maxSeen, ceiling)
		}
	}
}

func TestCapAfterManyAttempts(t *testing.T) {
	const hi = 5 * time.Second
	b := backoff.New(backoff.Policy{Min: time.Millisecond, Max: hi, Rand: seeded()})
	for range 100 {
		b.Next()
	}
	var maxSeen time.Duration
	for i := range 1000 {
		d := b.Next()
		if d < 0 || d > hi {
			t.Fatalf("draw %d after %d attempts: %v outside [0, %v]", i, b.Attempts(), d, hi)
		}
		maxSeen = max(maxSeen, d)
	}
	if maxSeen < hi*9/10 {
		t.Errorf("largest delay at the cap %v, want near %v", maxSeen, hi)
	}
	if got := b.Attempts(); got != 1100 {
		t.Errorf("Attempts() = %d, want 1100", got)
	}
}

func TestExtremeRand(t *testing.T) {
	tests := []struct {
		name string
		r    float64
		want time.Duration
	}{
		{"zero", 0, 0},
		{"negative", -1, 0},
		{"one", 1, time.Second},
		{"above one", 7, time.Second},
		{"almost one", 0.9999999999, time.Second - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := backoff.New(backoff.Policy{Min: time.Second, Max: time.Minute, Rand: func() float64 { return tt.r }})
			if got := b.Next(); got != tt.want {
				t.Errorf("Next() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	one := func() float64 { return 1 }
	tests := []struct {
		name string
		p    backoff.Policy
		want []time.Duration // ceilings of successive attempts
	}{
		{"zero policy", backoff.Policy{Rand: one}, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}},
		{"negative fields", backoff.Policy{Min: -1, Max: -1, Rand: one}, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}},
		{"min above max", backoff.Policy{Min: time.Minute, Max: time.Second, Rand: one}, []time.Duration{time.Second, time.Second}},
		{"default max", backoff.Policy{Min: 20 * time.Second, Rand: one}, []time.Duration{20 * time.Second, 30 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := backoff.New(tt.p)
			for i, want := range tt.want {
				if got := b.Next(); got != want {
					t.Errorf("attempt %d: Next() = %v, want %v", i, got, want)
				}
			}
		})
	}

	// Nil Rand uses the global source and stays in bounds.
	b := backoff.New(backoff.Policy{Min: time.Second, Max: time.Second})
	for range 100 {
		if d := b.Next(); d < 0 || d > time.Second {
			t.Fatalf("Next() = %v outside [0, 1s]", d)
		}
	}
}

func TestResetOnlyAfterHealthyPeriod(t *testing.T) {
	const healthy = 10 * time.Second
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	b := backoff.New(backoff.Policy{Healthy: healthy, Rand: seeded()})

	for range 3 {
		b.Next()
	}
	// Accepted and dropped at once: the server is not healthy (a
	// connection up for a tenth of healthy or more gets one quick redial:
	// TestQuickRedialAfterWorkingConnection).
	b.Connected(t0)
	b.Disconnected(t0.Add(healthy/10 - 1))
	if got := b.Attempts(); got != 3 {
		t.Fatalf("after a short connection Attempts() = %d, want 3", got)
	}
	b.Next()
	if got := b.Attempts(); got != 4 {
		t.Fatalf("Attempts() = %d, want 4", got)
	}

	// Disconnected without Connected changes nothing.
	b.Disconnected(t0.Add(time.Hour))
	if got := b.Attempts(); got != 4 {
		t.Fatalf("Disconnected without Connected: Attempts() = %d, want 4", got)
	}

	// Connecting alone does not reset.
	t1 := t0.Add(time.Minute)
	b.Connected(t1)
	if got := b.Attempts(); got != 4 {
		t.Fatalf("after Connected Attempts() = %d, want 4", got)
	}
	// Up for exactly Healthy: reset.
	b.Disconnected(t1.Add(healthy))
	if got := b.Attempts(); got != 0 {
		t.Fatalf("after a healthy connection Attempts() = %d, want 0", got)
	}

	// A second Disconnected for the same connection does not reset again.
	b.Next()
	b.Disconnected(t1.Add(2 * healthy))
	if got := b.Attempts(); got != 1 {
		t.Fatalf("repeated Disconnected: Attempts() = %d, want 1", got)
	}
}

func TestDefaultHealthy(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	b := backoff.New(backoff.Policy{Rand: seeded()})
	for range 3 {
		b.Next()
	}
	// Up just under DefaultHealthy: a blip, whose quick redial is not
	// counted as an attempt.
	b.Connected(t0)
	b.Disconnected(t0.Add(backoff.DefaultHealthy - time.Nanosecond))
	b.Next()
	if got := b.Attempts(); got != 0 {
		t.Fatalf("after a blip and its quick redial Attempts() = %d, want 0", got)
	}
	// Up for DefaultHealthy: healthy, no quick redial.
	b.Connected(t0)
	b.Disconnected(t0.Add(backoff.DefaultHealthy))
	b.Next()
	if got := b.Attempts(); got != 1 {
		t.Fatalf("after a healthy connection and one redial Attempts() = %d, want 1", got)
	}
}

func TestNextAtLeast(t *testing.T) {
	half := func() float64 { return 0.5 }
	tests := []struct {
		name string
		hint time.Duration
		want time.Duration // first attempt, Min 1s, Rand 0.5
	}{
		{"hint above jitter", 5 * time.Second, 5 * time.Second},
		{"hint above max", time.Hour, time.Hour},
		{"hint below jitter", 100 * time.Millisecond, 500 * time.Millisecond},
		{"zero hint", 0, 500 * time.Millisecond},
		{"negative hint", -time.Second, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := backoff.New(backoff.Policy{Min: time.Second, Max: 10 * time.Second, Rand: half})
			if got := b.NextAtLeast(tt.hint); got != tt.want {
				t.Errorf("NextAtLeast(%v) = %v, want %v", tt.hint, got, tt.want)
			}
			if got := b.Attempts(); got != 1 {
				t.Errorf("Attempts() = %d, want 1", got)
			}
		})
	}
}

func TestPolicyNotMutated(t *testing.T) {
	p := backoff.Policy{Min: time.Minute, Max: time.Second}
	backoff.New(p)
	if p.Min != time.Minute || p.Max != time.Second || p.Healthy != 0 || p.Rand != nil {
		t.Fatalf("New modified its argument: %+v", p)
	}
}

// TestQuickRedialAfterWorkingConnection: after an outage the ceiling has
// climbed to Max; a connection that then works for a while (less than
// Healthy) and blips is redialled within Min, with jitter — and if that
// fails, the delays climb again from Min, not from the outage's ceiling.
// Blips in a row raise the ceiling one step each, so a server that keeps
// accepting and closing still meets growing delays.
func TestQuickRedialAfterWorkingConnection(t *testing.T) {
	const minD = 100 * time.Millisecond
	b := backoff.New(backoff.Policy{Min: minD, Max: 30 * time.Second, Rand: func() float64 { return 0.999 }})
	for range 20 { // the outage
		b.Next()
	}
	if d := b.Next(); d < 29*time.Second {
		t.Fatalf("after the outage the delay is %v, want near 30s", d)
	}
	t0 := time.Unix(1000, 0)
	b.Connected(t0)
	b.Disconnected(t0.Add(9 * time.Second)) // a 7 ms proxy restart, 9 s after recovering
	if d := b.Next(); d >= minD {
		t.Fatalf("first redial after a working connection waits %v, want < %v", d, minD)
	}
	// The quick redial failed (the proxy was still starting): the climb
	// starts again from Min.
	for i, ceiling := range []time.Duration{minD, 2 * minD, 4 * minD} {
		if d := b.Next(); d >= ceiling || d < ceiling*99/100 {
			t.Fatalf("redial %d after the quick one waits %v, want just under %v", i+2, d, ceiling)
		}
	}

	// Blips in a row: each one's climb starts a step higher.
	b2 := backoff.New(backoff.Policy{Min: minD, Max: 30 * time.Second, Rand: func() float64 { return 0.999 }})
	for range 20 {
		b2.Next()
	}
	for blip := range 4 {
		b2.Connected(t0)
		b2.Disconnected(t0.Add(2 * time.Second))
		if d := b2.Next(); d >= minD {
			t.Fatalf("blip %d: quick redial waits %v", blip+1, d)
		}
		want := minD << blip
		if d := b2.Next(); d >= want || d < want*99/100 {
			t.Fatalf("blip %d: the delay after a failed quick redial is %v, want just under %v", blip+1, d, want)
		}
	}
	// A healthy connection clears the blips.
	b2.Connected(t0)
	b2.Disconnected(t0.Add(backoff.DefaultHealthy))
	if got := b2.Attempts(); got != 0 {
		t.Fatalf("after a healthy connection Attempts() = %d, want 0", got)
	}

	// A connection closed at once (accept then close) gets no quick
	// redial, and the delays keep growing from where they were.
	b3 := backoff.New(backoff.Policy{Min: minD, Max: 30 * time.Second, Rand: func() float64 { return 0.999 }})
	for range 20 {
		b3.Next()
	}
	b3.Connected(t0)
	b3.Disconnected(t0.Add(50 * time.Millisecond))
	if d := b3.Next(); d < 29*time.Second {
		t.Fatalf("after a connection closed at once the delay is %v, want the old ceiling", d)
	}
}
