package queue_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// outboxStore is a store with the server's outbox role.
type outboxStore interface {
	queue.Store
	queue.Outboxes
}

// outboxStores lists the implementations the outbox conformance tests
// run against.
var outboxStores = []struct {
	name string
	open func(t *testing.T, opts *queue.Options) outboxStore
}{
	{"Memory", func(t *testing.T, opts *queue.Options) outboxStore {
		m := queue.NewMemory(opts)
		t.Cleanup(func() { _ = m.Close() })
		return m
	}},
	{"Bolt", func(t *testing.T, opts *queue.Options) outboxStore {
		return openBolt(t, tempPath(t), opts)
	}},
	{"BoltNoSync", func(t *testing.T, opts *queue.Options) outboxStore {
		o := queue.Options{}
		if opts != nil {
			o = *opts
		}
		o.NoSync = true
		return openBolt(t, tempPath(t), &o)
	}},
}

func TestOutboxConformance(t *testing.T) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(*testing.T, *queue.Options) outboxStore)
	}{
		{"PushReadAck", testOutboxPushReadAck},
		{"ClientsIsolated", testOutboxClientsIsolated},
		{"Fanout", testOutboxFanout},
		{"LimitsFail", testOutboxLimitsFail},
		{"LimitsEvict", testOutboxLimitsEvict},
		{"TooLarge", testOutboxTooLarge},
		{"BadArguments", testOutboxBadArguments},
		{"UnknownClient", testOutboxUnknownClient},
		{"ClientsPaging", testOutboxClientsPaging},
		{"Expires", testOutboxExpires},
		{"Concurrent", testOutboxConcurrent},
		{"AfterClose", testOutboxAfterClose},
		{"ClientIDsSharingPrefixes", testOutboxClientPrefixes},
	}
	for _, s := range outboxStores {
		t.Run(s.name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, s.open) })
			}
		})
	}
}

func mustPush(t testing.TB, s queue.Outboxes, msgs ...queue.Push) ([]uint64, []queue.Evicted) {
	t.Helper()
	seqs, evicted, err := s.Push(testCtx(t), msgs)
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	if len(seqs) != len(msgs) {
		t.Fatalf("Push of %d messages returned %d seqs", len(msgs), len(seqs))
	}
	return seqs, evicted
}

func mustInfo(t testing.TB, s queue.Outboxes, client string) queue.OutboxInfo {
	t.Helper()
	info, err := s.OutboxInfo(client)
	if err != nil {
		t.Fatalf("OutboxInfo(%q): %v", client, err)
	}
	return info
}

func mustReadOutbox(t testing.TB, s queue.Outboxes, client string, from uint64) []queue.Entry {
	t.Helper()
	es, err := s.ReadOutbox(client, from, 0, 0)
	if err != nil {
		t.Fatalf("ReadOutbox(%q, %d): %v", client, from, err)
	}
	return es
}

func mustAckOutbox(t testing.TB, s queue.Outboxes, client string, upTo uint64) {
	t.Helper()
	if err := s.AckOutbox(testCtx(t), client, upTo, nil); err != nil {
		t.Fatalf("AckOutbox(%q, %d): %v", client, upTo, err)
	}
}

func push(client string, n int) queue.Push { return queue.Push{Client: client, Entry: entry(n)} }

