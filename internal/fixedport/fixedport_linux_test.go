package fixedport

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func portOf(tb testing.TB, addr string) int {
	tb.Helper()
	_, s, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestOutsideEphemeralRange: every reserved port lies outside the range
// the kernel hands out for port 0 and for outgoing connections.
func TestOutsideEphemeralRange(t *testing.T) {
	low, high, err := ephemeralRange()
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		p, err := Reserve()
		if err != nil {
			t.Fatal(err)
		}
		n := portOf(t, p.Addr())
		if n < minPort || n > maxPort || (n >= low && n <= high) {
			t.Errorf("reserved port %d: want %d-%d outside the ephemeral range %d-%d", n, minPort, maxPort, low, high)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReserveDistinct: ports reserved at the same time are distinct.
func TestReserveDistinct(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		p, err := Reserve()
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		n := portOf(t, p.Addr())
		if seen[n] {
			t.Fatalf("port %d reserved twice", n)
		}
		seen[n] = true
	}
}

// TestReservationHolds: while a port is reserved, with or without a
// listener on it, no second reservation gets it; once given up, it can
// be reserved again.
func TestReservationHolds(t *testing.T) {
	p, err := Reserve()
	if err != nil {
		t.Fatal(err)
	}
	n := portOf(t, p.Addr())
	if _, err := reserve(n); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second reservation of held port %d: %v, want EADDRINUSE", n, err)
	}
	ln, err := net.Listen("tcp", p.Addr())
	if err != nil {
		t.Fatalf("listen beside the reservation: %v", err)
	}
	if _, err := reserve(n); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("reservation of port %d with a listener on it: %v, want EADDRINUSE", n, err)
	}
	ln.Close()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	release, err := reserve(n)
	if err != nil {
		t.Fatalf("port %d after Close: %v", n, err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
}

// TestSourcePortNotReserved: a port that an outgoing connection uses as
// its source port is not reserved.
func TestSourcePortNotReserved(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p, err := Reserve()
	if err != nil {
		t.Fatal(err)
	}
	n := portOf(t, p.Addr())
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: n}}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := reserve(n); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("reservation of port %d, the source port of a connection: %v, want EADDRINUSE", n, err)
	}
}

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        string
		low, high int
		ok        bool
	}{
		{"default", "32768\t60999\n", 32768, 60999, true},
		{"spaces", " 1024 65535 ", 1024, 65535, true},
		{"empty", "", 0, 0, false},
		{"one", "32768\n", 0, 0, false},
		{"three", "1 2 3", 0, 0, false},
		{"reversed", "60999 32768", 0, 0, false},
		{"not numbers", "a b", 0, 0, false},
		{"too high", "32768 70000", 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			low, high, err := parseRange(tc.in)
			if tc.ok != (err == nil) || low != tc.low || high != tc.high {
				t.Fatalf("parseRange(%q) = %d, %d, %v; want %d, %d, ok %v", tc.in, low, high, err, tc.low, tc.high, tc.ok)
			}
			if err != nil && !errors.Is(err, errNoRange) {
				t.Fatalf("parseRange(%q) error %v does not match errNoRange", tc.in, err)
			}
		})
	}
}
