package queue_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// fanout returns one message for each of n clients.
func fanout(n int, e queue.Entry) []queue.Push {
	msgs := make([]queue.Push, n)
	for i := range msgs {
		c := fmt.Sprintf("client-%05d", i)
		msgs[i] = queue.Push{Client: c, Entry: withID(e, c)}
	}
	return msgs
}

// allClients pages through s.Clients.
func allClients(t testing.TB, s queue.Outboxes) []queue.OutboxInfo {
	t.Helper()
	var all []queue.OutboxInfo
	after := ""
	for {
		page, err := s.Clients(after, 1000)
		if err != nil {
			t.Fatalf("Clients(%q): %v", after, err)
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].Client
	}
}

// TestBoltFanoutOneCommit: one message to 10,000 clients is one commit;
// closed and reopened, every outbox is there with its stream.
func TestBoltFanoutOneCommit(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, nil)
	const n = 10_000
	msgs := fanout(n, entry(1))
	before := queue.Commits(b)
	start := time.Now()
	seqs, evicted := mustPush(t, b, msgs...)
	t.Logf("fan-out to %d clients: %v", n, time.Since(start))
	if c := queue.Commits(b) - before; c != 1 {
		t.Fatalf("fan-out to %d clients took %d commits, want 1", n, c)
	}
	if len(evicted) != 0 || slices.ContainsFunc(seqs, func(s uint64) bool { return s != 1 }) {
		t.Fatalf("fan-out: evicted %v, seqs not all 1", evicted)
	}
	infos := allClients(t, b)
	if len(infos) != n {
		t.Fatalf("Clients lists %d outboxes, want %d", len(infos), n)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := queue.Check(path); err != nil {
		t.Fatalf("Check: %v", err)
	}
	b = openBolt(t, path, nil)
	again := allClients(t, b)
	for i := range infos {
		if again[i] != infos[i] {
			t.Fatalf("after reopen %+v, before %+v", again[i], infos[i])
		}
	}
	got := mustReadOutbox(t, b, msgs[n/2].Client, 0)
	want := msgs[n/2].Entry
	want.Seq = 1
	if len(got) != 1 || !sameEntry(got[0], want) {
		t.Fatalf("ReadOutbox after reopen = %+v", got)
	}
}

