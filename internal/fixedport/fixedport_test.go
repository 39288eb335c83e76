package fixedport_test

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/fixedport"
)

// TestRestartOnReservedPort: nothing listens on a reserved port; a server
// listens there, is closed with a connection in TIME_WAIT on its side and
// listens there again, all while the port stays reserved.
func TestRestartOnReservedPort(t *testing.T) {
	p, err := fixedport.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	if c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second); err == nil {
		c.Close()
		t.Fatalf("dial %s before any listener succeeded", p.Addr())
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s before any listener: %v, want connection refused", p.Addr(), err)
	}

	for run := range 3 {
		ln, err := net.Listen("tcp", p.Addr())
		if err != nil {
			t.Fatalf("run %d: listen on the reserved %s: %v", run, p.Addr(), err)
		}
		c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		// The server closes first, so its side lingers in TIME_WAIT.
		s.Close()
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("read after the server closed returned no error")
		}
		c.Close()
		ln.Close()
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
