package testkit_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
)

// fakeTB records Fatalf instead of stopping the test.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

func TestEventually(t *testing.T) {
	t.Run("already true", func(t *testing.T) {
		calls := 0
		testkit.Eventually(t, time.Second, func() bool { calls++; return true }, "never")
		if calls != 1 {
			t.Errorf("cond called %d times, want 1", calls)
		}
	})
	t.Run("becomes true", func(t *testing.T) {
		calls := 0
		testkit.Eventually(t, 5*time.Second, func() bool { calls++; return calls == 3 }, "never")
		if calls != 3 {
			t.Errorf("cond called %d times, want 3", calls)
		}
	})
	t.Run("times out", func(t *testing.T) {
		f := &fakeTB{TB: t}
		start := time.Now()
		testkit.Eventually(f, 50*time.Millisecond, func() bool { return false }, "still %s after %d", "false", 2)
		if f.failed != "still false after 2" {
			t.Errorf("failure message %q, want %q", f.failed, "still false after 2")
		}
		if el := time.Since(start); el < 50*time.Millisecond {
			t.Errorf("gave up after %v, before the timeout", el)
		}
	})
}

func TestDeadline(t *testing.T) {
	t.Run("expires", func(t *testing.T) {
		start := time.Now()
		ctx := testkit.Deadline(t, 20*time.Millisecond)
		dl, ok := ctx.Deadline()
		if !ok || dl.Before(start) || dl.After(start.Add(time.Second)) {
			t.Fatalf("Deadline() = %v, %v; want about 20ms from now", dl, ok)
		}
		<-ctx.Done() // bounded by the deadline itself
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Errorf("Err() = %v, want DeadlineExceeded", ctx.Err())
		}
	})

	var ctx context.Context
	t.Run("cancelled at cleanup", func(t *testing.T) {
		ctx = testkit.Deadline(t, time.Hour)
		if ctx.Err() != nil {
			t.Fatalf("Err() = %v during the test", ctx.Err())
		}
	})
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Errorf("after the test Err() = %v, want Canceled", ctx.Err())
	}
}
