package queue_test

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

func TestBoltReopenKeepsState(t *testing.T) {
	path := tempPath(t)
	ctx := testCtx(t)
	b, err := queue.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	meta := b.Meta()
	for i := 1; i <= 5; i++ {
		mustAppend(t, b, entry(i))
	}
	if err := b.Ack(ctx, 2); err != nil {
		t.Fatal(err)
	}
	stream := protocol.StreamID{7}
	if err := b.SetWatermark(ctx, "peer", stream, 42); err != nil {
		t.Fatal(err)
	}
	if err := b.Bind(ctx, "client-1", "alice"); err != nil {
		t.Fatal(err)
	}
	before := b.Stats()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := queue.Check(path); err != nil {
		t.Fatalf("Check after Close: %v", err)
	}

	b = openBolt(t, path, nil)
	if b.Meta() != meta {
		t.Errorf("Meta after reopen = %+v, want %+v", b.Meta(), meta)
	}
	after := b.Stats()
	after.FileSize, before.FileSize = 0, 0
	after.DataBytes, before.DataBytes = 0, 0 // the freelist is counted afresh at open
	if after != before {
		t.Errorf("Stats after reopen = %+v, want %+v", after, before)
	}
	got := mustRead(t, b, 0, 0, 0)
	if !slices.Equal(seqs(got), []uint64{3, 4, 5}) {
		t.Fatalf("Read after reopen = %v, want [3 4 5]", seqs(got))
	}
	for _, e := range got {
		want := entry(int(e.Seq))
		want.Seq = e.Seq
		if !sameEntry(e, want) {
			t.Errorf("entry %d = %+v, want %+v", e.Seq, e, want)
		}
	}
	if wm, err := b.Watermark("peer", stream); err != nil || wm != 42 {
		t.Errorf("Watermark after reopen = %d, %v; want 42", wm, err)
	}
	if id, err := b.Binding("client-1"); err != nil || id != "alice" {
		t.Errorf("Binding after reopen = %q, %v; want alice", id, err)
	}
	if seq := mustAppend(t, b, entry(6)); seq != 6 {
		t.Errorf("Append after reopen = %d, want 6", seq)
	}
	meta2, st, err := queue.Inspect(path)
	if !errors.Is(err, queue.ErrLocked) {
		t.Errorf("Inspect of an open store = %+v, %+v, %v; want ErrLocked", meta2, st, err)
	}
}

func TestBoltNewStoresDiffer(t *testing.T) {
	a := openBolt(t, tempPath(t), nil)
	b := openBolt(t, tempPath(t), nil)
	if a.Meta().ClientID == b.Meta().ClientID || a.Meta().Stream == b.Meta().Stream {
		t.Fatalf("two new stores share identity: %+v %+v", a.Meta(), b.Meta())
	}
}

func TestBoltLocked(t *testing.T) {
	path := tempPath(t)
	openBolt(t, path, nil)
	for _, timeout := range []time.Duration{200 * time.Millisecond, 0} {
		want := timeout
		if want == 0 {
			want = time.Second // the default
		}
		start := time.Now()
		b, err := queue.Open(path, &queue.Options{LockTimeout: timeout})
		elapsed := time.Since(start)
		if err == nil {
			_ = b.Close()
			t.Fatalf("second Open of %s in the same process succeeded", path)
		}
		if !errors.Is(err, queue.ErrLocked) {
			t.Fatalf("second Open = %v, want ErrLocked", err)
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("ErrLocked does not name the file: %v", err)
		}
		if elapsed < want-50*time.Millisecond || elapsed > want+2*time.Second {
			t.Errorf("second Open with LockTimeout %v failed after %v", timeout, elapsed)
		}
	}
	if err := queue.Check(path); !errors.Is(err, queue.ErrLocked) {
		t.Errorf("Check of an open store = %v, want ErrLocked", err)
	}
}

func TestBoltOpenErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		opts *queue.Options
	}{
		{"missing parent", filepath.Join(dir, "no", "such", "dir", "q.db"), nil},
		{"directory", dir, nil},
		{"empty path", "", nil},
		{"negative LockTimeout", filepath.Join(dir, "q.db"), &queue.Options{LockTimeout: -1}},
		{"negative MaxBatch", filepath.Join(dir, "q.db"), &queue.Options{MaxBatch: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := queue.Open(tc.path, tc.opts)
			if err == nil {
				_ = b.Close()
				t.Fatal("Open succeeded")
			}
			if errors.Is(err, queue.ErrCorrupt) || errors.Is(err, queue.ErrLocked) {
				t.Errorf("Open = %v: misleading sentinel", err)
			}
			t.Logf("Open: %v", err)
		})
	}
}

// writeStore creates a store at path holding n entries and closes it.
func writeStore(t *testing.T, path string, n int) {
	t.Helper()
	b, err := queue.Open(path, &queue.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		mustAppend(t, b, queue.Entry{Payload: make([]byte, 200+i%50)})
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// editBolt runs fn in an update transaction on the raw bbolt file.
func editBolt(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBoltCorruptFiles(t *testing.T) {
	tests := []struct {
		name string
		make func(t *testing.T, path string)
		want error
	}{
		{"garbage", func(t *testing.T, path string) {
			buf := make([]byte, 64<<10)
			_, _ = rand.Read(buf)
			writeFile(t, path, buf)
		}, queue.ErrCorrupt},
		{"tiny garbage", func(t *testing.T, path string) {
			writeFile(t, path, []byte("not a database"))
		}, queue.ErrCorrupt},
		{"zeros", func(t *testing.T, path string) {
			writeFile(t, path, make([]byte, 32<<10))
		}, queue.ErrCorrupt},
		{"truncated to one page", func(t *testing.T, path string) {
			writeStore(t, path, 2000)
			truncate(t, path, 4096)
		}, queue.ErrCorrupt},
		{"truncated to a tenth", func(t *testing.T, path string) {
			writeStore(t, path, 2000)
			fi, _ := os.Stat(path)
			truncate(t, path, fi.Size()/10)
		}, queue.ErrCorrupt},
		{"foreign bbolt file", func(t *testing.T, path string) {
			editBolt(t, path, func(tx *bolt.Tx) error {
				b, err := tx.CreateBucket([]byte("users"))
				if err != nil {
					return err
				}
				return b.Put([]byte("k"), []byte("v"))
			})
		}, queue.ErrCorrupt},
		{"newer version", func(t *testing.T, path string) {
			writeStore(t, path, 3)
			editBolt(t, path, func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("meta")).Put([]byte("version"), binary.BigEndian.AppendUint64(nil, 99))
			})
		}, queue.ErrVersion},
		{"missing stream ID", func(t *testing.T, path string) {
			writeStore(t, path, 3)
			editBolt(t, path, func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("meta")).Delete([]byte("stream_id"))
			})
		}, queue.ErrCorrupt},
		{"missing outbox", func(t *testing.T, path string) {
			writeStore(t, path, 3)
			editBolt(t, path, func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("outbox")) })
		}, queue.ErrCorrupt},
		{"entry beyond last seq", func(t *testing.T, path string) {
			writeStore(t, path, 3)
			editBolt(t, path, func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("outbox")).Put(binary.BigEndian.AppendUint64(nil, 9), []byte{1})
			})
		}, queue.ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tempPath(t)
			tc.make(t, path)
			b, err := queue.Open(path, &queue.Options{LockTimeout: time.Second})
			if err == nil {
				_ = b.Close()
				t.Fatalf("Open of a %s file succeeded", tc.name)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
			if err := queue.Check(path); !errors.Is(err, tc.want) {
				t.Errorf("Check = %v, want %v", err, tc.want)
			}
			t.Logf("Open: %v", err)
		})
	}
}

