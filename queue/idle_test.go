package queue_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// idleClock makes s take its times from a fake clock that starts now, so
// that times recorded before it was set (by the pass the writer makes at
// Open) are not in its future.
func idleClock(t *testing.T, s queue.Inbox) *fakeClock {
	t.Helper()
	c := &fakeClock{now: time.Now()}
	switch s := s.(type) {
	case *queue.Bolt:
		queue.SetClock(s, c.Now)
	case *queue.Memory:
		queue.SetMemoryClock(s, c.Now)
	default:
		t.Fatalf("no clock hook for %T", s)
	}
	return c
}

func mustWatermark(t *testing.T, s queue.Inbox, peer string, stream protocol.StreamID, seq uint64) {
	t.Helper()
	if err := s.SetWatermark(testCtx(t), peer, stream, seq); err != nil {
		t.Fatalf("SetWatermark(%q): %v", peer, err)
	}
}

func mustBind(t *testing.T, s queue.Inbox, peer, identity string) {
	t.Helper()
	if err := s.Bind(testCtx(t), peer, identity); err != nil {
		t.Fatalf("Bind(%q): %v", peer, err)
	}
}

func mustTouch(t *testing.T, s queue.Inbox, peer string) {
	t.Helper()
	if err := s.Touch(testCtx(t), peer); err != nil {
		t.Fatalf("Touch(%q): %v", peer, err)
	}
}

// wantWatermark fails unless (peer, stream) reads seq.
func wantWatermark(t *testing.T, s queue.Inbox, peer string, stream protocol.StreamID, seq uint64) {
	t.Helper()
	if got, err := s.Watermark(peer, stream); err != nil || got != seq {
		t.Errorf("Watermark(%q, %x) = %d, %v; want %d", peer, stream[:2], got, err, seq)
	}
}

func wantBinding(t *testing.T, s queue.Inbox, peer, identity string) {
	t.Helper()
	if got, err := s.Binding(peer); err != nil || got != identity {
		t.Errorf("Binding(%q) = %q, %v; want %q", peer, got, err, identity)
	}
}

// TestBoltIdleTouchCheap: a Touch of a peer used moments ago costs no
// commit; the writes record the time too.
func TestBoltIdleTouchCheap(t *testing.T) {
	b := openBolt(t, tempPath(t), &queue.Options{IdleExpiry: time.Hour})
	clock := idleClock(t, b)
	mustBind(t, b, "a", "alice")
	at, err := queue.LastUsed(b, "a")
	if err != nil || !at.Equal(clock.Now().Truncate(time.Millisecond)) {
		t.Fatalf("LastUsed after Bind = %v, %v; want %v", at, err, clock.Now())
	}
	before := queue.Commits(b)
	mustTouch(t, b, "a")
	if c := queue.Commits(b) - before; c != 0 {
		t.Errorf("Touch of a fresh peer took %d commits, want 0", c)
	}
	clock.Advance(time.Minute)
	mustTouch(t, b, "a")
	if at, _ := queue.LastUsed(b, "a"); !at.Equal(clock.Now().Truncate(time.Millisecond)) {
		t.Errorf("LastUsed after Touch = %v, want %v", at, clock.Now())
	}
	if c := queue.Commits(b) - before; c != 1 {
		t.Errorf("Touch a minute later took %d commits, want 1", c)
	}
}

