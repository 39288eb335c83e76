package testkit

import (
	"net"
	"testing"
)

// FreeAddr returns a "127.0.0.1:port" address that nothing listens on at
// the time of the call: for a server a test starts later on a fixed port,
// or for a dial that must find no listener.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testkit: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