// TestBoltDamagedEntries covers damage that Open cannot see: bad entry
// values and overwritten data pages. Reads must report ErrCorrupt, and
// nothing may panic.
func TestBoltDamagedEntries(t *testing.T) {
	t.Run("bad value", func(t *testing.T) {
		path := tempPath(t)
		writeStore(t, path, 3)
		editBolt(t, path, func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("outbox")).Put(binary.BigEndian.AppendUint64(nil, 2), []byte{1, 2, 3})
		})
		if err := queue.Check(path); !errors.Is(err, queue.ErrCorrupt) {
			t.Fatalf("Check = %v, want ErrCorrupt", err)
		}
		b, err := queue.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if _, err := b.Read(1, 0, 0); !errors.Is(err, queue.ErrCorrupt) {
			t.Fatalf("Read over a bad entry = %v, want ErrCorrupt", err)
		}
		// Acking past the damage deletes it and leaves a sound store.
		if err := b.Ack(testCtx(t), 3); err != nil {
			t.Fatalf("Ack over a bad entry: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := queue.Check(path); err != nil {
			t.Fatalf("Check after acking the bad entry: %v", err)
		}
	})
	t.Run("overwritten pages", func(t *testing.T) {
		path := tempPath(t)
		writeStore(t, path, 2000)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		junk := make([]byte, 64<<10)
		_, _ = rand.Read(junk)
		_, werr := f.WriteAt(junk, 4*4096)
		if err := f.Close(); err != nil || werr != nil {
			t.Fatal(err, werr)
		}
		if err := queue.Check(path); !errors.Is(err, queue.ErrCorrupt) {
			t.Errorf("Check = %v, want ErrCorrupt", err)
		}
		b, err := queue.Open(path, nil)
		if err != nil {
			if !errors.Is(err, queue.ErrCorrupt) {
				t.Fatalf("Open = %v, want nil or ErrCorrupt", err)
			}
			return
		}
		defer b.Close()
		_, rerr := b.Read(0, 0, 0)
		_, aerr := b.Append(testCtx(t), entry(1))
		t.Logf("Read: %v; Append: %v", rerr, aerr)
		if rerr == nil && aerr == nil {
			t.Error("neither Read nor Append noticed the damage")
		}
	})
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func TestBoltGroupCommit(t *testing.T) {
	b := openBolt(t, tempPath(t), nil)
	const workers, each = 64, 10
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range each {
				if _, err := b.Append(ctx, entry(i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	commits := queue.Commits(b)
	t.Logf("%d appends in %d commits", workers*each, commits)
	if commits >= workers*each {
		t.Errorf("%d appends took %d commits: no group commit", workers*each, commits)
	}
}

// TestBoltAckRidesAlong: acks cost no commit of their own when appends
// follow; with none, the deletes are committed alone after the delay, or
// by Close.
func TestBoltAckRidesAlong(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, nil)
	queue.SetAckDelay(b, time.Hour)
	ctx := testCtx(t)
	for i := range 10 {
		mustAppend(t, b, entry(i))
		if err := b.Ack(ctx, uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if c := queue.Commits(b); c != 10 {
		t.Errorf("10 appends, each followed by an ack, took %d commits, want 10", c)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBolt(t, path, nil)
	if st := b.Stats(); st.Acked != 10 || st.Messages != 0 {
		t.Errorf("reopened: Stats = %+v, want the last ack committed by Close", st)
	}

	queue.SetAckDelay(b, time.Millisecond)
	mustAppend(t, b, entry(11))
	if err := b.Ack(ctx, 11); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return queue.Commits(b) == 2 },
		"the lone ack's delete committed after the idle delay")
}

// TestBoltAckLargeBacklog: acking more entries than one commit deletes
// takes several commits, all made before Close returns, and nothing
// acked is read again.
func TestBoltAckLargeBacklog(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, &queue.Options{NoSync: true, CompactSize: -1})
	ctx := testCtx(t)
	const n = 70_000 // more than one commit's worth of deletes
	batch := make([]queue.Entry, 1000)
	for range n / len(batch) {
		if _, err := b.AppendBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Ack(ctx, n-1); err != nil {
		t.Fatal(err)
	}
	if got := seqs(mustRead(t, b, 0, 0, 0)); !slices.Equal(got, []uint64{n}) {
		t.Fatalf("Read after acking all but the last = %d entries, want only %d", len(got), n)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBolt(t, path, nil)
	if st := b.Stats(); st.Acked != n-1 || st.Messages != 1 {
		t.Fatalf("reopened: %+v, want %d acked and 1 queued", st, n-1)
	}
	if got := seqs(mustRead(t, b, 0, 0, 0)); !slices.Equal(got, []uint64{n}) {
		t.Fatalf("reopened: Read = %d entries, want only %d", len(got), n)
	}
}

func TestBoltMaxBatch(t *testing.T) {
	b := openBolt(t, tempPath(t), &queue.Options{MaxBatch: 1})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { mustAppend(t, b, entry(1)) })
	}
	wg.Wait()
	if c := queue.Commits(b); c != 8 {
		t.Errorf("8 appends with MaxBatch 1 took %d commits, want 8", c)
	}
}

// TestBoltFailedCommit makes transactions fail as a failing fsync would:
// every request of the batch gets the error, nothing of it is visible, no
// sequence is lost, and later commits succeed.
func TestBoltFailedCommit(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, &queue.Options{MaxMessages: 100})
	ctx := testCtx(t)
	mustAppend(t, b, entry(1))
	if err := b.SetWatermark(ctx, "p", protocol.StreamID{1}, 5); err != nil {
		t.Fatal(err)
	}
	before := b.Stats()

	errFsync := errors.New("injected fsync failure")
	queue.SetFailCommit(b, func() error { return errFsync })
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := b.Append(ctx, entry(i)); !errors.Is(err, errFsync) {
				t.Errorf("Append in failing batch = %v, want injected error", err)
			}
		})
	}
	wg.Go(func() {
		if err := b.SetWatermark(ctx, "p", protocol.StreamID{1}, 9); !errors.Is(err, errFsync) {
			t.Errorf("SetWatermark in failing batch = %v", err)
		}
	})
	wg.Wait()
	queue.SetFailCommit(b, nil)

	after := b.Stats()
	after.FileSize, before.FileSize = 0, 0
	after.DataBytes, before.DataBytes = 0, 0 // the freelist is counted afresh at open
	if after != before {
		t.Errorf("failed commits changed Stats: %+v, want %+v", after, before)
	}
	if wm, _ := b.Watermark("p", protocol.StreamID{1}); wm != 5 {
		t.Errorf("Watermark after failed commit = %d, want 5", wm)
	}
	if got := seqs(mustRead(t, b, 0, 0, 0)); !slices.Equal(got, []uint64{1}) {
		t.Errorf("Read after failed commits = %v, want [1]", got)
	}

	// An ack needs no commit of its own to take effect; a delete commit
	// that fails is retried, and Close commits what is left.
	queue.SetFailCommit(b, func() error { return errFsync })
	if err := b.Ack(ctx, 1); err != nil {
		t.Fatalf("Ack while commits fail: %v", err)
	}
	if st := b.Stats(); st.Acked != 1 || st.Messages != 0 || st.Bytes != 0 {
		t.Errorf("Stats after Ack = %+v, want entry 1 acked", st)
	}
	if got := seqs(mustRead(t, b, 0, 0, 0)); len(got) != 0 {
		t.Errorf("Read after Ack = %v, want nothing", got)
	}
	queue.SetFailCommit(b, nil)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBolt(t, path, nil)
	if st := b.Stats(); st.Acked != 1 || st.Messages != 0 || st.LastSeq != 1 {
		t.Errorf("reopened after Ack and Close: %+v, want entry 1 deleted", st)
	}
	// The failed appends released their room in the limits.
	for i := range 99 {
		if seq := mustAppend(t, b, entry(i)); seq != uint64(i+2) {
			t.Fatalf("Append after failed commits = %d, want %d", seq, i+2)
		}
	}
}

