package testkit

import (
	"context"
	"testing"
	"time"
)

// pollInterval is how often Eventually re-checks its condition.
const pollInterval = 5 * time.Millisecond

// Eventually calls cond until it returns true, checking first at once and
// then every few milliseconds. If cond is still false after timeout,
// Eventually fails the test with tb.Fatalf(format, args...); call it from
// the test's goroutine. cond runs on the caller's goroutine and should not
// block.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	tb.Helper()
	if cond() {
		return
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if cond() {
				return
			}
		case <-deadline.C:
			if cond() {
				return
			}
			tb.Fatalf(format, args...)
			return
		}
	}
}

// Deadline returns a context that is cancelled after d, or when the test
// ends (just before its cleanup functions run), whichever comes first.
func Deadline(tb testing.TB, d time.Duration) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), d)
	tb.Cleanup(cancel)
	return ctx
}
