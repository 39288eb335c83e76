package queue_test

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// streamOf returns a stream ID whose bytes are all b, so tests choose how
// watermark keys sort.
func streamOf(b byte) protocol.StreamID {
	var s protocol.StreamID
	for i := range s {
		s[i] = b
	}
	return s
}

// inspectStore writes a server-like store with known contents to path
// and returns the report InspectFile must give for it (Oldest and
// FileSize aside), with all clients on one page.
func inspectStore(t *testing.T, path string) queue.Report {
	t.Helper()
	b, err := queue.Open(path, &queue.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	mustAppend(t, b, entry(1))
	mustAppend(t, b, entry(2))
	mustPush(t, b, push("a", 1), push("a", 2), push("b", 3))
	mustPush(t, b, push("c", 4), push("c", 5))
	if err := b.AckOutbox(ctx, "c", 2, nil); err != nil {
		t.Fatal(err)
	}
	mustMarkReported(t, b, push("c", 4).Entry.ID)
	for _, bind := range [][2]string{{"a", "alice"}, {"d", "dave"}} {
		if err := b.Bind(ctx, bind[0], bind[1]); err != nil {
			t.Fatal(err)
		}
	}
	// "x" and "xa": the key of xa's stream 00… sorts before x's ff….
	for _, w := range []struct {
		peer   string
		stream protocol.StreamID
		seq    uint64
	}{
		{"a", streamOf(0x10), 5},
		{"a", streamOf(0x01), 6},
		{"b", streamOf(0x20), 7},
		{"x", streamOf(0xff), 8},
		{"xa", streamOf(0x00), 9},
	} {
		if err := b.SetWatermark(ctx, w.peer, w.stream, w.seq); err != nil {
			t.Fatal(err)
		}
	}
	info := func(client string) queue.OutboxInfo {
		i, err := b.OutboxInfo(client)
		if err != nil {
			t.Fatal(err)
		}
		i.Oldest = time.Time{}
		return i
	}
	want := queue.Report{
		Version:      4,
		Meta:         b.Meta(),
		Outbox:       queue.Stats{Messages: 2, Bytes: b.Stats().Bytes, FirstSeq: 1, LastSeq: 2},
		Outboxes:     3,
		PushMessages: 3,
		PushBytes:    info("a").Bytes + info("b").Bytes,
		Bindings:     2,
		Watermarks:   5,
		Settled:      queue.SettledCounts{Pending: 3, Unreported: 1, Reported: 1},
		Clients: []queue.ClientReport{
			{Client: "a", Identity: "alice", Outbox: info("a"), Watermarks: []queue.Watermark{{streamOf(0x01), 6}, {streamOf(0x10), 5}}},
			{Client: "b", Outbox: info("b"), Watermarks: []queue.Watermark{{streamOf(0x20), 7}}},
			{Client: "c", Outbox: info("c")},
			{Client: "d", Identity: "dave", Outbox: queue.OutboxInfo{Client: "d"}},
			{Client: "x", Outbox: queue.OutboxInfo{Client: "x"}, Watermarks: []queue.Watermark{{streamOf(0xff), 8}}},
			{Client: "xa", Outbox: queue.OutboxInfo{Client: "xa"}, Watermarks: []queue.Watermark{{streamOf(0x00), 9}}},
		},
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return want
}

func TestInspectFile(t *testing.T) {
	path := tempPath(t)
	start := time.Now().Truncate(time.Millisecond)
	want := inspectStore(t, path)
	end := time.Now()

	got, err := queue.InspectFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Outbox.FileSize != fi.Size() {
		t.Errorf("FileSize = %d, want %d", got.Outbox.FileSize, fi.Size())
	}
	got.Outbox.FileSize = 0
	for i := range got.Clients {
		o := &got.Clients[i].Outbox
		if o.Messages > 0 && (o.Oldest.Before(start) || o.Oldest.After(end)) {
			t.Errorf("client %q: Oldest %v outside [%v, %v]", o.Client, o.Oldest, start, end)
		}
		if o.Messages == 0 && !o.Oldest.IsZero() {
			t.Errorf("client %q: empty outbox with Oldest %v", o.Client, o.Oldest)
		}
		o.Oldest = time.Time{}
		c := &got.Clients[i]
		used := c.Identity != "" || len(c.Watermarks) > 0 || o.LastSeq > 0
		if used && (c.LastUsed.Before(start) || c.LastUsed.After(end)) {
			t.Errorf("client %q: LastUsed %v outside [%v, %v]", c.Client, c.LastUsed, start, end)
		}
		c.LastUsed = time.Time{}
	}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("InspectFile =\n%+v\nwant\n%+v", *got, want)
	}
	if err := queue.Check(path); err != nil {
		t.Errorf("Check after InspectFile: %v", err)
	}
}

// TestInspectFilePages pages through the clients with every limit: each
// client comes once, in order, and More is false only on the last page.
func TestInspectFilePages(t *testing.T) {
	path := tempPath(t)
	want := inspectStore(t, path)
	var all []string
	for _, c := range want.Clients {
		all = append(all, c.Client)
	}
	for limit := 1; limit <= len(all)+1; limit++ {
		var got []string
		after := ""
		for pages := 0; ; pages++ {
			if pages > len(all) {
				t.Fatalf("limit %d: no last page after %d pages", limit, pages)
			}
			r, err := queue.InspectFile(path, &queue.InspectOptions{After: after, Limit: limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Clients) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(r.Clients))
			}
			for _, c := range r.Clients {
				got = append(got, c.Client)
			}
			if !r.More {
				break
			}
			after = r.Clients[len(r.Clients)-1].Client
		}
		if !slices.Equal(got, all) {
			t.Errorf("limit %d: pages list %q, want %q", limit, got, all)
		}
	}
	if _, err := queue.InspectFile(path, &queue.InspectOptions{Limit: -1}); err == nil {
		t.Error("InspectFile with a negative Limit succeeded")
	}
}