// TestBoltCloseDuringAppends checks that an Append racing with Close
// either returns a sequence that is durable or ErrClosed.
func TestBoltCloseDuringAppends(t *testing.T) {
	path := tempPath(t)
	b, err := queue.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	var (
		mu   sync.Mutex
		done []uint64
		wg   sync.WaitGroup
	)
	started := make(chan struct{}, 16)
	for range 16 {
		wg.Go(func() {
			started <- struct{}{}
			for {
				seq, err := b.Append(ctx, entry(1))
				if errors.Is(err, queue.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				done = append(done, seq)
				mu.Unlock()
			}
		})
	}
	for range 16 {
		<-started
	}
	mustAppend(t, b, entry(0)) // at least one commit before closing
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	b = openBolt(t, path, nil)
	have := map[uint64]bool{}
	for _, e := range mustRead(t, b, 0, 0, 0) {
		have[e.Seq] = true
	}
	for _, seq := range done {
		if !have[seq] {
			t.Fatalf("Append returned seq %d but it is gone after Close and reopen", seq)
		}
	}
	t.Logf("%d appends completed before Close", len(done))
}

func TestBoltCompactionShrinksFile(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: writes over 10 MiB (-short)")
	}
	path := tempPath(t)
	b := openBolt(t, path, &queue.Options{NoSync: true})
	ctx := testCtx(t)
	if err := b.SetWatermark(ctx, "peer", protocol.StreamID{3}, 77); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1000)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for b.Stats().FileSize <= 12<<20 {
				if _, err := b.Append(ctx, queue.Entry{Payload: payload}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	st := b.Stats()
	t.Logf("grown: %d entries, file %d bytes", st.Messages, st.FileSize)
	if err := b.Ack(ctx, st.LastSeq); err != nil {
		t.Fatal(err)
	}
	// The commit that deletes the acked entries (alone after a short
	// idle delay, or with the next write) compacts right after it
	// answers; a write after that waits for the compaction.
	for _, peer := range []string{"sync1", "sync2"} {
		if err := b.Bind(ctx, peer, "point"); err != nil {
			t.Fatal(err)
		}
	}
	st = b.Stats()
	t.Logf("after ack: file %d bytes", st.FileSize)
	if st.FileSize >= 1<<20 {
		t.Errorf("file is %d bytes after acking everything, want < 1 MiB", st.FileSize)
	}
	if wm, err := b.Watermark("peer", protocol.StreamID{3}); err != nil || wm != 77 {
		t.Errorf("Watermark after compaction = %d, %v", wm, err)
	}
	if seq := mustAppend(t, b, entry(1)); seq != st.LastSeq+1 {
		t.Errorf("Append after compaction = %d, want %d", seq, st.LastSeq+1)
	}
	if names := compactTemps(t, path); len(names) > 0 {
		t.Errorf("compaction left temp files: %v", names)
	}
}

// TestBoltCompactMemoryBounded: compacting 64 MiB of live data does not
// take memory in proportion to it. bbolt holds a transaction's copied
// values and dirty pages until it commits; the copy commits every
// compactTxBytes. With the whole copy in one transaction the runtime
// mapped 217 MiB more here.
func TestBoltCompactMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: writes 128 MiB (-short)")
	}
	const live, size = 64 << 20, 8 << 10
	path := tempPath(t)
	b := openBolt(t, path, &queue.Options{NoSync: true, CompactSize: -1})
	ctx := testCtx(t)
	batch := make([]queue.Entry, 64)
	for i := range batch {
		batch[i].Payload = make([]byte, size)
		batch[i].Payload[0] = byte(i)
	}
	for range live / size / len(batch) {
		if _, err := b.AppendBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	before := runtimeMapped()
	if err := b.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	grew := int64(runtimeMapped()) - int64(before)
	t.Logf("compacting %d MiB of live data grew the runtime's mapped memory by %.1f MiB", live>>20, float64(grew)/(1<<20))
	if grew > 32<<20 {
		t.Errorf("compaction grew the runtime's mapped memory by %d MiB, want at most 32 MiB", grew>>20)
	}
	st := b.Stats()
	if want := live / size; st.Messages != want {
		t.Errorf("after compaction %d messages, want %d", st.Messages, want)
	}
	es := mustRead(t, b, uint64(st.Messages), 1, 0)
	if len(es) != 1 || len(es[0].Payload) != size || es[0].Payload[0] != byte((st.Messages-1)%len(batch)) {
		t.Errorf("last entry after compaction: %d entries, want its %d-byte payload", len(es), size)
	}
}

