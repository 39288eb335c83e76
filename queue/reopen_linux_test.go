package queue_test

import (
	"errors"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/queue"
)

// TestBoltReopensAfterWrites: a store whose bbolt handle has written
// enough pages opens its file again once idle, with a fresh handle. The
// file stays locked throughout (a second Open, which takes the lock as
// another process would, fails before and after), reads running across
// the swap see the data, and the store goes on: writes, acks, Close and
// a later Open find everything in place.
func TestBoltReopensAfterWrites(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, &queue.Options{NoSync: true})
	queue.SetReopenAfter(b, 1<<20)
	queue.SetReleaseIdle(b, time.Hour)
	const size = 32 << 10
	pushBacklog(t, b, "c", 64, size) // 2 MiB of pages and more

	locked := func(when string) {
		t.Helper()
		other, err := queue.Open(path, &queue.Options{LockTimeout: 20 * time.Millisecond})
		if err == nil {
			_ = other.Close()
		}
		if !errors.Is(err, queue.ErrLocked) {
			t.Fatalf("second Open %s: %v, want ErrLocked", when, err)
		}
	}
	locked("before the reopen")

	// Readers keep reading while the writer goes idle and reopens.
	stop := keepReading(func() error {
		es, err := b.ReadOutbox("c", 1, 1000, 1<<30)
		if err == nil && len(es) != 64 {
			err = errors.New("outbox of c does not hold its 64 entries")
		}
		return err
	})
	queue.SetReleaseIdle(b, 10*time.Millisecond)
	mustPush(t, b, queue.Push{Client: "d", Entry: withID(entry(1000), "d")}) // arms the idle timer anew
	eventually(t, "a reopen once idle", func() bool { return queue.Reopens(b) >= 1 })
	reads, err := stop()
	if err != nil {
		t.Fatalf("read during the reopen: %v", err)
	}
	t.Logf("%d reads ran across the reopen", reads)
	locked("after the reopen")

	// The store goes on with the new handle.
	mustAckOutbox(t, b, "c", 64)
	pushBacklog(t, b, "e", 32, size)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBolt(t, path, nil)
	for client, want := range map[string]int{"c": 0, "d": 1, "e": 32} {
		info, err := b.OutboxInfo(client)
		if err != nil {
			t.Fatal(err)
		}
		if info.Messages != want {
			t.Errorf("outbox of %s after Close and Open: %d entries, want %d", client, info.Messages, want)
		}
	}
}