// TestBoltOutboxReopen: what was pushed and not acked (nor evicted) is
// there after Close and Open, with the same streams, and sequences go on.
func TestBoltOutboxReopen(t *testing.T) {
	path := tempPath(t)
	opts := &queue.Options{OutboxMaxMessages: 4, OutboxEvict: true}
	b := openBolt(t, path, opts)
	for i := range 6 {
		mustPush(t, b, push("a", i), push("b", i), push("c", i))
	}
	mustAckOutbox(t, b, "b", 4)
	mustAckOutbox(t, b, "c", 6)
	mustAppend(t, b, entry(1)) // the client role is untouched
	infos := allClients(t, b)
	contents := map[string][]queue.Entry{}
	for _, c := range []string{"a", "b", "c"} {
		contents[c] = mustReadOutbox(t, b, c, 0)
	}
	if got := seqs(contents["a"]); !slices.Equal(got, []uint64{3, 4, 5, 6}) {
		t.Fatalf("a holds %v, want [3 4 5 6] (4 kept of 6)", got)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBolt(t, path, opts)
	if again := allClients(t, b); !slices.Equal(again, infos) {
		t.Fatalf("after reopen %+v, want %+v", again, infos)
	}
	for c, want := range contents {
		got := mustReadOutbox(t, b, c, 0)
		if len(got) != len(want) {
			t.Fatalf("client %s holds %v after reopen, want %v", c, seqs(got), seqs(want))
		}
		for i := range want {
			if !sameEntry(got[i], want[i]) {
				t.Errorf("client %s: %+v, want %+v", c, got[i], want[i])
			}
		}
	}
	if got, _ := mustPush(t, b, push("c", 7)); got[0] != 7 {
		t.Fatalf("Push after reopen = %v, want [7]", got)
	}
	if info := mustInfo(t, b, "c"); info.Stream != infos[2].Stream {
		t.Fatalf("stream changed: %v, was %v", info.Stream, infos[2].Stream)
	}
	if st := b.Stats(); st.Messages != 1 || st.LastSeq != 1 {
		t.Errorf("client outbox after reopen: %+v", st)
	}
}

// TestBoltOutboxGroupCommit: pushes and outbox acks from many goroutines
// share commits with each other and with appends and watermarks.
func TestBoltOutboxGroupCommit(t *testing.T) {
	b := openBolt(t, tempPath(t), &queue.Options{OutboxMaxMessages: -1})
	const workers, each = 64, 10
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			client := fmt.Sprintf("c%d", w%8)
			for i := range each {
				var err error
				switch i % 4 {
				case 0, 1:
					var seqs []uint64
					seqs, _, err = b.Push(ctx, []queue.Push{push(client, i)})
					if err == nil && i == 1 {
						err = b.AckOutbox(ctx, client, seqs[0], nil)
					}
				case 2:
					_, err = b.Append(ctx, entry(i))
				case 3:
					err = b.SetWatermark(ctx, client, protocol.StreamID{1}, uint64(i))
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	ops := int64(workers * (each + each/4))
	commits := queue.Commits(b)
	t.Logf("%d writes in %d commits", ops, commits)
	if commits >= ops/2 {
		t.Errorf("%d writes took %d commits: little group commit", ops, commits)
	}
}

// TestBoltOutboxNoCommit: a push refused for the limits and an outbox ack
// that changes nothing cost no commit.
func TestBoltOutboxNoCommit(t *testing.T) {
	b := openBolt(t, tempPath(t), &queue.Options{OutboxMaxMessages: 1})
	mustPush(t, b, push("a", 1))
	before := queue.Commits(b)
	if _, _, err := b.Push(testCtx(t), []queue.Push{push("a", 2)}); !errors.Is(err, queue.ErrFull) {
		t.Fatalf("Push = %v, want ErrFull", err)
	}
	mustAckOutbox(t, b, "a", 0)
	mustAckOutbox(t, b, "nobody", 5)
	if c := queue.Commits(b) - before; c != 0 {
		t.Errorf("refused push and no-op acks took %d commits, want 0", c)
	}
	mustAckOutbox(t, b, "a", 1)
	if c := queue.Commits(b) - before; c != 1 {
		t.Errorf("an outbox ack took %d commits, want 1", c)
	}
}

// TestBoltOutboxFailedCommit: a push or outbox ack in a failing
// transaction returns the error and leaves no trace; later ones succeed.
func TestBoltOutboxFailedCommit(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, nil)
	ctx := testCtx(t)
	mustPush(t, b, push("a", 1), push("a", 2))
	before := allClients(t, b)

	errFsync := errors.New("injected fsync failure")
	queue.SetFailCommit(b, func() error { return errFsync })
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			if _, _, err := b.Push(ctx, []queue.Push{push("a", i), push(fmt.Sprint("new", i), i)}); !errors.Is(err, errFsync) {
				t.Errorf("Push in failing batch = %v, want injected error", err)
			}
		})
	}
	wg.Go(func() {
		if err := b.AckOutbox(ctx, "a", 1, nil); !errors.Is(err, errFsync) {
			t.Errorf("AckOutbox in failing batch = %v, want injected error", err)
		}
	})
	wg.Wait()
	queue.SetFailCommit(b, nil)

	if after := allClients(t, b); !slices.Equal(after, before) {
		t.Fatalf("failed commits changed the outboxes: %+v, want %+v", after, before)
	}
	if got := seqs(mustReadOutbox(t, b, "a", 0)); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("ReadOutbox after failed commits = %v, want [1 2]", got)
	}
	if got, _ := mustPush(t, b, push("a", 3)); got[0] != 3 {
		t.Fatalf("Push after failed commits = %v, want [3]", got)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBolt(t, path, nil)
	if info := mustInfo(t, b, "new0"); !info.Stream.IsZero() {
		t.Fatalf("failed push created an outbox: %+v", info)
	}
}

