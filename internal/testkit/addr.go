package testkit

import (
	"testing"

	"github.com/wsreliable/wsreliable/internal/fixedport"
)

// FreeAddr returns a "127.0.0.1:port" address that nothing listens on: for
// a server a test starts, kills and restarts on a fixed port, or for a
// dial that must find no listener. The port lies outside the kernel's
// ephemeral range and stays reserved until the test ends, so that while
// the test's server is down no other process can take it, as a listener
// on port 0 or as the source port of a connection (see [fixedport]).
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	p, err := fixedport.Reserve()
	if err != nil {
		tb.Fatalf("testkit: %v", err)
	}
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Errorf("testkit: %v", err)
		}
	})
	return p.Addr()
}