// runtimeMapped is the memory the Go runtime has mapped, released pages
// included: it only grows, so it tells the peak heap a step needed.
func runtimeMapped() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func TestBoltCompactKeepsData(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, &queue.Options{CompactSize: -1})
	ctx := testCtx(t)
	for i := 1; i <= 100; i++ {
		mustAppend(t, b, entry(i))
	}
	if err := b.Ack(ctx, 60); err != nil {
		t.Fatal(err)
	}
	if err := b.Bind(ctx, "c", "alice"); err != nil {
		t.Fatal(err)
	}
	meta := b.Meta()
	// Readers run while compacting.
	stop := keepReading(func() error {
		if es, err := b.Read(0, 0, 0); err != nil || len(es) != 40 {
			return fmt.Errorf("Read during compaction = %d entries, %v", len(es), err)
		}
		return nil
	})
	for range 3 {
		if err := b.Compact(ctx); err != nil {
			t.Fatalf("Compact: %v", err)
		}
	}
	if _, err := stop(); err != nil {
		t.Error(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBolt(t, path, nil)
	if b.Meta() != meta {
		t.Errorf("Meta changed by compaction")
	}
	got := mustRead(t, b, 0, 0, 0)
	if len(got) != 40 || got[0].Seq != 61 {
		t.Fatalf("after compaction Read = %v", seqs(got))
	}
	for _, e := range got {
		want := entry(int(e.Seq))
		want.Seq = e.Seq
		if !sameEntry(e, want) {
			t.Fatalf("entry %d = %+v after compaction", e.Seq, e)
		}
	}
	if id, _ := b.Binding("c"); id != "alice" {
		t.Errorf("Binding after compaction = %q", id)
	}
	if seq := mustAppend(t, b, entry(101)); seq != 101 {
		t.Errorf("Append after compaction = %d, want 101", seq)
	}
}

// TestBoltCrashDuringCompaction simulates a crash before the rename: the
// original file and a half-written temp file. Open must use the original
// and remove the temp file.
func TestBoltCrashDuringCompaction(t *testing.T) {
	path := tempPath(t)
	writeStore(t, path, 10)
	stale := path + ".compact-123456"
	writeFile(t, stale, []byte("half a database"))
	b := openBolt(t, path, nil)
	if n := len(mustRead(t, b, 0, 0, 0)); n != 10 {
		t.Fatalf("Read = %d entries, want 10", n)
	}
	if names := compactTemps(t, path); len(names) > 0 {
		t.Errorf("Open left stale temp files: %v", names)
	}
}

func compactTemps(t *testing.T, path string) []string {
	t.Helper()
	names, err := filepath.Glob(path + ".compact-*")
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestBoltAckRightAfterCommit: an ack of an entry that arrives after the
// entry's commit and before the writer has recorded it (a sender read
// the entry from the file in between and the peer acked it at once)
// deletes it. Clamped to the recorded state, the ack was lost and the
// entry stayed queued after Close (TestFrameFaultSingle saw it about
// once in 25 runs).
func TestBoltAckRightAfterCommit(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, nil)
	var once sync.Once
	ackErr := make(chan error, 1)
	queue.SetAfterCommit(b, func() {
		once.Do(func() { ackErr <- b.AckWith(testCtx(t), 1, nil) })
	})
	mustAppend(t, b, entry(1))
	if err := <-ackErr; err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	_, st, err := queue.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 0 || st.Acked != 1 {
		t.Fatalf("after the ack and Close: %d messages queued, acked %d; want 0 and 1", st.Messages, st.Acked)
	}
}