// TestBoltOldFormatFile opens a file as earlier releases wrote it (version
// 1 entries, no push bucket), built here by hand: it opens, reads, and
// takes pushes.
func TestBoltOldFormatFile(t *testing.T) {
	path := tempPath(t)
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	v1 := func(id byte, payload string) []byte {
		v := append([]byte{1}, make([]byte, 16)...)
		v[1] = id
		v = append(v, 1, 1, 'k', 1, 'v') // one header k=v
		return append(v, payload...)
	}
	editBolt(t, path, func(tx *bolt.Tx) error {
		mb, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		for k, v := range map[string][]byte{
			"version": u64(1), "client_id": []byte("old-client"), "stream_id": make([]byte, 16),
			"last_seq": u64(3), "acked_seq": u64(1), "queued_bytes": u64(2 + 3 + 2 + 5),
		} {
			if err := mb.Put([]byte(k), v); err != nil {
				return err
			}
		}
		mb.Put([]byte("stream_id"), []byte("0123456789abcdef"))
		ob, err := tx.CreateBucket([]byte("outbox"))
		if err != nil {
			return err
		}
		ob.Put(u64(2), v1(2, "two"))
		ob.Put(u64(3), v1(3, "three"))
		wb, _ := tx.CreateBucket([]byte("watermarks"))
		wb.Put(append([]byte("peer"), make([]byte, 16)...), u64(9))
		_, err = tx.CreateBucket([]byte("bindings"))
		return err
	})
	if err := queue.Check(path); err != nil {
		t.Fatalf("Check of the old file: %v", err)
	}
	b := openBolt(t, path, nil)
	got := mustRead(t, b, 0, 0, 0)
	if len(got) != 2 || string(got[0].Payload) != "two" || got[1].ID[0] != 3 || got[1].Headers[0] != (protocol.Header{Key: "k", Value: "v"}) || got[0].Expires != 0 {
		t.Fatalf("Read of the old file = %+v", got)
	}
	if wm, err := b.Watermark("peer", protocol.StreamID{}); err != nil || wm != 9 {
		t.Fatalf("Watermark = %d, %v", wm, err)
	}
	if cs, err := b.Clients("", 0); err != nil || len(cs) != 0 {
		t.Fatalf("Clients of the old file = %v, %v", cs, err)
	}
	if info := mustInfo(t, b, "x"); !info.Stream.IsZero() {
		t.Fatalf("OutboxInfo of the old file = %+v", info)
	}
	mustPush(t, b, push("x", 1))
	mustAppend(t, b, entry(4))
	if err := b.Ack(testCtx(t), 3); err != nil {
		t.Fatal(err)
	}
	if got := seqs(mustRead(t, b, 0, 0, 0)); !slices.Equal(got, []uint64{4}) {
		t.Fatalf("Read = %v, want [4]", got)
	}
}

