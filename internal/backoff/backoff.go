package backoff

import (
	"math/rand/v2"
	"time"
)

// Default values used for zero (or negative) fields of [Policy].
const (
	DefaultMin     = 100 * time.Millisecond
	DefaultMax     = 30 * time.Second
	DefaultHealthy = 10 * time.Second
)

// Policy configures a [Backoff]. The zero value is a valid configuration.
type Policy struct {
	// Min is the ceiling of the first delay; the ceiling doubles with every
	// attempt. Zero or negative means DefaultMin (100ms). A Min above Max is
	// lowered to Max.
	Min time.Duration

	// Max caps the ceiling of every delay (but not a server hint, see
	// [Backoff.NextAtLeast]). Zero or negative means DefaultMax (30s).
	Max time.Duration

	// Healthy is how long a connection must stay up for its loss to reset
	// the attempt counter. Zero or negative means DefaultHealthy (10s), long
	// enough to outlast a handshake and a few heartbeats.
	Healthy time.Duration

	// Rand returns a number in [0, 1). Nil means math/rand/v2's Float64.
	// Tests pass a seeded source, e.g. rand.New(rand.NewPCG(1, 2)).Float64.
	// Values outside [0, 1) are clamped.
	Rand func() float64
}

// Backoff tracks reconnect attempts for one connection and hands out the
// delay before each. It is not safe for concurrent use: the reconnect loop
// that owns it should be its only user.
type Backoff struct {
	min, max, healthy time.Duration
	rand              func() float64

	attempts    int
	connected   bool
	connectedAt time.Time
	quick       bool // the next delay is drawn below Min: see Disconnected
	blips       int  // connections in a row that worked a while but less than Healthy
}

// New returns a Backoff for p with zero attempts. Zero or negative fields of
// p take their documented defaults; p itself is not modified.
func New(p Policy) *Backoff {
	b := &Backoff{min: p.Min, max: p.Max, healthy: p.Healthy, rand: p.Rand}
	if b.min <= 0 {
		b.min = DefaultMin
	}
	if b.max <= 0 {
		b.max = DefaultMax
	}
	if b.min > b.max {
		b.min = b.max
	}
	if b.healthy <= 0 {
		b.healthy = DefaultHealthy
	}
	if b.rand == nil {
		b.rand = rand.Float64
	}
	return b
}

// Next returns the delay before the next attempt, drawn uniformly from
// [0, min(Max, Min·2ⁿ)) where n is [Backoff.Attempts], and then counts the
// attempt. The result is never negative and never above Max.
func (b *Backoff) Next() time.Duration {
	ceiling := b.ceiling()
	switch {
	case b.quick:
		// One quick redial after a connection that worked: a blip does
		// not inherit the ceiling of an earlier outage. Not counted, so
		// if it fails the delays go on from where they were.
		b.quick = false
		ceiling = b.min
	case b.attempts < maxAttempts:
		b.attempts++
	}
	r := b.rand()
	if !(r > 0) { // also catches NaN
		return 0
	}
	if r >= 1 {
		return ceiling
	}
	d := time.Duration(r * float64(ceiling))
	return min(max(d, 0), ceiling)
}

// NextAtLeast is [Backoff.Next] with a floor: it returns the larger of hint
// and the jittered delay, for a server that asked the client to try again
// later (close code 1013 with a retry hint). The attempt is counted either
// way. The hint is honoured even when it exceeds Max; a negative hint counts
// as zero.
func (b *Backoff) NextAtLeast(hint time.Duration) time.Duration {
	return max(hint, b.Next())
}

// Connected records that a connection was established at now. It does not
// reset the attempt counter; see [Backoff.Disconnected].
func (b *Backoff) Connected(now time.Time) {
	b.connected = true
	b.connectedAt = now
}

// Disconnected records that the connection was lost at now. If it had been
// up for at least Healthy since the last [Backoff.Connected], the attempt
// counter resets to zero. If it had been up for a tenth of that (1 s by
// default), it was a blip: the next delay is drawn below Min, still with
// full jitter, and the counter restarts from the number of blips in a
// row before this one. So a single blip after an outage does not inherit
// the outage's ceiling (if the quick redial fails, the delays climb again
// from Min), while a server that keeps accepting and closing meets
// ceilings that grow with each blip. A connection closed sooner changes
// nothing: the delays keep growing. Without a preceding Connected it
// changes nothing.
func (b *Backoff) Disconnected(now time.Time) {
	up := now.Sub(b.connectedAt)
	switch {
	case !b.connected:
	case up >= b.healthy:
		b.attempts, b.blips = 0, 0
	case up >= b.healthy/10:
		b.quick = true
		b.attempts = min(b.attempts, b.blips)
		b.blips++
	}
	b.connected = false
}

// Attempts returns the number of delays handed out since New or the last
// reset. It saturates at 2³⁰ rather than overflow.
func (b *Backoff) Attempts() int {
	return b.attempts
}

// maxAttempts bounds the attempt counter so it cannot overflow; the ceiling
// reaches Max long before.
const maxAttempts = 1 << 30

// ceiling returns min(max, min·2^attempts) without overflowing.
func (b *Backoff) ceiling() time.Duration {
	c := b.min
	for range b.attempts {
		if c > b.max/2 {
			return b.max
		}
		c *= 2
	}
	return min(c, b.max)
}
