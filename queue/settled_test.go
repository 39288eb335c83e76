package queue_test

import (
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

func TestSettledConformance(t *testing.T) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(*testing.T, *queue.Options) outboxStore)
	}{
		{"TrackSettled", testSettledTrack},
		{"TrackSettledOff", testSettledTrackOff},
	}
	for _, s := range outboxStores {
		t.Run(s.name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, s.open) })
			}
		})
	}
}

// fakeClock is a settable clock for settlement times.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// useClock makes s take settlement times from a fake clock, which it
// returns.
func useClock(t *testing.T, s outboxStore) *fakeClock {
	t.Helper()
	c := &fakeClock{now: time.UnixMilli(1_700_000_000_000)}
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

// pushN pushes n entries with distinct IDs (entry(base+i)) to client.
func pushN(t *testing.T, s outboxStore, client string, base, n int) []protocol.MessageID {
	t.Helper()
	ids := make([]protocol.MessageID, n)
	for i := range n {
		p := push(client, base+i)
		ids[i] = p.Entry.ID
		mustPush(t, s, p)
	}
	return ids
}

func mustStatus(t *testing.T, s queue.Settlements, id protocol.MessageID) queue.Settled {
	t.Helper()
	st, found, err := s.Status(id)
	if err != nil || !found {
		t.Fatalf("Status(%x) = %+v, %v, %v; want found", id, st, found, err)
	}
	return st
}

func mustNoStatus(t *testing.T, s queue.Settlements, id protocol.MessageID) {
	t.Helper()
	if st, found, err := s.Status(id); err != nil || found {
		t.Fatalf("Status(%x) = %+v, %v, %v; want not found", id, st, found, err)
	}
}

func mustUnreported(t *testing.T, s queue.Settlements, max int) []queue.Settled {
	t.Helper()
	out, err := s.Unreported(max)
	if err != nil {
		t.Fatalf("Unreported(%d): %v", max, err)
	}
	return out
}

func mustMarkReported(t *testing.T, s queue.Settlements, ids ...protocol.MessageID) {
	t.Helper()
	if err := s.MarkReported(testCtx(t), ids); err != nil {
		t.Fatalf("MarkReported: %v", err)
	}
}

func ids(ss []queue.Settled) []protocol.MessageID {
	out := make([]protocol.MessageID, len(ss))
	for i, s := range ss {
		out[i] = s.ID
	}
	return out
}

// eventually polls cond every millisecond until it holds or 5 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func testSettledTrack(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	s := open(t, &queue.Options{TrackSettled: true})
	var id []protocol.MessageID
	for i := range 4 {
		mustAppend(t, s, entry(i+1))
		id = append(id, entry(i+1).ID)
	}
	mustNoStatus(t, s, id[0]) // no pending records for the client outbox
	if err := s.AckWith(testCtx(t), 2, []queue.Outcome{{Seq: 2, Code: 3, Reason: "too big"}, {Seq: 3, Code: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(testCtx(t), 3); err != nil {
		t.Fatal(err)
	}
	// Bolt writes the records with its deferred delete commit.
	eventually(t, "records of the acked entries", func() bool {
		_, found, _ := s.Status(id[2])
		return found
	})
	want := []queue.Settled{
		{ID: id[0], Seq: 1},
		{ID: id[1], Seq: 2, Code: 3, Reason: "too big"},
		{ID: id[2], Seq: 3}, // its outcome came with an ack that did not cover it
	}
	for _, w := range want {
		got := mustStatus(t, s, w.ID)
		if got.At.IsZero() {
			t.Errorf("Status(%x) has no settlement time", w.ID)
		}
		got.At = time.Time{}
		if got != w {
			t.Errorf("Status = %+v, want %+v", got, w)
		}
	}
	mustNoStatus(t, s, id[3])
	if got := mustUnreported(t, s, 0); len(got) != 3 {
		t.Fatalf("Unreported = %+v, want 3", got)
	}
	mustMarkReported(t, s, id[0])
	if got := mustUnreported(t, s, 0); len(got) != 2 {
		t.Fatalf("Unreported after MarkReported = %+v, want 2", got)
	}
}

func testSettledTrackOff(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	s := open(t, nil)
	mustAppend(t, s, entry(1))
	if err := s.AckWith(testCtx(t), 1, []queue.Outcome{{Seq: 1, Code: 1}}); err != nil {
		t.Fatal(err)
	}
	if b, ok := s.(*queue.Bolt); ok {
		eventually(t, "the delete commit", func() bool { return queue.Commits(b) == 2 })
	}
	mustNoStatus(t, s, entry(1).ID)
	if got := mustUnreported(t, s, 0); len(got) != 0 {
		t.Fatalf("Unreported = %+v, want none", got)
	}
}

// fileVersion reads the format version of the closed store file at path
// and whether it holds settlement records.
func fileVersion(t *testing.T, path string) (version uint64, records bool) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		version = binary.BigEndian.Uint64(tx.Bucket([]byte("meta")).Get([]byte("version")))
		records = tx.Bucket([]byte("settled")) != nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return version, records
}

// TestBoltSettledNoCost: without TrackSettled and pushes, a client store
// writes no records, spends no extra commit, and its file stays format
// version 1; the first push makes it version 4 (2 for the records, 4
// for the outbox's peer, which has a last-used time).
func TestBoltSettledNoCost(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, nil)
	mustAppend(t, b, entry(1))
	mustAppend(t, b, entry(2))
	if err := b.AckWith(testCtx(t), 2, []queue.Outcome{{Seq: 1, Code: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if c := queue.Commits(b); c != 3 {
		t.Errorf("2 appends and an ack took %d commits, want 3", c)
	}
	if v, records := fileVersion(t, path); v != 1 || records {
		t.Fatalf("file version %d, records %v; want 1 and none", v, records)
	}
	b = openBolt(t, path, nil)
	mustPush(t, b, push("a", 1))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if v, records := fileVersion(t, path); v != 4 || !records {
		t.Fatalf("file version %d, records %v after a push; want 4 and some", v, records)
	}
}

// TestBoltSettledReopen: statuses and unreported records survive Close
// and Open, so settlements made before a restart are reported after it.
func TestBoltSettledReopen(t *testing.T) {
	path := tempPath(t)
	opts := &queue.Options{TrackSettled: true, OutboxMaxMessages: 3, OutboxEvict: true}
	b := openBolt(t, path, opts)
	// Records are reported in the order of their times: each step
	// settles a millisecond after the one before. The clock starts now,
	// so that after the reopen the records are not past their retention.
	clock := idleClock(t, b)
	id := pushN(t, b, "a", 1, 5) // evicts 1 and 2
	clock.Advance(time.Millisecond)
	if err := b.AckOutbox(testCtx(t), "a", 4, []queue.Outcome{{Seq: 4, Code: 2, Reason: "expired"}}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Millisecond)
	mustAppend(t, b, entry(100))
	if err := b.AckWith(testCtx(t), 1, []queue.Outcome{{Seq: 1, Code: 1, Reason: "no"}}); err != nil {
		t.Fatal(err)
	}
	mustMarkReported(t, b, id[0])
	// Close commits the pending delete and its record.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBolt(t, path, opts)
	unreported := mustUnreported(t, b, 0)
	if got, want := ids(unreported), []protocol.MessageID{id[1], id[2], id[3], entry(100).ID}; !slices.Equal(got, want) {
		t.Fatalf("Unreported after reopen = %x, want %x", got, want)
	}
	last := unreported[3]
	last.At = time.Time{}
	if last != (queue.Settled{ID: entry(100).ID, Seq: 1, Code: 1, Reason: "no"}) {
		t.Fatalf("client outbox record after reopen = %+v", last)
	}
	for i, code := range []uint16{5, 5, 0, 2} {
		if got := mustStatus(t, b, id[i]); got.Code != code || got.Pending {
			t.Errorf("Status of seq %d after reopen = %+v, want code %d", i+1, got, code)
		}
	}
	if got := mustStatus(t, b, id[4]); !got.Pending {
		t.Errorf("Status of seq 5 after reopen = %+v, want pending", got)
	}
}

// TestBoltSettledPruneIdle: reported records past a short retention are
// pruned by the writer without any other write.
func TestBoltSettledPruneIdle(t *testing.T) {
	b := openBolt(t, tempPath(t), &queue.Options{StatusRetention: 5 * time.Millisecond})
	id := pushN(t, b, "a", 1, 2)
	mustAckOutbox(t, b, "a", 2)
	mustMarkReported(t, b, id[0])
	eventually(t, "pruning of the reported record", func() bool {
		_, found, err := b.Status(id[0])
		return err == nil && !found
	})
	mustStatus(t, b, id[1]) // unreported: kept
}

// TestBoltSettledPruneChunks: a large reported backlog is pruned in
// several bounded commits, all of it in the end.
func TestBoltSettledPruneChunks(t *testing.T) {
	b := openBolt(t, tempPath(t), &queue.Options{StatusRetention: time.Hour, OutboxMaxMessages: -1})
	clock := useClock(t, b)
	const n = 3000
	msgs := make([]queue.Push, n)
	var all []protocol.MessageID
	for i := range msgs {
		msgs[i] = queue.Push{Client: "a", Entry: entry(i)}
		all = append(all, entry(i).ID)
	}
	mustPush(t, b, msgs...)
	mustAckOutbox(t, b, "a", n)
	mustMarkReported(t, b, all...)
	before := queue.Commits(b)
	clock.Advance(2 * time.Hour)
	if err := b.SetWatermark(testCtx(t), "p", protocol.StreamID{1}, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pruning of every record", func() bool {
		_, found, err := b.Status(all[n-1])
		return err == nil && !found
	})
	for _, id := range all {
		mustNoStatus(t, b, id)
	}
	// A reader can see the last prune before the writer counts its
	// commit; the writer answers this write only after that.
	if err := b.SetWatermark(testCtx(t), "p", protocol.StreamID{1}, 2); err != nil {
		t.Fatal(err)
	}
	if c := queue.Commits(b) - before - 1; c < 3 {
		t.Errorf("pruned %d records in %d commits, want at least 3 (1,024 a commit)", n, c)
	}
}

// TestBoltSettledFailedCommit: a failing transaction writes no record.
func TestBoltSettledFailedCommit(t *testing.T) {
	b := openBolt(t, tempPath(t), &queue.Options{TrackSettled: true})
	ctx := testCtx(t)
	id := pushN(t, b, "a", 1, 2)
	mustAppend(t, b, entry(50))
	errFsync := errors.New("injected fsync failure")
	queue.SetFailCommit(b, func() error { return errFsync })
	if _, _, err := b.Push(ctx, []queue.Push{push("a", 3)}); !errors.Is(err, errFsync) {
		t.Fatalf("Push = %v, want injected error", err)
	}
	if err := b.AckOutbox(ctx, "a", 1, []queue.Outcome{{Seq: 1, Code: 1}}); !errors.Is(err, errFsync) {
		t.Fatalf("AckOutbox = %v, want injected error", err)
	}
	mustNoStatus(t, b, push("a", 3).Entry.ID)
	if got := mustStatus(t, b, id[0]); !got.Pending {
		t.Fatalf("Status after a failed ack = %+v, want pending", got)
	}
	queue.SetFailCommit(b, nil)
	mustAckOutbox(t, b, "a", 1)
	queue.SetFailCommit(b, func() error { return errFsync })
	if err := b.MarkReported(ctx, id[:1]); !errors.Is(err, errFsync) {
		t.Fatalf("MarkReported = %v, want injected error", err)
	}
	// A client outbox delete that fails keeps its outcome for the retry.
	var failed atomic.Int64
	queue.SetFailCommit(b, func() error { failed.Add(1); return errFsync })
	if err := b.AckWith(ctx, 1, []queue.Outcome{{Seq: 1, Code: 4, Reason: "attempts"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a failed delete commit", func() bool { return failed.Load() > 0 })
	mustNoStatus(t, b, entry(50).ID)
	queue.SetFailCommit(b, nil)
	if got := ids(mustUnreported(t, b, 0)); !slices.Equal(got, id[:1]) {
		t.Fatalf("Unreported after failed commits = %x, want %x", got, id[:1])
	}
	eventually(t, "the retried delete commit", func() bool {
		_, found, _ := b.Status(entry(50).ID)
		return found
	})
	if got := mustStatus(t, b, entry(50).ID); got.Code != 4 || got.Reason != "attempts" {
		t.Fatalf("client outbox record = %+v, want code 4", got)
	}
}

// TestBoltSettledCrashBeforeDelete: outcomes wait in memory with the ack;
// a crash before the delete commit brings the entries back and writes no
// record.
func TestBoltSettledCrashBeforeDelete(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, &queue.Options{TrackSettled: true})
	mustAppend(t, b, entry(1))
	errCrash := errors.New("crashed")
	queue.SetFailCommit(b, func() error { return errCrash })
	if err := b.AckWith(testCtx(t), 1, []queue.Outcome{{Seq: 1, Code: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil { // its last delete commit fails too
		t.Fatal(err)
	}
	b = openBolt(t, path, &queue.Options{TrackSettled: true})
	if got := seqs(mustRead(t, b, 0, 0, 0)); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("Read after the crash = %v, want [1] back", got)
	}
	mustNoStatus(t, b, entry(1).ID)
}

// TestBoltAckedRanges: with SettleReported an outbox ack writes one range
// instead of rewriting a record per entry; entries with an outcome get
// records of their own. Statuses read the same, Inspect counts the
// ranged records as reported, the file becomes version 3, compaction
// keeps the ranges, and pruning removes ranges and records together
// (the cleanup's Check verifies the indexes).
func TestBoltAckedRanges(t *testing.T) {
	path := tempPath(t)
	opts := &queue.Options{SettleReported: true, StatusRetention: 20 * time.Millisecond}
	b := openBolt(t, path, opts)
	// Time stands still (from now) until the reopen, so nothing is
	// pruned before Inspect has counted it, however slow the machine.
	idleClock(t, b)
	id := pushN(t, b, "a", 1, 5)
	mustAckOutbox(t, b, "a", 2)
	if err := b.AckOutbox(testCtx(t), "a", 4, []queue.Outcome{{Seq: 4, Code: uint16(protocol.RejectHandler), Reason: "no"}}); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		pending bool
		code    uint16
	}{{false, 0}, {false, 0}, {false, 0}, {false, uint16(protocol.RejectHandler)}, {true, 0}}
	for i, w := range want {
		if got := mustStatus(t, b, id[i]); got.Pending != w.pending || got.Code != w.code || got.Seq != uint64(i+1) || got.Pending == !got.At.IsZero() {
			t.Errorf("Status of seq %d = %+v, want pending %v code %d", i+1, got, w.pending, w.code)
		}
	}
	if err := b.Compact(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := mustStatus(t, b, id[0]); got.Pending {
		t.Fatalf("Status after compaction = %+v, want acknowledged", got)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := queue.InspectFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Version != 4 || r.Settled != (queue.SettledCounts{Pending: 1, Reported: 4}) {
		t.Fatalf("Inspect: version %d, settled %+v; want 4 and 1 pending, 4 reported", r.Version, r.Settled)
	}
	b = openBolt(t, path, opts)
	// Past the retention, a commit prunes.
	eventually(t, "pruning of the ranged records", func() bool {
		if err := b.SetWatermark(testCtx(t), "p", protocol.StreamID{1}, 1); err != nil {
			t.Fatal(err)
		}
		_, found, err := b.Status(id[0])
		return err == nil && !found
	})
	eventually(t, "pruning of every settled record", func() bool {
		for _, x := range id[:4] {
			if _, found, _ := b.Status(x); found {
				return false
			}
		}
		return true
	})
	if got := mustStatus(t, b, id[4]); !got.Pending {
		t.Fatalf("Status of the pending entry = %+v", got)
	}
}