// TestBoltOutboxDamage: damaged outboxes are reported as ErrCorrupt by
// the calls that meet them and by Check, fail only the request that meets
// them, and never panic.
func TestBoltOutboxDamage(t *testing.T) {
	// The push outboxes are two flat buckets: meta by client ID, entries
	// by 2-byte ID length, ID and 8-byte sequence.
	entryKey := func(client string, seq uint64) []byte {
		k := binary.BigEndian.AppendUint16(nil, uint16(len(client)))
		return binary.BigEndian.AppendUint64(append(k, client...), seq)
	}
	tests := []struct {
		name   string
		damage func(mb, eb *bolt.Bucket) error
		listed bool // Clients meets the damaged outbox
	}{
		{"meta short", func(mb, eb *bolt.Bucket) error { return mb.Put([]byte("bad"), []byte{1, 2}) }, true},
		{"meta acked beyond last", func(mb, eb *bolt.Bucket) error {
			v := slices.Clone(mb.Get([]byte("bad")))
			binary.BigEndian.PutUint64(v[25:], 99)
			return mb.Put([]byte("bad"), v)
		}, true},
		// Entries without their meta: Clients lists metas, so only the
		// calls naming the client meet them.
		{"meta missing", func(mb, eb *bolt.Bucket) error { return mb.Delete([]byte("bad")) }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tempPath(t)
			b, err := queue.Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			mustPush(t, b, push("a", 1), push("bad", 2), push("z", 3))
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			editBolt(t, path, func(tx *bolt.Tx) error {
				return tc.damage(tx.Bucket([]byte("push_meta")), tx.Bucket([]byte("push_entries")))
			})
			if err := queue.Check(path); !errors.Is(err, queue.ErrCorrupt) {
				t.Fatalf("Check = %v, want ErrCorrupt", err)
			}
			b, err = queue.Open(path, nil)
			if err != nil {
				t.Fatalf("Open = %v; the push bucket is not read at Open", err)
			}
			defer b.Close()
			ctx := testCtx(t)
			if _, err := b.OutboxInfo("bad"); !errors.Is(err, queue.ErrCorrupt) {
				t.Errorf("OutboxInfo = %v, want ErrCorrupt", err)
			}
			if _, err := b.Clients("", 0); tc.listed != errors.Is(err, queue.ErrCorrupt) {
				t.Errorf("Clients = %v, want ErrCorrupt: %v", err, tc.listed)
			}
			// Pushes to the damaged outbox fail alone; others in the
			// same commit go through.
			var wg sync.WaitGroup
			wg.Go(func() {
				if _, _, err := b.Push(ctx, []queue.Push{push("a", 4), push("bad", 5)}); !errors.Is(err, queue.ErrCorrupt) {
					t.Errorf("Push to the damaged outbox = %v, want ErrCorrupt", err)
				}
			})
			wg.Go(func() {
				if err := b.AckOutbox(ctx, "bad", 1, nil); err != nil && !errors.Is(err, queue.ErrCorrupt) {
					t.Errorf("AckOutbox of the damaged outbox = %v, want nil or ErrCorrupt", err)
				}
			})
			wg.Go(func() { mustPush(t, b, push("z", 6)) })
			wg.Wait()
			if got := seqs(mustReadOutbox(t, b, "a", 0)); !slices.Equal(got, []uint64{1}) {
				t.Errorf("a holds %v after a refused push, want [1]", got)
			}
			if got := seqs(mustReadOutbox(t, b, "z", 0)); !slices.Equal(got, []uint64{1, 2}) {
				t.Errorf("z holds %v, want [1 2]", got)
			}
		})
	}
	t.Run("Check only", func(t *testing.T) {
		for name, damage := range map[string]func(mb, eb *bolt.Bucket) error{
			"entry key of the wrong length": func(mb, eb *bolt.Bucket) error { return eb.Put(append(entryKey("a", 1), 0), []byte{1}) },
			"entry missing":                 func(mb, eb *bolt.Bucket) error { return eb.Delete(entryKey("a", 1)) },
			"entry beyond last":             func(mb, eb *bolt.Bucket) error { return eb.Put(entryKey("a", 5), eb.Get(entryKey("a", 1))) },
			"entries bucket missing":        func(mb, eb *bolt.Bucket) error { return eb.Tx().DeleteBucket([]byte("push_entries")) },
		} {
			path := tempPath(t)
			b, err := queue.Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			mustPush(t, b, push("a", 1), push("z", 2))
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			editBolt(t, path, func(tx *bolt.Tx) error {
				return damage(tx.Bucket([]byte("push_meta")), tx.Bucket([]byte("push_entries")))
			})
			if err := queue.Check(path); !errors.Is(err, queue.ErrCorrupt) {
				t.Errorf("%s: Check = %v, want ErrCorrupt", name, err)
			}
		}
	})
	t.Run("bad entry", func(t *testing.T) {
		path := tempPath(t)
		b, err := queue.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		mustPush(t, b, push("a", 1), push("a", 2), push("a", 3))
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		editBolt(t, path, func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("push_entries")).Put(entryKey("a", 2), []byte{2, 9})
		})
		if err := queue.Check(path); !errors.Is(err, queue.ErrCorrupt) {
			t.Fatalf("Check = %v, want ErrCorrupt", err)
		}
		b = openBolt(t, path, nil)
		if _, err := b.ReadOutbox("a", 0, 0, 0); !errors.Is(err, queue.ErrCorrupt) {
			t.Fatalf("ReadOutbox over a bad entry = %v, want ErrCorrupt", err)
		}
		// Acking past the damage deletes it (its bytes stay counted until
		// the outbox is empty, as in the client outbox); openBolt's
		// cleanup checks the file is sound again.
		mustAckOutbox(t, b, "a", 2)
		if got := seqs(mustReadOutbox(t, b, "a", 0)); !slices.Equal(got, []uint64{3}) {
			t.Fatalf("ReadOutbox = %v, want [3]", got)
		}
		mustAckOutbox(t, b, "a", 3)
	})
}