// TestBoltIdleChunks: 5,000 idle peers expire over several bounded
// commits, with no write to drive them after the first.
func TestBoltIdleChunks(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, &queue.Options{IdleExpiry: time.Hour, NoSync: true})
	clock := idleClock(t, b)
	const n = 5000
	var wg sync.WaitGroup
	const writers = 64 // many writers share each commit
	for g := range writers {
		wg.Go(func() {
			for i := g; i < n; i += writers {
				p := fmt.Sprintf("peer-%05d", i)
				if i%10 == 0 {
					if err := b.Bind(testCtx(t), p, "x"); err != nil {
						t.Error(err)
						return
					}
				}
				if err := b.SetWatermark(testCtx(t), p, protocol.StreamID{byte(i)}, 1); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	clock.Advance(2 * time.Hour)
	before := queue.Commits(b)
	mustBind(t, b, "keep", "k")
	eventually(t, "expiry of every idle peer", func() bool {
		seq, err := b.Watermark(fmt.Sprintf("peer-%05d", n-1), protocol.StreamID{byte((n - 1) % 256)})
		return err == nil && seq == 0
	})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if c := queue.Commits(b) - before; c < 5 {
		t.Errorf("expired %d peers in %d commits, want at least 5 (1,024 a commit)", n, c)
	}
	r, err := queue.InspectFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Bindings != 1 || r.Watermarks != 0 || len(r.Clients) != 1 || r.Clients[0].Client != "keep" || r.Clients[0].LastUsed.IsZero() {
		t.Errorf("InspectFile after expiry: %d bindings, %d watermarks, %d clients listed; want only peer keep", r.Bindings, r.Watermarks, len(r.Clients))
	}
}

// TestBoltIdleReopen: last-used times survive Close and Open, and
// expiry counts from them, not from the Open.
func TestBoltIdleReopen(t *testing.T) {
	path := tempPath(t)
	opts := &queue.Options{IdleExpiry: time.Hour}
	b := openBolt(t, path, opts)
	clock := idleClock(t, b)
	mustWatermark(t, b, "a", protocol.StreamID{1}, 3)
	at, _ := queue.LastUsed(b, "a")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBolt(t, path, opts)
	queue.SetClock(b, clock.Now)
	if got, err := queue.LastUsed(b, "a"); err != nil || !got.Equal(at) || at.IsZero() {
		t.Fatalf("LastUsed after reopen = %v, %v; want %v", got, err, at)
	}
	clock.Advance(2 * time.Hour)
	mustTouch(t, b, "z")
	wantWatermark(t, b, "a", protocol.StreamID{1}, 0)
}

// dropBuckets deletes buckets from the closed store at path, as a file
// written before they existed would lack them.
func dropBuckets(t *testing.T, path string, names ...string) {
	t.Helper()
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		for _, name := range names {
			if err := tx.DeleteBucket([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	})
}

// rawUpdate runs fn in a bbolt write transaction on the closed store at
// path, as another program would.
func rawUpdate(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// setVersion writes v as the format version of the closed store at path.
func setVersion(t *testing.T, path string, v uint64) {
	t.Helper()
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("version"), binary.BigEndian.AppendUint64(nil, v))
	})
}

// dropPeerTime deletes peer's last-used time and its index key from the
// closed store at path.
func dropPeerTime(t *testing.T, path, peer string) {
	t.Helper()
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		lb, ib := tx.Bucket([]byte("last_used")), tx.Bucket([]byte("last_used_by_time"))
		v := lb.Get([]byte(peer))
		if len(v) != 8 {
			return fmt.Errorf("no last-used time for %q", peer)
		}
		if err := ib.Delete(append(bytes.Clone(v), peer...)); err != nil {
			return err
		}
		return lb.Delete([]byte(peer))
	})
}

// TestBoltIdleUpgrade: state written without last-used times (an older
// file) counts as used at the Open that finds it, so an upgrade deletes
// nothing at once, and expires from then on.
func TestBoltIdleUpgrade(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, nil)
	mustBind(t, b, "old", "o")
	mustWatermark(t, b, "old", protocol.StreamID{1}, 3)
	mustWatermark(t, b, "older", protocol.StreamID{2}, 4)
	mustPush(t, b, push("pushed", 1))
	mustAckOutbox(t, b, "pushed", 1)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	dropBuckets(t, path, "last_used", "last_used_by_time")
	setVersion(t, path, 3) // as an older program left it
	if err := queue.Check(path); err != nil {
		t.Fatalf("Check of a version 3 file without times: %v", err)
	}

	start := time.Now().Truncate(time.Millisecond)
	b = openBolt(t, path, &queue.Options{IdleExpiry: time.Hour})
	clock := idleClock(t, b)
	for _, p := range []string{"old", "older", "pushed"} {
		eventually(t, "a last-used time for "+p, func() bool {
			at, err := queue.LastUsed(b, p)
			return err == nil && !at.Before(start)
		})
	}
	wantBinding(t, b, "old", "o")
	wantWatermark(t, b, "older", protocol.StreamID{2}, 4)
	clock.Advance(2 * time.Hour)
	mustTouch(t, b, "z")
	wantBinding(t, b, "old", "")
	wantWatermark(t, b, "old", protocol.StreamID{1}, 0)
	wantWatermark(t, b, "older", protocol.StreamID{2}, 0)
	if info := mustInfo(t, b, "pushed"); !info.Stream.IsZero() {
		t.Errorf("OutboxInfo(pushed) = %+v, want the empty outbox gone", info)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// The walk is done: the file promises a time for every peer, and
	// Check holds it to that promise.
	if r, err := queue.InspectFile(path, nil); err != nil || r.Version != 4 {
		t.Fatalf("InspectFile after the walk: version %v, %v; want 4", r.Version, err)
	}
	if err := queue.Check(path); err != nil {
		t.Fatalf("Check after the walk: %v", err)
	}
	dropBuckets(t, path, "last_used", "last_used_by_time")
	if err := queue.Check(path); err == nil || !strings.Contains(err.Error(), "without last used records") {
		t.Fatalf("Check of a version 4 file without times: %v", err)
	}
	setVersion(t, path, 3) // sound again, for the Check after the test
}

