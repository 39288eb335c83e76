package wsproxy

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Faults are the probabilities, each in [0, 1], that one data message in
// one direction is faulted. At most one fault applies per message, so their
// sum must not exceed 1. The zero value forwards everything untouched.
type Faults struct {
	// Drop is the probability that a message is not forwarded.
	Drop float64
	// Duplicate is the probability that a message is forwarded twice.
	Duplicate float64
	// Reorder is the probability that a message is held and forwarded
	// after the next one.
	Reorder float64
	// Truncate is the probability that a message is cut short.
	Truncate float64
	// Garbage is the probability that a garbage message is injected
	// before the message.
	Garbage float64
}

// Config configures a [Proxy]. The zero value is a transparent proxy: no
// faults, documented timeouts.
type Config struct {
	// ClientToServer faults messages from the client to the target.
	ClientToServer Faults
	// ServerToClient faults messages from the target to the client.
	ServerToClient Faults

	// Seed seeds the random source of each connection accepted while
	// this configuration is in force, together with the connection's
	// number and direction, so a run with the same seed and the same
	// message sequence makes the same choices.
	Seed uint64

	// FaultHandshake lets faults hit the first message of each direction
	// of a connection (the wsreliable hello and welcome). Zero: those two
	// messages are always forwarded untouched.
	FaultHandshake bool

	// ReorderTimeout is how long a held message waits for a successor
	// before it is forwarded anyway. Zero: 50 ms.
	ReorderTimeout time.Duration
	// WriteTimeout bounds every write to either side. Zero: 5 s.
	WriteTimeout time.Duration
	// CloseTimeout is how long the proxy keeps a connection after one
	// side has closed or failed, so the closing handshake can complete
	// through it. Zero: 2 s.
	CloseTimeout time.Duration
	// DialTimeout bounds the dial and handshake with the target. Zero: 5 s.
	DialTimeout time.Duration
	// MaxMessageSize is the largest message the proxy reads from either
	// side; a larger one fails that connection. Zero: 16 MiB.
	MaxMessageSize int64

	// Logger receives connection events at Debug level. Nil: discard.
	Logger *slog.Logger
}

// withDefaults validates c, naming the offending field, and returns a copy
// with defaults filled in.
func (c Config) withDefaults() (Config, error) {
	for _, d := range []struct {
		name string
		f    Faults
	}{
		{"ClientToServer", c.ClientToServer},
		{"ServerToClient", c.ServerToClient},
	} {
		if err := d.f.validate("Config." + d.name); err != nil {
			return c, err
		}
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ReorderTimeout", &c.ReorderTimeout, 50 * time.Millisecond},
		{"WriteTimeout", &c.WriteTimeout, 5 * time.Second},
		{"CloseTimeout", &c.CloseTimeout, 2 * time.Second},
		{"DialTimeout", &c.DialTimeout, 5 * time.Second},
	} {
		if *d.v < 0 {
			return c, fmt.Errorf("wsproxy: Config.%s is negative (%v)", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	switch {
	case c.MaxMessageSize < 0:
		return c, fmt.Errorf("wsproxy: Config.MaxMessageSize is negative (%d)", c.MaxMessageSize)
	case c.MaxMessageSize == 0:
		c.MaxMessageSize = 16 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

func (f Faults) validate(name string) error {
	sum := 0.0
	for _, p := range []struct {
		name string
		v    float64
	}{
		{"Drop", f.Drop},
		{"Duplicate", f.Duplicate},
		{"Reorder", f.Reorder},
		{"Truncate", f.Truncate},
		{"Garbage", f.Garbage},
	} {
		if !(p.v >= 0 && p.v <= 1) { // also catches NaN
			return fmt.Errorf("wsproxy: %s.%s is %v, want a probability in [0, 1]", name, p.name, p.v)
		}
		sum += p.v
	}
	if sum > 1+1e-9 {
		return fmt.Errorf("wsproxy: %s probabilities sum to %v, more than 1", name, sum)
	}
	return nil
}

// fault is the one fault chosen for a message.
type fault int

const (
	faultNone fault = iota
	faultDrop
	faultDuplicate
	faultReorder
	faultTruncate
	faultGarbage
)

// pick draws the fault for one message. It draws exactly once per message
// whatever the probabilities, so changing them keeps the random sequence.
func (f Faults) pick(rng *rand.Rand) fault {
	r := rng.Float64()
	for _, c := range []struct {
		p float64
		f fault
	}{
		{f.Drop, faultDrop},
		{f.Duplicate, faultDuplicate},
		{f.Reorder, faultReorder},
		{f.Truncate, faultTruncate},
		{f.Garbage, faultGarbage},
	} {
		if r < c.p {
			return c.f
		}
		r -= c.p
	}
	return faultNone
}