func testOutboxPushReadAck(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	s := open(t, nil)
	start := time.Now().Truncate(time.Millisecond)
	var want []queue.Entry
	for i := 1; i <= 5; i++ {
		seqs, evicted := mustPush(t, s, push("a", i))
		if seqs[0] != uint64(i) || len(evicted) != 0 {
			t.Fatalf("Push #%d = %v, %v; want [%d], none evicted", i, seqs, evicted, i)
		}
		e := entry(i)
		e.Seq = uint64(i)
		want = append(want, e)
	}
	got := mustReadOutbox(t, s, "a", 0)
	if len(got) != len(want) {
		t.Fatalf("ReadOutbox = %v, want 5 entries", seqs(got))
	}
	for i := range want {
		if !sameEntry(got[i], want[i]) {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	var bytes int64
	for _, e := range want[3:] {
		bytes += int64(len(e.Payload))
		for _, h := range e.Headers {
			bytes += int64(len(h.Key) + len(h.Value))
		}
	}
	mustAckOutbox(t, s, "a", 3)
	if got := seqs(mustReadOutbox(t, s, "a", 0)); !slices.Equal(got, []uint64{4, 5}) {
		t.Fatalf("after AckOutbox(3) ReadOutbox = %v, want [4 5]", got)
	}
	if got := seqs(mustReadOutbox(t, s, "a", 5)); !slices.Equal(got, []uint64{5}) {
		t.Fatalf("ReadOutbox from 5 = %v, want [5]", got)
	}
	info := mustInfo(t, s, "a")
	if info.Client != "a" || info.Stream.IsZero() || info.FirstSeq != 4 || info.LastSeq != 5 ||
		info.Acked != 3 || info.Messages != 2 || info.Bytes != bytes {
		t.Fatalf("OutboxInfo = %+v, want first 4, last 5, acked 3, 2 messages of %d bytes", info, bytes)
	}
	if info.Oldest.Before(start) || info.Oldest.After(time.Now()) {
		t.Errorf("Oldest = %v, want between %v and now", info.Oldest, start)
	}
	mustAckOutbox(t, s, "a", 2) // already acked: no-op
	if again := mustInfo(t, s, "a"); again != info {
		t.Fatalf("AckOutbox of an acked sequence changed %+v to %+v", info, again)
	}
	mustAckOutbox(t, s, "a", 100) // beyond LastSeq: up to LastSeq
	info = mustInfo(t, s, "a")
	if info.Acked != 5 || info.Messages != 0 || info.Bytes != 0 || info.FirstSeq != 0 || !info.Oldest.IsZero() || info.LastSeq != 5 {
		t.Fatalf("after AckOutbox(100) OutboxInfo = %+v", info)
	}
	if got, _ := mustPush(t, s, push("a", 6)); got[0] != 6 {
		t.Fatalf("Push after acking everything = %v, want [6] (never reused)", got)
	}
	if st := s.Stats(); st.Messages != 0 || st.LastSeq != 0 {
		t.Errorf("pushes changed the client outbox: %+v", st)
	}
}

func testOutboxClientsIsolated(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	s := open(t, nil)
	assigned, _ := mustPush(t, s, push("a", 1), push("b", 2), push("a", 3), push("c", 4), push("a", 5))
	if want := []uint64{1, 1, 2, 1, 3}; !slices.Equal(assigned, want) {
		t.Fatalf("Push = %v, want %v", assigned, want)
	}
	mustAckOutbox(t, s, "a", 2)
	for _, tc := range []struct {
		client string
		want   []int // entry numbers held
	}{{"a", []int{5}}, {"b", []int{2}}, {"c", []int{4}}} {
		got := mustReadOutbox(t, s, tc.client, 0)
		if len(got) != len(tc.want) {
			t.Fatalf("ReadOutbox(%q) = %v, want entries %v", tc.client, seqs(got), tc.want)
		}
		for i, n := range tc.want {
			want := entry(n)
			want.Seq = got[i].Seq
			if !sameEntry(got[i], want) {
				t.Errorf("client %q holds %+v, want entry %d", tc.client, got[i], n)
			}
		}
	}
	a, b, c := mustInfo(t, s, "a"), mustInfo(t, s, "b"), mustInfo(t, s, "c")
	if a.Stream == b.Stream || b.Stream == c.Stream || a.Stream == c.Stream {
		t.Errorf("clients share a stream: %v %v %v", a.Stream, b.Stream, c.Stream)
	}
	if b.Acked != 0 || b.Messages != 1 {
		t.Errorf("acking a changed b: %+v", b)
	}
}

func testOutboxFanout(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	s := open(t, nil)
	const n = 500
	msgs := make([]queue.Push, n)
	for i := range msgs {
		msgs[i] = queue.Push{Client: fmt.Sprintf("client-%04d", i), Entry: entry(7)}
	}
	for round := uint64(1); round <= 2; round++ {
		got, _ := mustPush(t, s, msgs...)
		for i, seq := range got {
			if seq != round {
				t.Fatalf("round %d: client %d got seq %d", round, i, seq)
			}
		}
	}
	streams := map[protocol.StreamID]bool{}
	for _, m := range msgs {
		info := mustInfo(t, s, m.Client)
		if info.Stream.IsZero() || streams[info.Stream] {
			t.Fatalf("client %s has stream %v: zero or shared", m.Client, info.Stream)
		}
		streams[info.Stream] = true
		if info.Messages != 2 || info.LastSeq != 2 {
			t.Fatalf("client %s: %+v, want 2 messages", m.Client, info)
		}
	}
	got := mustReadOutbox(t, s, msgs[n-1].Client, 0)
	want := entry(7)
	want.Seq = 2
	if len(got) != 2 || !sameEntry(got[1], want) {
		t.Fatalf("last client holds %+v", got)
	}
}

func testOutboxLimitsFail(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	t.Run("messages", func(t *testing.T) {
		s := open(t, &queue.Options{OutboxMaxMessages: 3})
		mustPush(t, s, push("a", 1), push("a", 2))
		before := mustInfo(t, s, "a")
		// Messages of one call for one client count together; the whole
		// call fails, b included.
		_, _, err := s.Push(testCtx(t), []queue.Push{push("b", 1), push("a", 3), push("a", 4)})
		if !errors.Is(err, queue.ErrFull) {
			t.Fatalf("Push over the limit = %v, want ErrFull", err)
		}
		if after := mustInfo(t, s, "a"); after != before {
			t.Errorf("refused Push changed a: %+v, want %+v", after, before)
		}
		if info := mustInfo(t, s, "b"); !info.Stream.IsZero() || info.LastSeq != 0 {
			t.Errorf("refused Push created b: %+v", info)
		}
		if got := seqs(mustReadOutbox(t, s, "a", 0)); !slices.Equal(got, []uint64{1, 2}) {
			t.Errorf("ReadOutbox = %v, want [1 2]", got)
		}
		if got, _ := mustPush(t, s, push("a", 3)); got[0] != 3 { // exactly at the limit
			t.Fatalf("Push up to the limit = %v, want [3]", got)
		}
		if _, _, err := s.Push(testCtx(t), []queue.Push{push("a", 4)}); !errors.Is(err, queue.ErrFull) {
			t.Fatalf("Push to a full outbox = %v, want ErrFull", err)
		}
		mustPush(t, s, push("b", 1)) // other outboxes are not full
		mustAckOutbox(t, s, "a", 1)
		if got, _ := mustPush(t, s, push("a", 4)); got[0] != 4 {
			t.Fatalf("Push after AckOutbox = %v, want [4]", got)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		s := open(t, &queue.Options{OutboxMaxBytes: 25})
		mustPush(t, s, queue.Push{Client: "a", Entry: entryWithPayload(10)}, queue.Push{Client: "a", Entry: entryWithPayload(10)})
		if _, _, err := s.Push(testCtx(t), []queue.Push{{Client: "a", Entry: entryWithPayload(6)}}); !errors.Is(err, queue.ErrFull) {
			t.Fatalf("Push over OutboxMaxBytes = %v, want ErrFull", err)
		}
		mustPush(t, s, queue.Push{Client: "a", Entry: queue.Entry{Headers: []protocol.Header{{Key: "k", Value: "vvvv"}}}})
		if info := mustInfo(t, s, "a"); info.Bytes != 25 || info.Messages != 3 {
			t.Fatalf("OutboxInfo = %+v, want 3 messages of 25 bytes", info)
		}
	})
	t.Run("unlimited", func(t *testing.T) {
		s := open(t, &queue.Options{OutboxMaxMessages: -1, OutboxMaxBytes: -1})
		msgs := make([]queue.Push, 10_001)
		for i := range msgs {
			msgs[i] = queue.Push{Client: "a"}
		}
		mustPush(t, s, msgs...)
		if info := mustInfo(t, s, "a"); info.Messages != len(msgs) {
			t.Fatalf("OutboxInfo = %+v, want %d messages", info, len(msgs))
		}
	})
}

func testOutboxLimitsEvict(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	t.Run("messages", func(t *testing.T) {
		s := open(t, &queue.Options{OutboxMaxMessages: 3, OutboxEvict: true})
		mustPush(t, s, push("a", 1), push("a", 2), push("a", 3), push("b", 9))
		assigned, evicted := mustPush(t, s, push("a", 4), push("b", 10), push("a", 5))
		if !slices.Equal(assigned, []uint64{4, 2, 5}) {
			t.Fatalf("Push = %v, want [4 2 5]", assigned)
		}
		want := []queue.Evicted{{Client: "a", Seq: 1, ID: entry(1).ID}, {Client: "a", Seq: 2, ID: entry(2).ID}}
		if !slices.Equal(evicted, want) {
			t.Fatalf("evicted %+v, want %+v", evicted, want)
		}
		info := mustInfo(t, s, "a")
		if info.FirstSeq != 3 || info.Acked != 2 || info.LastSeq != 5 || info.Messages != 3 {
			t.Fatalf("OutboxInfo = %+v, want first 3, acked 2, last 5, 3 messages", info)
		}
		if got := seqs(mustReadOutbox(t, s, "a", 0)); !slices.Equal(got, []uint64{3, 4, 5}) {
			t.Fatalf("ReadOutbox = %v, want [3 4 5]", got)
		}
		if info := mustInfo(t, s, "b"); info.Messages != 2 || info.Acked != 0 {
			t.Fatalf("b lost entries to a's eviction: %+v", info)
		}
		// Acking an evicted sequence is a no-op.
		mustAckOutbox(t, s, "a", 1)
		if again := mustInfo(t, s, "a"); again != info {
			t.Fatalf("AckOutbox(1) changed %+v to %+v", info, again)
		}
		// A call that cannot fit even in an empty outbox still fails.
		_, _, err := s.Push(testCtx(t), []queue.Push{push("a", 6), push("a", 7), push("a", 8), push("a", 9)})
		if !errors.Is(err, queue.ErrFull) {
			t.Fatalf("Push of 4 to a 3-message outbox = %v, want ErrFull", err)
		}
		if again := mustInfo(t, s, "a"); again != info {
			t.Fatalf("refused Push changed %+v to %+v", info, again)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		s := open(t, &queue.Options{OutboxMaxBytes: 25, OutboxEvict: true})
		mustPush(t, s, queue.Push{Client: "a", Entry: entryWithPayload(10)}, queue.Push{Client: "a", Entry: entryWithPayload(10)})
		_, evicted := mustPush(t, s, queue.Push{Client: "a", Entry: entryWithPayload(6)})
		if len(evicted) != 1 || evicted[0].Seq != 1 {
			t.Fatalf("evicted %+v, want seq 1", evicted)
		}
		if info := mustInfo(t, s, "a"); info.Bytes != 16 || info.Messages != 2 || info.Acked != 1 {
			t.Fatalf("OutboxInfo = %+v, want 2 messages of 16 bytes", info)
		}
	})
}

func testOutboxTooLarge(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	s := open(t, &queue.Options{OutboxMaxBytes: 10, OutboxEvict: true})
	_, _, err := s.Push(testCtx(t), []queue.Push{
		{Client: "a", Entry: entryWithPayload(10)},
		{Client: "b", Entry: entryWithPayload(11)},
	})
	if !errors.Is(err, queue.ErrTooLarge) {
		t.Fatalf("Push of 11 bytes with OutboxMaxBytes 10 = %v, want ErrTooLarge", err)
	}
	if info := mustInfo(t, s, "a"); info.LastSeq != 0 {
		t.Fatalf("failed Push queued a's message: %+v", info)
	}
	mustPush(t, s, queue.Push{Client: "a", Entry: entryWithPayload(10)})
}

func testOutboxBadArguments(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	s := open(t, nil)
	ctx := testCtx(t)
	long := strings.Repeat("x", protocol.MaxClientIDLen+1)
	if _, _, err := s.Push(ctx, nil); err == nil {
		t.Error("Push of no messages succeeded")
	}
	for _, client := range []string{"", long} {
		if _, _, err := s.Push(ctx, []queue.Push{push("ok", 1), {Client: client}}); err == nil {
			t.Errorf("Push to client ID of %d bytes succeeded", len(client))
		}
		if err := s.AckOutbox(ctx, client, 1, nil); err == nil {
			t.Errorf("AckOutbox of client ID of %d bytes succeeded", len(client))
		}
		if _, err := s.OutboxInfo(client); err == nil {
			t.Errorf("OutboxInfo of client ID of %d bytes succeeded", len(client))
		}
		if _, err := s.ReadOutbox(client, 0, 0, 0); err == nil {
			t.Errorf("ReadOutbox of client ID of %d bytes succeeded", len(client))
		}
	}
	if info := mustInfo(t, s, "ok"); info.LastSeq != 0 {
		t.Errorf("refused Push queued a message: %+v", info)
	}
	longest := strings.Repeat("é", protocol.MaxClientIDLen/2)
	if got, _ := mustPush(t, s, queue.Push{Client: longest}); got[0] != 1 {
		t.Errorf("Push to the longest client ID = %v", got)
	}
}

func testOutboxUnknownClient(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	s := open(t, nil)
	for range 2 { // before and after the first push to anyone
		if info := mustInfo(t, s, "nobody"); info != (queue.OutboxInfo{Client: "nobody"}) {
			t.Fatalf("OutboxInfo of an unknown client = %+v", info)
		}
		if es := mustReadOutbox(t, s, "nobody", 0); len(es) != 0 {
			t.Fatalf("ReadOutbox of an unknown client = %v", seqs(es))
		}
		mustAckOutbox(t, s, "nobody", 5)
		mustPush(t, s, push("somebody", 1))
	}
	if info := mustInfo(t, s, "nobody"); !info.Stream.IsZero() {
		t.Fatalf("AckOutbox created an outbox: %+v", info)
	}
}

func testOutboxClientsPaging(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	s := open(t, nil)
	if got, err := s.Clients("", 0); err != nil || len(got) != 0 {
		t.Fatalf("Clients of a store never pushed to = %v, %v", got, err)
	}
	var msgs []queue.Push
	for i := 24; i >= 0; i-- {
		msgs = append(msgs, push(fmt.Sprintf("c%02d", i), i))
	}
	mustPush(t, s, msgs...)
	mustAckOutbox(t, s, "c03", 1) // empty outboxes are listed too
	names := func(infos []queue.OutboxInfo) string {
		var out []string
		for _, in := range infos {
			out = append(out, in.Client)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		after string
		limit int
		want  string
	}{
		{"", 3, "c00,c01,c02"},
		{"c02", 3, "c03,c04,c05"},
		{"c02x", 2, "c03,c04"},
		{"c22", 10, "c23,c24"},
		{"c24", 10, ""},
		{"d", 10, ""},
	} {
		got, err := s.Clients(tc.after, tc.limit)
		if err != nil || names(got) != tc.want {
			t.Errorf("Clients(%q, %d) = %s, %v; want %s", tc.after, tc.limit, names(got), err, tc.want)
		}
	}
	all, err := s.Clients("", 0)
	if err != nil || len(all) != 25 {
		t.Fatalf("Clients(\"\", 0) = %d, %v; want 25", len(all), err)
	}
	for _, in := range all {
		if in != mustInfo(t, s, in.Client) {
			t.Errorf("Clients lists %+v, OutboxInfo says %+v", in, mustInfo(t, s, in.Client))
		}
	}
	if all[3].Messages != 0 || all[3].Stream.IsZero() {
		t.Errorf("acked outbox listed as %+v", all[3])
	}
	page, err := s.Clients("", -1)
	if err != nil || len(page) != 25 {
		t.Errorf("Clients with a negative limit = %d, %v", len(page), err)
	}
}

func testOutboxExpires(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	s := open(t, nil)
	exp := time.Now().Add(time.Hour).UnixMilli()
	e := entry(1)
	e.Expires = exp
	mustPush(t, s, queue.Push{Client: "a", Entry: e}, push("a", 2))
	got := mustReadOutbox(t, s, "a", 0)
	if len(got) != 2 || got[0].Expires != exp || got[1].Expires != 0 {
		t.Fatalf("ReadOutbox = %+v, want Expires %d then 0", got, exp)
	}
	// The client outbox keeps Expires too.
	mustAppend(t, s, e)
	mustAppend(t, s, entry(2))
	if got := mustRead(t, s, 0, 0, 0); len(got) != 2 || got[0].Expires != exp || got[1].Expires != 0 {
		t.Fatalf("Read = %+v, want Expires %d then 0", got, exp)
	}
}

// testOutboxConcurrent: pushes and acks from many goroutines to a few
// clients; every push gets a distinct sequence, each outbox holds exactly
// its unacked pushes in order.
func testOutboxConcurrent(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	s := open(t, &queue.Options{OutboxMaxMessages: -1})
	const workers, each, clients = 16, 30, 4
	ctx := testCtx(t)
	var (
		mu   sync.Mutex
		seen = map[string]map[uint64]bool{}
		wg   sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				client := fmt.Sprintf("c%d", (w+i)%clients)
				other := fmt.Sprintf("c%d", (w+i+1)%clients)
				seqs, _, err := s.Push(ctx, []queue.Push{push(client, i), push(other, i)})
				if err != nil {
					t.Errorf("Push: %v", err)
					return
				}
				mu.Lock()
				for j, c := range []string{client, other} {
					if seen[c] == nil {
						seen[c] = map[uint64]bool{}
					}
					if seen[c][seqs[j]] {
						t.Errorf("client %s: seq %d assigned twice", c, seqs[j])
					}
					seen[c][seqs[j]] = true
				}
				mu.Unlock()
				if i%5 == 4 {
					if err := s.AckOutbox(ctx, client, seqs[0]-2, nil); err != nil {
						t.Errorf("AckOutbox: %v", err)
					}
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for c, got := range seen {
		info := mustInfo(t, s, c)
		total += len(got)
		if info.LastSeq != uint64(len(got)) {
			t.Errorf("client %s: LastSeq %d after %d pushes", c, info.LastSeq, len(got))
		}
		es := mustReadOutbox(t, s, c, 0)
		if len(es) != info.Messages || (len(es) > 0 && (es[0].Seq != info.Acked+1 || es[len(es)-1].Seq != info.LastSeq)) {
			t.Errorf("client %s: %+v, holds %d..: not acked+1..last", c, info, len(es))
		}
		for i := 1; i < len(es); i++ {
			if es[i].Seq != es[i-1].Seq+1 {
				t.Fatalf("client %s: seq %d follows %d", c, es[i].Seq, es[i-1].Seq)
			}
		}
	}
	if total != 2*workers*each {
		t.Errorf("%d pushes recorded, want %d", total, 2*workers*each)
	}
}

func testOutboxAfterClose(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	s := open(t, nil)
	mustPush(t, s, push("a", 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	checks := map[string]error{}
	_, _, checks["Push"] = s.Push(ctx, []queue.Push{push("a", 2)})
	_, checks["OutboxInfo"] = s.OutboxInfo("a")
	_, checks["ReadOutbox"] = s.ReadOutbox("a", 0, 0, 0)
	checks["AckOutbox"] = s.AckOutbox(ctx, "a", 1, nil)
	_, checks["Clients"] = s.Clients("", 0)
	_, _, checks["Status"] = s.Status(entry(1).ID)
	_, checks["Unreported"] = s.Unreported(0)
	checks["MarkReported"] = s.MarkReported(ctx, []protocol.MessageID{entry(1).ID})
	checks["AckWith"] = s.AckWith(ctx, 1, nil)
	for name, err := range checks {
		if !errors.Is(err, queue.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

// testOutboxClientPrefixes: client IDs that are prefixes of each other,
// NUL bytes included, keep separate outboxes.
func testOutboxClientPrefixes(t *testing.T, open func(*testing.T, *queue.Options) outboxStore) {
	s := open(t, nil)
	clients := []string{"a", "a\x00", "a\x00\x00", "a\x00b", "ab", "\x00", strings.Repeat("\x00", protocol.MaxClientIDLen)}
	for round := range 3 {
		for i, c := range clients {
			mustPush(t, s, push(c, 100*i+round))
		}
	}
	mustAckOutbox(t, s, "a\x00", 2)
	mustAckOutbox(t, s, "\x00", 1)
	for i, c := range clients {
		want := []uint64{1, 2, 3}
		switch c {
		case "a\x00":
			want = want[2:]
		case "\x00":
			want = want[1:]
		}
		got := mustReadOutbox(t, s, c, 0)
		if !slices.Equal(seqs(got), want) {
			t.Fatalf("client %q holds %v, want %v", c, seqs(got), want)
		}
		for _, e := range got {
			if e.ID != entry(100*i+int(e.Seq)-1).ID {
				t.Fatalf("client %q holds another client's entry %+v", c, e)
			}
		}
		if info := mustInfo(t, s, c); info.Messages != len(want) || info.FirstSeq != want[0] {
			t.Fatalf("OutboxInfo(%q) = %+v", c, info)
		}
	}
}