// TestBoltPeersTimed: every peer gets a last-used time when it first
// appears, a push outbox included, so a file is version 4 after its
// first Open and a later Open does not walk its peers to find ones
// without a time: a peer whose time is taken away (by a program that
// does not keep them, or damage) gets none back, and Check reports it.
func TestBoltPeersTimed(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, nil)
	mustPush(t, b, push("pushed", 1))
	mustWatermark(t, b, "w", protocol.StreamID{1}, 3)
	mustBind(t, b, "bound", "i")
	for _, p := range []string{"pushed", "w", "bound"} {
		if at, err := queue.LastUsed(b, p); err != nil || at.IsZero() {
			t.Fatalf("LastUsed(%s) = %v, %v; want a time", p, at, err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := queue.Check(path); err != nil {
		t.Fatal(err)
	}
	if r, err := queue.InspectFile(path, nil); err != nil || r.Version != 4 {
		t.Fatalf("InspectFile: version %v, %v; want 4", r.Version, err)
	}
	dropPeerTime(t, path, "pushed")
	b = openBolt(t, path, &queue.Options{IdleExpiry: time.Hour})
	mustTouch(t, b, "z") // a commit after Open's first expiry pass
	if at, err := queue.LastUsed(b, "pushed"); err != nil || !at.IsZero() {
		t.Fatalf("LastUsed(pushed) = %v, %v after a reopen; want none: a version 4 file is not walked", at, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := queue.Check(path); err == nil || !strings.Contains(err.Error(), `"pushed", which has no last used time`) {
		t.Fatalf("Check: %v", err)
	}
	setVersion(t, path, 3) // sound again, for the Check after the test
}

// TestBoltIdleCheck: Check finds a last-used record without its index
// key and an index key without its record.
func TestBoltIdleCheck(t *testing.T) {
	for _, drop := range []string{"last_used", "last_used_by_time"} {
		t.Run(drop, func(t *testing.T) {
			path := tempPath(t)
			b, err := queue.Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			mustWatermark(t, b, "a", protocol.StreamID{1}, 3)
			mustWatermark(t, b, "b", protocol.StreamID{1}, 3)
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if err := queue.Check(path); err != nil {
				t.Fatalf("Check of a sound file: %v", err)
			}
			db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bolt.Tx) error {
				k, _ := tx.Bucket([]byte(drop)).Cursor().First()
				return tx.Bucket([]byte(drop)).Delete(k)
			})
			if cerr := db.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := queue.Check(path); !errors.Is(err, queue.ErrCorrupt) {
				t.Fatalf("Check = %v, want ErrCorrupt", err)
			}
			if _, err := queue.InspectFile(path, nil); err != nil {
				t.Errorf("InspectFile: %v", err)
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// pushBacklog pushes n messages of size bytes to client, 32 per push,
// each with an ID of its own.
func pushBacklog(t *testing.T, b *queue.Bolt, client string, n, size int) {
	t.Helper()
	for i := 0; i < n; i += 32 {
		msgs := make([]queue.Push, min(32, n-i))
		for j := range msgs {
			e := withID(entry(i+j), client)
			e.Payload = make([]byte, size)
			msgs[j] = queue.Push{Client: client, Entry: e}
		}
		mustPush(t, b, msgs...)
	}
}

// TestBoltCompactWaitsForQuiet: a drain that leaves more live data than
// a compaction should copy with every write waiting (another client's
// backlog) is compacted only once the writer has been idle, not in the
// middle of the writes that follow it.
func TestBoltCompactWaitsForQuiet(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, &queue.Options{NoSync: true})
	queue.SetCompactIdle(b, time.Hour)
	const size = 64 << 10
	pushBacklog(t, b, "keep", 96, size)   // 6 MiB that stays
	pushBacklog(t, b, "drain", 320, size) // 20 MiB acked below
	full := b.Stats().FileSize
	mustAckOutbox(t, b, "drain", 320)
	// Writes go on; each is answered after the commit before it, and
	// the compaction that commit would start.
	for i := range 20 {
		if err := b.SetWatermark(testCtx(t), "p", protocol.StreamID{1}, uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.Stats().FileSize; got < full {
		t.Fatalf("file of %d bytes, %d before the drain: compacted while writes went on", got, full)
	}
	// A quiet moment: the next commit arms the wait, which now is short.
	queue.SetCompactIdle(b, 10*time.Millisecond)
	if err := b.SetWatermark(testCtx(t), "p", protocol.StreamID{1}, 100); err != nil {
		t.Fatal(err)
	}
	eventually(t, "compaction once idle", func() bool { return b.Stats().FileSize < full/2 })
	t.Logf("file: %d bytes before the drain, %d once idle", full, b.Stats().FileSize)
	es, err := b.ReadOutbox("keep", 1, 1000, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 96 || es[0].Seq != 1 || es[95].Seq != 96 || len(es[95].Payload) != size {
		t.Fatalf("outbox of keep after the compaction: %d entries, want seqs 1–96 of %d bytes", len(es), size)
	}
}

// TestBoltCompactWaitsForQuietAfterIdleCommit: a compaction held back by
// a drain that the writer committed on its own (acks committed after
// their delay, with no write to ride on) still runs once the writer has
// been idle, though no commit follows.
func TestBoltCompactWaitsForQuietAfterIdleCommit(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, &queue.Options{NoSync: true})
	queue.SetCompactIdle(b, 10*time.Millisecond)
	queue.SetAckDelay(b, time.Millisecond)
	const size = 64 << 10
	pushBacklog(t, b, "keep", 96, size) // 6 MiB that stays
	for i := 1; i <= 320; i++ {         // 20 MiB acked below
		e := entry(i)
		e.Payload = make([]byte, size)
		mustAppend(t, b, e)
	}
	full := b.Stats().FileSize
	if err := b.Ack(testCtx(t), 320); err != nil {
		t.Fatal(err)
	}
	eventually(t, "compaction once idle", func() bool { return b.Stats().FileSize < full/2 })
	t.Logf("file: %d bytes before the acks, %d once idle", full, b.Stats().FileSize)
}

// TestBoltCompactAfterPushDrain: a push backlog acked to empty gives its
// space back to the file system, as a drained client outbox does.
func TestBoltCompactAfterPushDrain(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, &queue.Options{NoSync: true})
	const n, size = 320, 64 << 10 // 20 MiB
	for i := 0; i < n; i += 32 {
		msgs := make([]queue.Push, 32)
		for j := range msgs {
			e := entry(i + j)
			e.Payload = make([]byte, size)
			msgs[j] = queue.Push{Client: "c", Entry: e}
		}
		mustPush(t, b, msgs...)
	}
	full := b.Stats().FileSize
	if full < n*size {
		t.Fatalf("file of %d bytes holds a backlog of %d", full, n*size)
	}
	mustAckOutbox(t, b, "c", n)
	// The writer compacts after answering the ack.
	eventually(t, "compaction after the drain", func() bool { return b.Stats().FileSize < 1<<20 })
	t.Logf("file: %d bytes with the backlog, %d after the drain", full, b.Stats().FileSize)

	// A second drain within compactPause is not compacted: a server
	// whose outboxes keep draining does not copy its data each time.
	// The write after the ack is answered only once the writer is done
	// with the ack's commit, compaction included.
	for i := n; i < 2*n; i += 32 {
		msgs := make([]queue.Push, 32)
		for j := range msgs {
			e := withID(entry(i+j), "c")
			e.Payload = make([]byte, size)
			msgs[j] = queue.Push{Client: "c", Entry: e}
		}
		mustPush(t, b, msgs...)
	}
	mustAckOutbox(t, b, "c", 2*n)
	if err := b.SetWatermark(testCtx(t), "p", protocol.StreamID{1}, 1); err != nil {
		t.Fatal(err)
	}
	if got := b.Stats().FileSize; got < n*size {
		t.Fatalf("file of %d bytes after a second drain within the pause: compacted again", got)
	}
	if err := b.Compact(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := b.Stats().FileSize; got >= 1<<20 {
		t.Fatalf("file of %d bytes after Compact", got)
	}
}
