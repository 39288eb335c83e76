package fixedport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

// Ports below minPort are privileged on Unix and often well known.
const (
	minPort  = 1024
	maxPort  = 65535
	attempts = 200
)

// Port is a reserved port on 127.0.0.1. Nothing listens on it until the
// caller starts a listener on [Port.Addr].
type Port struct {
	addr    string
	once    sync.Once
	release func() error
	err     error
}

// Reserve picks a free port on 127.0.0.1 outside the kernel's ephemeral
// range and reserves it until [Port.Close] (see the package doc for what
// reserving means on each system). It tries up to 200 random ports and
// returns an error naming the range and the last failure if none is
// free, or if the range cannot be read.
func Reserve() (*Port, error) {
	low, high, err := ephemeralRange()
	if err != nil {
		return nil, fmt.Errorf("fixedport: ephemeral port range: %w", err)
	}
	// Candidates: [minPort, low) and (high, maxPort].
	below := max(low-minPort, 0)
	above := max(maxPort-high, 0)
	if below+above == 0 {
		return nil, fmt.Errorf("fixedport: the ephemeral range %d-%d leaves no port from %d to %d", low, high, minPort, maxPort)
	}
	var last error
	for range attempts {
		i := rand.IntN(below + above)
		port := minPort + i
		if i >= below {
			port = high + 1 + i - below
		}
		release, err := reserve(port)
		if err == nil {
			return &Port{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), release: release}, nil
		}
		last = err
	}
	return nil, fmt.Errorf("fixedport: no free port outside the ephemeral range %d-%d in %d attempts: %w", low, high, attempts, last)
}

// Addr returns the reserved address, "127.0.0.1:port".
func (p *Port) Addr() string { return p.addr }

// Close gives the port up. It does not close listeners started on
// [Port.Addr]. It is idempotent; every call returns the first call's
// error.
func (p *Port) Close() error {
	p.once.Do(func() {
		if err := p.release(); err != nil {
			p.err = fmt.Errorf("fixedport: release %s: %w", p.addr, err)
		}
	})
	return p.err
}