// BenchmarkFanout measures one Push of one message to 10,000 clients:
// one transaction and one fsync (ms/fanout is its latency). The cases:
// new (every round pushes to 10,000 clients never pushed to), acked (the
// same clients, who ack each round before the next: the steady state of
// online clients) and backlog (the same clients, who never ack: offline
// clients, whose outboxes grow). Run it with
//
//	go test -run '^$' -bench Fanout -benchtime 10x ./queue/
func BenchmarkFanout(b *testing.B) {
	const clients = 10_000
	for _, payload := range []int{256, 4096} {
		for _, mode := range []string{"new", "acked", "backlog"} {
			b.Run(fmt.Sprintf("%s/%dB", mode, payload), func(b *testing.B) {
				s, err := queue.Open(tempPath(b), &queue.Options{OutboxMaxMessages: -1, OutboxMaxBytes: -1, CompactSize: -1})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				e := queue.Entry{Payload: make([]byte, payload)}
				msgs := fanout(clients, e)
				ctx := context.Background()
				if mode != "new" {
					if _, _, err := s.Push(ctx, msgs); err != nil {
						b.Fatal(err)
					}
				}
				round := 0
				var commits int64
				for b.Loop() {
					b.StopTimer()
					round++
					if mode == "new" {
						for i := range msgs {
							msgs[i].Client = fmt.Sprintf("r%04d-client-%05d", round, i)
						}
					}
					if mode == "acked" {
						ackAll(b, s, msgs)
					}
					before := queue.Commits(s)
					b.StartTimer()
					if _, _, err := s.Push(ctx, msgs); err != nil {
						b.Fatal(err)
					}
					commits += queue.Commits(s) - before
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/fanout")
				b.ReportMetric(float64(commits)/float64(b.N), "commits/fanout")
			})
		}
	}
}

// ackAll acks everything pushed to the clients of msgs, from 64
// goroutines, so the acks share commits.
func ackAll(b *testing.B, s *queue.Bolt, msgs []queue.Push) {
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Go(func() {
			for i := w; i < len(msgs); i += 64 {
				if err := s.AckOutbox(context.Background(), msgs[i].Client, math.MaxUint64, nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// entriesFill is how full the leaf pages of the push entries are in the
// closed store at path: bytes in use ÷ bytes of the pages.
func entriesFill(t *testing.T, path string) float64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var s bolt.BucketStats
	err = db.View(func(tx *bolt.Tx) error {
		s = tx.Bucket([]byte("push_entries")).Stats()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return float64(s.LeafInuse) / float64(s.LeafPageN*db.Info().PageSize)
}

// TestBoltPushPacking: commits that give every client they write to at
// least a page of new entries (a stream of batches) pack the entries'
// pages to 95%, so half as many pages are written and synced. (Commits
// of a message or two per client, a fan-out, keep bbolt's default
// splits; on a few hundred clients the fill they leave differs little
// either way, so that half is not asserted.)
func TestBoltPushPacking(t *testing.T) {
	payload := make([]byte, 200)
	batch := func(client string, round, n int) []queue.Push {
		msgs := make([]queue.Push, n)
		for i := range msgs {
			e := entry(round*1000 + i)
			e.Payload, e.Headers = payload, nil
			msgs[i] = queue.Push{Client: client, Entry: withID(e, client)}
		}
		return msgs
	}

	streams := tempPath(t)
	b := openBolt(t, streams, &queue.Options{NoSync: true})
	for round := range 20 {
		// Three clients' runs, each in the middle of the key space
		// but the last.
		mustPush(t, b, slices.Concat(batch("a", round, 64), batch("b", round, 64), batch("c", round, 64))...)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if f := entriesFill(t, streams); f < 0.85 {
		t.Errorf("entries' pages after streams of batches are %.0f%% full, want at least 85%%", 100*f)
	}
}
