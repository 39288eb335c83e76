package reliable_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

// bufferedSink is a handler that buffers what it is handed and makes it
// durable only in Flush, the way a handler batching rows into one
// database transaction would. failFlushes makes that many Flush calls
// fail (discarding the buffer, as a rolled-back transaction would);
// panicFlushes makes that many panic.
type bufferedSink struct {
	mu           sync.Mutex
	buffered     []string
	durable      []string
	flushes      int
	failFlushes  int
	panicFlushes int
}

func (b *bufferedSink) handle(_ context.Context, m *reliable.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buffered = append(b.buffered, string(m.Payload))
	return nil
}

func (b *bufferedSink) flush(_ context.Context, _ string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushes++
	if b.panicFlushes > 0 && len(b.buffered) > 0 {
		b.panicFlushes--
		b.buffered = nil
		panic("flush exploded")
	}
	if b.failFlushes > 0 && len(b.buffered) > 0 {
		b.failFlushes--
		b.buffered = nil
		return errors.New("flush failed")
	}
	b.durable = append(b.durable, b.buffered...)
	b.buffered = nil
	return nil
}

func (b *bufferedSink) isDurable(p string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Contains(b.durable, p)
}

// TestFlushBeforeAck: nothing is acknowledged before the Flush that made
// it durable has returned, and Flush runs far less often than the
// handler.
func TestFlushBeforeAck(t *testing.T) {
	b := &bufferedSink{}
	_, url := startServer(t, b.handle, &reliable.ServerOptions{Flush: b.flush, AckBatch: 32})
	c := newClient(t, url, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const n = 500
	var want []string
	for batch := range 10 {
		msgs, payloads := numbered(batch*n/10, n/10)
		want = append(want, payloads...)
		rs, err := c.SendBatch(ctx, msgs)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range rs {
			if err := r.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			if p := string(msgs[i].Payload); !b.isDurable(p) {
				t.Fatalf("message %s acknowledged before a Flush covered it", p)
			}
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Equal(b.durable, want) {
		t.Fatalf("durable: %d messages, want %d in order", len(b.durable), len(want))
	}
	if b.flushes >= n/2 {
		t.Errorf("%d flushes for %d messages: Flush is not amortised", b.flushes, n)
	}
	t.Logf("%d messages, %d flushes", n, b.flushes)
}

// TestFlushFailureRedelivers: a failing or panicking Flush acknowledges
// nothing; the client reconnects and the messages whose effects were
// discarded are handed to the handler again, so each becomes durable
// exactly once and in order.
func TestFlushFailureRedelivers(t *testing.T) {
	for _, tc := range []struct {
		name        string
		fail, panic int
	}{{"error", 3, 0}, {"panic", 0, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			b := &bufferedSink{failFlushes: tc.fail, panicFlushes: tc.panic}
			_, url := startServer(t, b.handle, &reliable.ServerOptions{Flush: b.flush, AckBatch: 16})
			c := newClient(t, url, &reliable.ClientOptions{
				BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var want []string
			for i := range 200 {
				p := strconv.Itoa(i)
				want = append(want, p)
				if _, err := c.Send(ctx, []byte(p)); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.failFlushes != 0 || b.panicFlushes != 0 {
				t.Fatalf("injected faults left unused: %d errors, %d panics", b.failFlushes, b.panicFlushes)
			}
			if !slices.Equal(b.durable, want) {
				t.Fatalf("durable: %d messages, want %d exactly once in order", len(b.durable), len(want))
			}
			if st := c.Stats(); st.Reconnects < uint64(tc.fail+tc.panic) {
				t.Errorf("%d reconnects after %d failed flushes", st.Reconnects, tc.fail+tc.panic)
			}
		})
	}
}
