package testkit

import (
	"testing"

	"github.com/wsreliable/wsreliable/internal/faultnet"
)

// Proxy is the fault-injecting TCP proxy of package faultnet.
type Proxy = faultnet.Proxy

// NewProxy starts a [Proxy] on 127.0.0.1 forwarding to target. It fails the
// test if it cannot listen; tb's cleanup closes it and waits for all its
// goroutines.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := faultnet.Listen(target)
	if err != nil {
		tb.Fatalf("testkit: %v", err)
	}
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Errorf("testkit: proxy close: %v", err)
		}
	})
	return p
}