// TestInspectFileClientStore: a client's store lists its outbox and the
// watermark it keeps for the server's stream, under the peer name.
func TestInspectFileClientStore(t *testing.T) {
	path := tempPath(t)
	b, err := queue.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, b, entry(1))
	if err := b.SetWatermark(testCtx(t), "server", streamOf(7), 3); err != nil {
		t.Fatal(err)
	}
	meta := b.Meta()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := queue.InspectFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range r.Clients {
		if r.Clients[i].LastUsed.IsZero() {
			t.Errorf("client %q: no LastUsed", r.Clients[i].Client)
		}
		r.Clients[i].LastUsed = time.Time{}
	}
	wantClients := []queue.ClientReport{{Client: "server", Outbox: queue.OutboxInfo{Client: "server"}, Watermarks: []queue.Watermark{{streamOf(7), 3}}}}
	if r.Version != 4 || r.Meta != meta || r.Outbox.Messages != 1 || r.Outboxes != 0 || r.Bindings != 0 || r.Watermarks != 1 ||
		!reflect.DeepEqual(r.Clients, wantClients) || r.More {
		t.Errorf("InspectFile of a client store = %+v", *r)
	}
}

func TestInspectFileLocked(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, nil)
	start := time.Now()
	_, err := queue.InspectFile(path, &queue.InspectOptions{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, queue.ErrLocked) {
		t.Fatalf("InspectFile of an open store = %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("InspectFile waited %v with a 100ms LockTimeout", d)
	}
	_ = b
}

// TestInspectFileDamage: damage InspectFile meets is ErrCorrupt (or
// ErrVersion), never a panic.
func TestInspectFileDamage(t *testing.T) {
	edit := func(fn func(tx *bolt.Tx) error) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			inspectStore(t, path)
			editBolt(t, path, fn)
		}
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
		want   error
	}{
		{"garbage", func(t *testing.T, path string) {
			buf := make([]byte, 64<<10)
			_, _ = rand.Read(buf)
			writeFile(t, path, buf)
		}, queue.ErrCorrupt},
		{"empty", func(t *testing.T, path string) { writeFile(t, path, nil) }, queue.ErrCorrupt},
		{"truncated", func(t *testing.T, path string) {
			inspectStore(t, path)
			fi, _ := os.Stat(path)
			truncate(t, path, fi.Size()/2)
		}, queue.ErrCorrupt},
		{"newer version", edit(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Put([]byte("version"), binary.BigEndian.AppendUint64(nil, 99))
		}), queue.ErrVersion},
		{"push meta short", edit(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("push_meta")).Put([]byte("b"), []byte{1, 2})
		}), queue.ErrCorrupt},
		{"watermark value short", edit(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("watermarks")).Put(append([]byte("a"), make([]byte, 16)...), []byte{1, 2, 3})
		}), queue.ErrCorrupt},
		{"watermark key short", edit(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("watermarks")).Put([]byte("short"), make([]byte, 8))
		}), queue.ErrCorrupt},
		{"settlement index missing", edit(func(tx *bolt.Tx) error {
			return tx.DeleteBucket([]byte("settled_reported"))
		}), queue.ErrCorrupt},
		{"push entries missing", edit(func(tx *bolt.Tx) error {
			return tx.DeleteBucket([]byte("push_entries"))
		}), queue.ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tempPath(t)
			tc.damage(t, path)
			r, err := queue.InspectFile(path, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("InspectFile = %+v, %v; want %v", r, err, tc.want)
			}
			t.Logf("InspectFile: %v", err)
		})
	}

	// Junk over each page in turn: an error, if any, is ErrCorrupt.
	t.Run("overwritten pages", func(t *testing.T) {
		clean := tempPath(t)
		inspectStore(t, clean)
		data, err := os.ReadFile(clean)
		if err != nil {
			t.Fatal(err)
		}
		const page = 4096
		failed := 0
		for off := 2 * page; off < len(data); off += page {
			damaged := slices.Clone(data)
			_, _ = rand.Read(damaged[off : off+page])
			path := tempPath(t)
			writeFile(t, path, damaged)
			if _, err := queue.InspectFile(path, nil); err != nil {
				if !errors.Is(err, queue.ErrCorrupt) {
					t.Fatalf("page at %d: InspectFile = %v, want nil or ErrCorrupt", off, err)
				}
				failed++
			}
		}
		if failed == 0 {
			t.Error("no overwritten page was noticed")
		}
	})
}
