// Package queuetest is a conformance suite for implementations of
// [queue.ServerStore]: the push outboxes, the inbox state (watermarks,
// bindings) and the settlement records, with the semantics the queue
// package documents and [queue.Bolt] and [queue.Memory] implement. A
// backend in another module (store/postgres) runs the same suite, so a
// semantic difference fails a test instead of surprising a server.
//
// A store that implements [queue.Owner] is claimed for every peer the
// suite writes for, as a server would before writing.
package queuetest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// Harness describes the implementation under test.
type Harness struct {
	// Open returns a new, empty store configured by opts (nil:
	// defaults; only the fields a ServerStore uses are set: the Outbox
	// limits, StatusRetention). The store must be closed at the test's
	// cleanup; a store already closed by the test must be tolerated.
	// Required.
	Open func(t *testing.T, opts *queue.Options) queue.ServerStore
	// SetClock makes s take the times of settlement records (and of
	// their pruning) from now. Nil: the tests that need a clock are
	// skipped, each saying so.
	SetClock func(s queue.ServerStore, now func() time.Time)
}

// TestServerStore runs the suite, one subtest per property.
func TestServerStore(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"PushReadAck", testPushReadAck},
		{"ClientsIsolated", testClientsIsolated},
		{"Fanout", testFanout},
		{"LimitsFail", testLimitsFail},
		{"LimitsEvict", testLimitsEvict},
		{"TooLarge", testTooLarge},
		{"BadArguments", testBadArguments},
		{"UnknownClient", testUnknownClient},
		{"ClientsPaging", testClientsPaging},
		{"Expires", testExpires},
		{"Concurrent", testConcurrent},
		{"AfterClose", testAfterClose},
		{"ClientIDsSharingPrefixes", testClientPrefixes},
		{"Watermarks", testWatermarks},
		{"WatermarkNeverMovesBack", testWatermarkMonotonic},
		{"Bindings", testBindings},
		{"SettledPending", testSettledPending},
		{"SettledOutcomes", testSettledOutcomes},
		{"SettledEvicted", testSettledEvicted},
		{"SettledUnreported", testSettledUnreported},
		{"SettledNegativeRetention", testSettledNegativeRetention},
		{"SettledRetention", testSettledRetention},
		{"PushIdempotent", testPushIdempotent},
		{"PushIdempotentUntilPruned", testPushIdempotentUntilPruned},
		{"SettleReported", testSettleReported},
		{"SettleReportedNegativeRetention", testSettleReportedNegativeRetention},
		{"StatusOutlivesIdleExpiry", testStatusOutlivesIdleExpiry},
		{"IdleExpires", testIdleExpires},
		{"IdleKeepsPushes", testIdleKeepsPushes},
		{"IdleNever", testIdleNever},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

// ctxFor returns a context that ends with the test or after 30 s.
func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// claim claims peers when s is an Owner.
func claim(t testing.TB, s queue.ServerStore, peers ...string) {
	t.Helper()
	o, ok := s.(queue.Owner)
	if !ok {
		return
	}
	for _, p := range peers {
		if err := o.Claim(ctxFor(t), p); err != nil {
			t.Fatalf("Claim(%q): %v", p, err)
		}
	}
}

// entry builds a test entry whose ID, payload and headers encode n.
func entry(n int) queue.Entry {
	var id protocol.MessageID
	copy(id[:], fmt.Sprintf("id-%012d", n))
	e := queue.Entry{ID: id, Payload: fmt.Appendf(nil, "payload %d", n)}
	if n%2 == 0 {
		e.Headers = []protocol.Header{{Key: "n", Value: fmt.Sprint(n)}, {Key: "empty", Value: ""}}
	}
	return e
}

// entryFor is entry(n) with an ID of its own for key (a client, say):
// pushes are idempotent by ID, so entries pushed to several clients, or
// pushed again, need distinct IDs.
func entryFor(key string, n int) queue.Entry {
	e := entry(n)
	h := fnv.New64a()
	h.Write([]byte(key))
	binary.BigEndian.PutUint64(e.ID[:8], h.Sum64())
	return e
}

func entryWithPayload(n int) queue.Entry { return queue.Entry{Payload: make([]byte, n)} }

func sameEntry(a, b queue.Entry) bool {
	return a.Seq == b.Seq && a.ID == b.ID && a.Expires == b.Expires &&
		string(a.Payload) == string(b.Payload) && slices.Equal(a.Headers, b.Headers)
}

func seqs(es []queue.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func push(client string, n int) queue.Push {
	return queue.Push{Client: client, Entry: entryFor(client, n)}
}

func mustPush(t testing.TB, s queue.Outboxes, msgs ...queue.Push) ([]uint64, []queue.Evicted) {
	t.Helper()
	seqs, evicted, err := s.Push(ctxFor(t), msgs)
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

// mustAckOutbox claims client (for an Owner) and acks up to upTo.
func mustAckOutbox(t testing.TB, s queue.ServerStore, client string, upTo uint64, outcomes ...queue.Outcome) {
	t.Helper()
	claim(t, s, client)
	if err := s.AckOutbox(ctxFor(t), client, upTo, outcomes); err != nil {
		t.Fatalf("AckOutbox(%q, %d): %v", client, upTo, err)
	}
}

func testPushReadAck(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	start := time.Now().Truncate(time.Millisecond)
	var want []queue.Entry
	for i := 1; i <= 5; i++ {
		seqs, evicted := mustPush(t, s, push("a", i))
		if seqs[0] != uint64(i) || len(evicted) != 0 {
			t.Fatalf("Push #%d = %v, %v; want [%d], none evicted", i, seqs, evicted, i)
		}
		e := entryFor("a", i)
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
	// max and maxBytes: at least one entry, then within the limits.
	if es, err := s.ReadOutbox("a", 2, 2, 0); err != nil || !slices.Equal(seqs(es), []uint64{2, 3}) {
		t.Errorf("ReadOutbox(a, 2, max 2) = %v, %v; want [2 3]", seqs(es), err)
	}
	if es, err := s.ReadOutbox("a", 1, 0, 1); err != nil || !slices.Equal(seqs(es), []uint64{1}) {
		t.Errorf("ReadOutbox(a, 1, maxBytes 1) = %v, %v; want [1]", seqs(es), err)
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
	if again := mustInfo(t, s, "a"); !sameInfo(again, info) {
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
}

// sameInfo compares OutboxInfos, Oldest by its instant.
func sameInfo(a, b queue.OutboxInfo) bool {
	if !a.Oldest.Equal(b.Oldest) {
		return false
	}
	a.Oldest, b.Oldest = time.Time{}, time.Time{}
	return a == b
}

func testClientsIsolated(t *testing.T, h Harness) {
	s := h.Open(t, nil)
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
			want := entryFor(tc.client, n)
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

func testFanout(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	const n = 500
	msgs := make([]queue.Push, n)
	for round := uint64(1); round <= 2; round++ {
		for i := range msgs {
			c := fmt.Sprintf("client-%04d", i)
			msgs[i] = queue.Push{Client: c, Entry: entryFor(fmt.Sprint(c, round), 7)}
		}
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
	want := msgs[n-1].Entry
	want.Seq = 2
	if len(got) != 2 || !sameEntry(got[1], want) {
		t.Fatalf("last client holds %+v", got)
	}
}

func testLimitsFail(t *testing.T, h Harness) {
	t.Run("messages", func(t *testing.T) {
		s := h.Open(t, &queue.Options{OutboxMaxMessages: 3})
		mustPush(t, s, push("a", 1), push("a", 2))
		before := mustInfo(t, s, "a")
		// Messages of one call for one client count together; the whole
		// call fails, b included.
		_, _, err := s.Push(ctxFor(t), []queue.Push{push("b", 1), push("a", 3), push("a", 4)})
		if !errors.Is(err, queue.ErrFull) {
			t.Fatalf("Push over the limit = %v, want ErrFull", err)
		}
		if after := mustInfo(t, s, "a"); !sameInfo(after, before) {
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
		if _, _, err := s.Push(ctxFor(t), []queue.Push{push("a", 4)}); !errors.Is(err, queue.ErrFull) {
			t.Fatalf("Push to a full outbox = %v, want ErrFull", err)
		}
		mustPush(t, s, push("b", 1)) // other outboxes are not full
		mustAckOutbox(t, s, "a", 1)
		if got, _ := mustPush(t, s, push("a", 4)); got[0] != 4 {
			t.Fatalf("Push after AckOutbox = %v, want [4]", got)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		s := h.Open(t, &queue.Options{OutboxMaxBytes: 25})
		mustPush(t, s, queue.Push{Client: "a", Entry: entryWithPayload(10)}, queue.Push{Client: "a", Entry: entryWithPayload(10)})
		if _, _, err := s.Push(ctxFor(t), []queue.Push{{Client: "a", Entry: entryWithPayload(6)}}); !errors.Is(err, queue.ErrFull) {
			t.Fatalf("Push over OutboxMaxBytes = %v, want ErrFull", err)
		}
		mustPush(t, s, queue.Push{Client: "a", Entry: queue.Entry{Headers: []protocol.Header{{Key: "k", Value: "vvvv"}}}})
		if info := mustInfo(t, s, "a"); info.Bytes != 25 || info.Messages != 3 {
			t.Fatalf("OutboxInfo = %+v, want 3 messages of 25 bytes", info)
		}
	})
	t.Run("unlimited", func(t *testing.T) {
		s := h.Open(t, &queue.Options{OutboxMaxMessages: -1, OutboxMaxBytes: -1})
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

func testLimitsEvict(t *testing.T, h Harness) {
	t.Run("messages", func(t *testing.T) {
		s := h.Open(t, &queue.Options{OutboxMaxMessages: 3, OutboxEvict: true})
		mustPush(t, s, push("a", 1), push("a", 2), push("a", 3), push("b", 9))
		assigned, evicted := mustPush(t, s, push("a", 4), push("b", 10), push("a", 5))
		if !slices.Equal(assigned, []uint64{4, 2, 5}) {
			t.Fatalf("Push = %v, want [4 2 5]", assigned)
		}
		want := []queue.Evicted{{Client: "a", Seq: 1, ID: entryFor("a", 1).ID}, {Client: "a", Seq: 2, ID: entryFor("a", 2).ID}}
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
		mustAckOutbox(t, s, "a", 1) // an evicted sequence: a no-op
		if again := mustInfo(t, s, "a"); !sameInfo(again, info) {
			t.Fatalf("AckOutbox(1) changed %+v to %+v", info, again)
		}
		// A call that cannot fit even in an empty outbox still fails.
		_, _, err := s.Push(ctxFor(t), []queue.Push{push("a", 6), push("a", 7), push("a", 8), push("a", 9)})
		if !errors.Is(err, queue.ErrFull) {
			t.Fatalf("Push of 4 to a 3-message outbox = %v, want ErrFull", err)
		}
		if again := mustInfo(t, s, "a"); !sameInfo(again, info) {
			t.Fatalf("refused Push changed %+v to %+v", info, again)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		s := h.Open(t, &queue.Options{OutboxMaxBytes: 25, OutboxEvict: true})
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

func testTooLarge(t *testing.T, h Harness) {
	s := h.Open(t, &queue.Options{OutboxMaxBytes: 10, OutboxEvict: true})
	_, _, err := s.Push(ctxFor(t), []queue.Push{
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

func testBadArguments(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	ctx := ctxFor(t)
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
	if err := s.SetWatermark(ctx, "", protocol.StreamID{1}, 1); err == nil {
		t.Error("SetWatermark with empty peer succeeded")
	}
	if err := s.Bind(ctx, "", "x"); err == nil {
		t.Error("Bind with empty peer succeeded")
	}
	if info := mustInfo(t, s, "ok"); info.LastSeq != 0 {
		t.Errorf("refused Push queued a message: %+v", info)
	}
	longest := strings.Repeat("é", protocol.MaxClientIDLen/2)
	if got, _ := mustPush(t, s, queue.Push{Client: longest}); got[0] != 1 {
		t.Errorf("Push to the longest client ID = %v", got)
	}
}

func testUnknownClient(t *testing.T, h Harness) {
	s := h.Open(t, nil)
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

func testClientsPaging(t *testing.T, h Harness) {
	s := h.Open(t, nil)
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
		if info := mustInfo(t, s, in.Client); !sameInfo(in, info) {
			t.Errorf("Clients lists %+v, OutboxInfo says %+v", in, info)
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

func testExpires(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	exp := time.Now().Add(time.Hour).UnixMilli()
	e := entry(1)
	e.Expires = exp
	mustPush(t, s, queue.Push{Client: "a", Entry: e}, push("a", 2))
	got := mustReadOutbox(t, s, "a", 0)
	if len(got) != 2 || got[0].Expires != exp || got[1].Expires != 0 {
		t.Fatalf("ReadOutbox = %+v, want Expires %d then 0", got, exp)
	}
}

// testConcurrent: pushes and acks from many goroutines to a few clients;
// every push gets a distinct sequence, each outbox holds exactly its
// unacked pushes in order.
func testConcurrent(t *testing.T, h Harness) {
	s := h.Open(t, &queue.Options{OutboxMaxMessages: -1})
	const workers, each, clients = 16, 30, 4
	ctx := ctxFor(t)
	for c := range clients {
		claim(t, s, fmt.Sprintf("c%d", c))
	}
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
				// IDs of this worker's own: pushes are idempotent by ID.
				seqs, _, err := s.Push(ctx, []queue.Push{
					{Client: client, Entry: entryFor(fmt.Sprint(client, "/", w), i)},
					{Client: other, Entry: entryFor(fmt.Sprint(other, "/", w), i)},
				})
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
			t.Errorf("client %s: %+v, holds %d: not acked+1..last", c, info, len(es))
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

func testAfterClose(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	mustPush(t, s, push("a", 1))
	claim(t, s, "a")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t)
	checks := map[string]error{}
	_, _, checks["Push"] = s.Push(ctx, []queue.Push{push("a", 2)})
	_, checks["OutboxInfo"] = s.OutboxInfo("a")
	_, checks["ReadOutbox"] = s.ReadOutbox("a", 0, 0, 0)
	checks["AckOutbox"] = s.AckOutbox(ctx, "a", 1, nil)
	_, checks["Clients"] = s.Clients("", 0)
	_, _, checks["Status"] = s.Status(entry(1).ID)
	_, checks["Unreported"] = s.Unreported(0)
	checks["MarkReported"] = s.MarkReported(ctx, []protocol.MessageID{entry(1).ID})
	checks["SetWatermark"] = s.SetWatermark(ctx, "a", protocol.StreamID{1}, 1)
	_, checks["Watermark"] = s.Watermark("a", protocol.StreamID{1})
	checks["Bind"] = s.Bind(ctx, "a", "x")
	_, checks["Binding"] = s.Binding("a")
	checks["Touch"] = s.Touch(ctx, "a")
	checks["Close"] = s.Close()
	for name, err := range checks {
		if !errors.Is(err, queue.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

// testClientPrefixes: client IDs that are prefixes of each other, NUL
// bytes included, keep separate outboxes.
func testClientPrefixes(t *testing.T, h Harness) {
	s := h.Open(t, nil)
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
			if e.ID != entryFor(c, 100*i+int(e.Seq)-1).ID {
				t.Fatalf("client %q holds another client's entry %+v", c, e)
			}
		}
		if info := mustInfo(t, s, c); info.Messages != len(want) || info.FirstSeq != want[0] {
			t.Fatalf("OutboxInfo(%q) = %+v", c, info)
		}
	}
}

func mustSetWatermark(t testing.TB, s queue.ServerStore, peer string, stream protocol.StreamID, seq uint64) {
	t.Helper()
	if err := s.SetWatermark(ctxFor(t), peer, stream, seq); err != nil {
		t.Fatalf("SetWatermark(%q, %v, %d): %v", peer, stream, seq, err)
	}
}

func wantWatermark(t testing.TB, s queue.ServerStore, peer string, stream protocol.StreamID, want uint64) {
	t.Helper()
	if wm, err := s.Watermark(peer, stream); err != nil || wm != want {
		t.Errorf("Watermark(%q, %v) = %d, %v; want %d", peer, stream, wm, err, want)
	}
}

func testWatermarks(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	a, b := protocol.StreamID{1}, protocol.StreamID{2}
	wantWatermark(t, s, "peer", a, 0)
	claim(t, s, "peer", "other", "peer\x00", "\x00")
	mustSetWatermark(t, s, "peer", a, 7)
	mustSetWatermark(t, s, "peer", b, 9)
	mustSetWatermark(t, s, "other", a, 3)
	mustSetWatermark(t, s, "peer\x00", a, 11) // a longer peer name is another peer
	mustSetWatermark(t, s, "\x00", b, 1<<62)
	for _, tc := range []struct {
		peer   string
		stream protocol.StreamID
		want   uint64
	}{{"peer", a, 7}, {"peer", b, 9}, {"other", a, 3}, {"other", b, 0}, {"peer\x00", a, 11}, {"\x00", b, 1 << 62}} {
		wantWatermark(t, s, tc.peer, tc.stream, tc.want)
	}
	// Concurrent writers of different streams each get theirs.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if err := s.SetWatermark(ctxFor(t), "peer", protocol.StreamID{byte(10 + i)}, uint64(100+i)); err != nil {
				t.Errorf("SetWatermark: %v", err)
			}
		})
	}
	wg.Wait()
	for i := range 20 {
		wantWatermark(t, s, "peer", protocol.StreamID{byte(10 + i)}, uint64(100+i))
	}
}

// testWatermarkMonotonic: a watermark never moves back; a lower or equal
// SetWatermark succeeds and changes nothing.
func testWatermarkMonotonic(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	a := protocol.StreamID{1}
	claim(t, s, "p")
	mustSetWatermark(t, s, "p", a, 10)
	mustSetWatermark(t, s, "p", a, 4)
	wantWatermark(t, s, "p", a, 10)
	mustSetWatermark(t, s, "p", a, 10)
	mustSetWatermark(t, s, "p", a, 11)
	wantWatermark(t, s, "p", a, 11)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if err := s.SetWatermark(ctxFor(t), "p", a, uint64(11+i)); err != nil {
				t.Errorf("SetWatermark: %v", err)
			}
		})
	}
	wg.Wait()
	wantWatermark(t, s, "p", a, 60)
}

func testBindings(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	ctx := ctxFor(t)
	if id, err := s.Binding("c1"); err != nil || id != "" {
		t.Fatalf("unknown Binding = %q, %v", id, err)
	}
	claim(t, s, "c1", "c2")
	for _, id := range []string{"alice", "bob"} {
		if err := s.Bind(ctx, "c1", id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Bind(ctx, "c2", "\x00\xff"); err != nil {
		t.Fatal(err)
	}
	if err := s.Touch(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	for peer, want := range map[string]string{"c1": "bob", "c2": "\x00\xff", "c3": ""} {
		if id, err := s.Binding(peer); err != nil || id != want {
			t.Errorf("Binding(%q) = %q, %v; want %q", peer, id, err, want)
		}
	}
}

// clock is a settable clock for settlement times.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// useClock gives s a fake clock, or skips the test (loudly) when the
// harness has no clock hook.
func useClock(t *testing.T, h Harness, s queue.ServerStore) *clock {
	t.Helper()
	return useClockAt(t, h, s, time.UnixMilli(1_700_000_000_000))
}

// useClockAt is useClock with a clock starting at start.
func useClockAt(t *testing.T, h Harness, s queue.ServerStore, start time.Time) *clock {
	t.Helper()
	if h.SetClock == nil {
		t.Skip("queuetest: SKIPPING: the harness has no SetClock hook; this test needs a settable clock")
	}
	c := &clock{now: start}
	h.SetClock(s, c.Now)
	return c
}

func pushN(t *testing.T, s queue.ServerStore, client string, base, n int) []protocol.MessageID {
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
	if err := s.MarkReported(ctxFor(t), ids); err != nil {
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

func testSettledPending(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	clock := useClock(t, h, s)
	id := pushN(t, s, "a", 1, 1)[0]
	if got := mustStatus(t, s, id); got != (queue.Settled{ID: id, Client: "a", Seq: 1, Pending: true}) {
		t.Fatalf("Status after Push = %+v, want pending", got)
	}
	if got := mustUnreported(t, s, 0); len(got) != 0 {
		t.Fatalf("Unreported lists pending records: %+v", got)
	}
	clock.Advance(time.Second)
	mustAckOutbox(t, s, "a", 1)
	want := queue.Settled{ID: id, Client: "a", Seq: 1, At: clock.Now()}
	if got := mustStatus(t, s, id); !got.At.Equal(want.At) {
		t.Fatalf("Status after AckOutbox = %+v, want %+v", got, want)
	} else if got.At = want.At; got != want {
		t.Fatalf("Status after AckOutbox = %+v, want %+v", got, want)
	}
	mustNoStatus(t, s, entry(99).ID)
}

func testSettledOutcomes(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	id := pushN(t, s, "a", 1, 4)
	mustAckOutbox(t, s, "a", 3,
		queue.Outcome{Seq: 2, Code: uint16(protocol.RejectHandler), Reason: "bad"},
		queue.Outcome{Seq: 3, Code: uint16(protocol.RejectExpired), Reason: "late"},
		queue.Outcome{Seq: 3, Code: 4, Reason: "the first outcome of a sequence wins"},
		queue.Outcome{Seq: 4, Code: 4, Reason: "not acked, ignored"},
		queue.Outcome{Seq: 9, Code: 4, Reason: "no such entry"},
	)
	for i, want := range []struct {
		code    uint16
		reason  string
		pending bool
	}{{0, "", false}, {1, "bad", false}, {2, "late", false}, {0, "", true}} {
		got := mustStatus(t, s, id[i])
		if got.Seq != uint64(i+1) || got.Code != want.code || got.Reason != want.reason || got.Pending != want.pending || got.Client != "a" {
			t.Errorf("Status of seq %d = %+v, want %+v", i+1, got, want)
		}
		if got.Pending != got.At.IsZero() {
			t.Errorf("Status of seq %d = %+v: At must be set exactly when settled", i+1, got)
		}
	}
	if got := mustUnreported(t, s, 0); len(got) != 3 {
		t.Fatalf("Unreported = %+v, want the 3 settled", got)
	}
	// A reason longer than the protocol allows is cut on a rune boundary.
	long := strings.Repeat("é", protocol.MaxReasonLen)
	mustAckOutbox(t, s, "a", 4, queue.Outcome{Seq: 4, Code: 1, Reason: long})
	if got := mustStatus(t, s, id[3]); len(got.Reason) != protocol.MaxReasonLen || got.Code != 1 {
		t.Fatalf("Status with a long reason: code %d, reason of %d bytes", got.Code, len(got.Reason))
	}
}

func testSettledEvicted(t *testing.T, h Harness) {
	s := h.Open(t, &queue.Options{OutboxMaxMessages: 2, OutboxEvict: true})
	id := pushN(t, s, "a", 1, 3)
	got := mustStatus(t, s, id[0])
	if got.Code != uint16(protocol.RejectEvicted) || got.Reason != "evicted to make room" || got.Pending || got.Seq != 1 || got.At.IsZero() {
		t.Fatalf("Status of the evicted entry = %+v", got)
	}
	for _, i := range []int{1, 2} {
		if got := mustStatus(t, s, id[i]); !got.Pending {
			t.Fatalf("Status of a kept entry = %+v, want pending", got)
		}
	}
	if got := ids(mustUnreported(t, s, 0)); !slices.Equal(got, id[:1]) {
		t.Fatalf("Unreported = %x, want the evicted one", got)
	}
}

func testSettledUnreported(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	clock := useClock(t, h, s)
	// Settle five at distinct times, in an order unlike the IDs'.
	id := pushN(t, s, "a", 1, 3)
	id = append(id, pushN(t, s, "b", 10, 2)...)
	clock.Advance(time.Second)
	mustAckOutbox(t, s, "b", 1) // id[3]
	clock.Advance(time.Second)
	mustAckOutbox(t, s, "a", 2) // id[0], id[1]
	clock.Advance(time.Second)
	mustAckOutbox(t, s, "b", 2) // id[4]
	want := []protocol.MessageID{id[3], id[0], id[1], id[4]}
	if got := ids(mustUnreported(t, s, 0)); !slices.Equal(got, want) {
		t.Fatalf("Unreported = %x, want %x (oldest first)", got, want)
	}
	if got := ids(mustUnreported(t, s, 2)); !slices.Equal(got, want[:2]) {
		t.Fatalf("Unreported(2) = %x, want %x", got, want[:2])
	}
	mustMarkReported(t, s) // nothing: a no-op
	// Unknown and pending IDs are skipped.
	mustMarkReported(t, s, want[0], want[1], entry(999).ID, id[2])
	if got := ids(mustUnreported(t, s, 0)); !slices.Equal(got, want[2:]) {
		t.Fatalf("Unreported after MarkReported = %x, want %x", got, want[2:])
	}
	if got := mustStatus(t, s, want[0]); got.Pending || got.Client != "b" {
		t.Fatalf("Status of a reported record = %+v", got)
	}
	if got := mustStatus(t, s, id[2]); !got.Pending {
		t.Fatalf("MarkReported changed a pending record: %+v", got)
	}
	mustMarkReported(t, s, want[0], want[2], want[3]) // one already reported
	if got := mustUnreported(t, s, 0); len(got) != 0 {
		t.Fatalf("Unreported after marking all = %+v", got)
	}
}

func testSettledNegativeRetention(t *testing.T, h Harness) {
	s := h.Open(t, &queue.Options{StatusRetention: -1})
	id := pushN(t, s, "a", 1, 2)
	mustAckOutbox(t, s, "a", 2)
	mustMarkReported(t, s, id[0])
	mustNoStatus(t, s, id[0])
	if got := ids(mustUnreported(t, s, 0)); !slices.Equal(got, id[1:]) {
		t.Fatalf("Unreported = %x, want %x", got, id[1:])
	}
}

// wantPrunedAfterHour moves clock past an hour's StatusRetention with a
// commit on either side of it: the records of gone are found before and
// pruned after (a store may prune later, but Status must no longer find
// a record due for pruning).
func wantPrunedAfterHour(t *testing.T, s queue.ServerStore, clock *clock, gone ...protocol.MessageID) {
	t.Helper()
	clock.Advance(59 * time.Minute)
	claim(t, s, "p")
	mustSetWatermark(t, s, "p", protocol.StreamID{1}, 1)
	for _, id := range gone {
		mustStatus(t, s, id)
	}
	clock.Advance(2 * time.Minute)
	mustSetWatermark(t, s, "p", protocol.StreamID{1}, 2)
	for _, id := range gone {
		mustNoStatus(t, s, id)
	}
}

func testSettledRetention(t *testing.T, h Harness) {
	s := h.Open(t, &queue.Options{StatusRetention: time.Hour})
	clock := useClock(t, h, s)
	id := pushN(t, s, "a", 1, 3)
	mustAckOutbox(t, s, "a", 3)
	mustMarkReported(t, s, id[0], id[1])
	wantPrunedAfterHour(t, s, clock, id[0], id[1])
	// Unreported records are never pruned.
	if got := mustStatus(t, s, id[2]); got.Pending {
		t.Fatalf("Status = %+v", got)
	}
	if got := ids(mustUnreported(t, s, 0)); !slices.Equal(got, id[2:]) {
		t.Fatalf("Unreported = %x, want %x", got, id[2:])
	}
}

// testPushIdempotent: a message whose ID has a record is not queued
// again and keeps its sequence, pending or settled, also when it repeats
// within one call; an ID recorded for another client fails the whole
// call.
func testPushIdempotent(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	x, y, z := entry(1), entry(2), entry(3)
	wantSeqs := func(got []uint64, want ...uint64) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Fatalf("seqs = %v, want %v", got, want)
		}
	}
	got, _ := mustPush(t, s, queue.Push{Client: "a", Entry: x})
	wantSeqs(got, 1)
	got, _ = mustPush(t, s, queue.Push{Client: "a", Entry: x}) // a retry
	wantSeqs(got, 1)
	got, _ = mustPush(t, s, queue.Push{Client: "a", Entry: y}, queue.Push{Client: "a", Entry: x}, queue.Push{Client: "a", Entry: y})
	wantSeqs(got, 2, 1, 2)
	if info := mustInfo(t, s, "a"); info.Messages != 2 || info.LastSeq != 2 {
		t.Fatalf("outbox after repeats = %+v, want 2 messages", info)
	}
	if got := seqs(mustReadOutbox(t, s, "a", 1)); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("outbox holds %v, want [1 2]", got)
	}
	// Settled, the message is still not queued again.
	mustAckOutbox(t, s, "a", 1)
	got, _ = mustPush(t, s, queue.Push{Client: "a", Entry: x})
	wantSeqs(got, 1)
	if got := mustStatus(t, s, x.ID); got.Pending || got.Seq != 1 {
		t.Fatalf("Status after a retry of a settled push = %+v", got)
	}
	// Another client: refused, all or none.
	_, _, err := s.Push(ctxFor(t), []queue.Push{{Client: "b", Entry: z}, {Client: "b", Entry: x}})
	if !errors.Is(err, queue.ErrIDInUse) {
		t.Fatalf("push of a's ID to b: %v, want ErrIDInUse", err)
	}
	_, _, err = s.Push(ctxFor(t), []queue.Push{{Client: "c", Entry: z}, {Client: "b", Entry: z}})
	if !errors.Is(err, queue.ErrIDInUse) {
		t.Fatalf("one ID to two clients in a call: %v, want ErrIDInUse", err)
	}
	if info := mustInfo(t, s, "b"); info.LastSeq != 0 {
		t.Fatalf("b's outbox after the refused pushes = %+v, want none", info)
	}
	mustNoStatus(t, s, z.ID)
	if info := mustInfo(t, s, "a"); info.LastSeq != 2 {
		t.Fatalf("a's outbox after the refused pushes = %+v", info)
	}
}

// testPushIdempotentUntilPruned: once the record of a settled push is
// pruned, its ID is free again.
func testPushIdempotentUntilPruned(t *testing.T, h Harness) {
	s := h.Open(t, &queue.Options{StatusRetention: time.Hour, SettleReported: true})
	clock := useClock(t, h, s)
	x := entry(1)
	mustPush(t, s, queue.Push{Client: "a", Entry: x})
	mustAckOutbox(t, s, "a", 1)
	clock.Advance(30 * time.Minute)
	if seqs, _ := mustPush(t, s, queue.Push{Client: "a", Entry: x}); seqs[0] != 1 {
		t.Fatalf("retry within the retention: seq %d, want 1", seqs[0])
	}
	clock.Advance(31 * time.Minute)
	claim(t, s, "p")
	mustSetWatermark(t, s, "p", protocol.StreamID{1}, 1) // a commit that prunes
	if seqs, _ := mustPush(t, s, queue.Push{Client: "a", Entry: x}); seqs[0] != 2 {
		t.Fatalf("push after the record was pruned: seq %d, want 2", seqs[0])
	}
}

// testSettleReported: with Options.SettleReported records settle
// already reported, so Unreported never lists them, and they are pruned
// after the retention like any reported record.
func testSettleReported(t *testing.T, h Harness) {
	s := h.Open(t, &queue.Options{StatusRetention: time.Hour, SettleReported: true})
	clock := useClock(t, h, s)
	id := pushN(t, s, "a", 1, 3)
	clock.Advance(time.Second)
	settledAt := clock.Now()
	mustAckOutbox(t, s, "a", 2, queue.Outcome{Seq: 2, Code: uint16(protocol.RejectHandler), Reason: "bad"})
	for i, want := range []queue.Settled{
		{ID: id[0], Client: "a", Seq: 1, At: settledAt},
		{ID: id[1], Client: "a", Seq: 2, Code: uint16(protocol.RejectHandler), Reason: "bad", At: settledAt},
		{ID: id[2], Client: "a", Seq: 3, Pending: true},
	} {
		got := mustStatus(t, s, id[i])
		if !got.At.Equal(want.At) {
			t.Errorf("Status of seq %d = %+v, want %+v", i+1, got, want)
		} else if got.At = want.At; got != want {
			t.Errorf("Status of seq %d = %+v, want %+v", i+1, got, want)
		}
	}
	if got := mustUnreported(t, s, 0); len(got) != 0 {
		t.Fatalf("Unreported = %+v, want none: records settle reported", got)
	}
	mustMarkReported(t, s, id...) // nothing left to mark: a no-op
	wantPrunedAfterHour(t, s, clock, id[0], id[1])
	if got := mustStatus(t, s, id[2]); !got.Pending {
		t.Fatalf("Status of the pending record after the retention = %+v", got)
	}
}

// testStatusOutlivesIdleExpiry: a client whose state expired while the
// statuses of its pushes are still kept (IdleExpiry shorter than
// StatusRetention) is pushed to again: the old statuses stay as they
// were, and the new pushes are pending.
func testStatusOutlivesIdleExpiry(t *testing.T, h Harness) {
	for _, reported := range []bool{false, true} {
		t.Run(fmt.Sprint("SettleReported=", reported), func(t *testing.T) {
			s := h.Open(t, &queue.Options{IdleExpiry: time.Hour, StatusRetention: 24 * time.Hour, SettleReported: reported})
			clock := useClockAt(t, h, s, time.Now())
			claim(t, s, "a", "z")
			mustBind(t, s, "a", "alice")
			old := pushN(t, s, "a", 1, 3)
			mustAckOutbox(t, s, "a", 3)
			clock.Advance(2 * time.Hour)
			mustTouch(t, s, "z") // a commit: expires a
			wantBinding(t, s, "a", "")
			fresh := pushN(t, s, "a", 10, 2)
			for _, id := range old {
				if got := mustStatus(t, s, id); got.Pending || got.Code != 0 {
					t.Errorf("Status of an old push after the client expired = %+v, want acknowledged", got)
				}
			}
			for _, id := range fresh {
				if got := mustStatus(t, s, id); !got.Pending {
					t.Errorf("Status of a new push = %+v, want pending", got)
				}
			}
		})
	}
}

// testSettleReportedNegativeRetention: reported records are not kept, so
// with SettleReported a record goes when its message settles.
func testSettleReportedNegativeRetention(t *testing.T, h Harness) {
	s := h.Open(t, &queue.Options{StatusRetention: -1, SettleReported: true})
	id := pushN(t, s, "a", 1, 2)
	mustAckOutbox(t, s, "a", 1)
	mustNoStatus(t, s, id[0])
	if got := mustStatus(t, s, id[1]); !got.Pending {
		t.Fatalf("Status of the pending record = %+v", got)
	}
	if got := mustUnreported(t, s, 0); len(got) != 0 {
		t.Fatalf("Unreported = %+v, want none", got)
	}
}

func mustBind(t *testing.T, s queue.ServerStore, peer, identity string) {
	t.Helper()
	if err := s.Bind(ctxFor(t), peer, identity); err != nil {
		t.Fatalf("Bind(%q): %v", peer, err)
	}
}

func mustTouch(t *testing.T, s queue.ServerStore, peer string) {
	t.Helper()
	if err := s.Touch(ctxFor(t), peer); err != nil {
		t.Fatalf("Touch(%q): %v", peer, err)
	}
}

func wantBinding(t *testing.T, s queue.ServerStore, peer, identity string) {
	t.Helper()
	if got, err := s.Binding(peer); err != nil || got != identity {
		t.Errorf("Binding(%q) = %q, %v; want %q", peer, got, err, identity)
	}
}

// streamAB is a stream of peer "a" whose key starts with "ab", like the
// keys of peer "ab".
var streamAB = protocol.StreamID{'b', 1}

// testIdleExpires: a peer's binding and watermarks go once it has been
// unused for longer than IdleExpiry; a write or Touch keeps them.
// The clock starts now, so times recorded at Open are not in its future.
func testIdleExpires(t *testing.T, h Harness) {
	s := h.Open(t, &queue.Options{IdleExpiry: time.Hour})
	clock := useClockAt(t, h, s, time.Now())
	claim(t, s, "a", "ab", "b", "c", "z")
	mustBind(t, s, "a", "alice")
	mustSetWatermark(t, s, "a", streamAB, 3)
	mustSetWatermark(t, s, "a", protocol.StreamID{2}, 4)
	mustSetWatermark(t, s, "ab", protocol.StreamID{3}, 5)
	mustBind(t, s, "b", "bob")
	mustSetWatermark(t, s, "b", protocol.StreamID{4}, 6)
	mustSetWatermark(t, s, "c", protocol.StreamID{5}, 7)

	clock.Advance(30 * time.Minute)
	mustTouch(t, s, "b")
	mustSetWatermark(t, s, "ab", protocol.StreamID{3}, 8)
	clock.Advance(45 * time.Minute)
	// A write lets a writer find what came due; reads let a Memory.
	mustTouch(t, s, "z")

	wantBinding(t, s, "a", "")
	wantWatermark(t, s, "a", streamAB, 0)
	wantWatermark(t, s, "a", protocol.StreamID{2}, 0)
	wantWatermark(t, s, "c", protocol.StreamID{5}, 0)
	wantWatermark(t, s, "ab", protocol.StreamID{3}, 8)
	wantBinding(t, s, "b", "bob")
	wantWatermark(t, s, "b", protocol.StreamID{4}, 6)

	// Expired state is gone, not poisoned: the peer starts afresh (in
	// a fleet store, with a new claim: the old one expired too).
	claim(t, s, "a")
	mustBind(t, s, "a", "another")
	wantBinding(t, s, "a", "another")
}

// testIdleKeepsPushes: a peer whose push outbox holds messages is never
// expired; once they are acked it is, with its empty outbox. A client
// that was only ever pushed to (no binding, no watermark) is a peer
// too: its emptied outbox goes the same way.
func testIdleKeepsPushes(t *testing.T, h Harness) {
	s := h.Open(t, &queue.Options{IdleExpiry: time.Hour})
	clock := useClockAt(t, h, s, time.Now())
	claim(t, s, "p", "q", "r", "z")
	for _, p := range []string{"p", "q"} {
		mustBind(t, s, p, "id-"+p)
		mustSetWatermark(t, s, p, protocol.StreamID{9}, 1)
		mustPush(t, s, push(p, 1))
	}
	mustPush(t, s, push("r", 1))
	mustAckOutbox(t, s, "q", 1)
	mustAckOutbox(t, s, "r", 1)
	clock.Advance(2 * time.Hour)
	mustTouch(t, s, "z")
	if info := mustInfo(t, s, "r"); !info.Stream.IsZero() {
		t.Errorf("OutboxInfo(r) = %+v, want the empty outbox of a client only pushed to gone", info)
	}

	wantBinding(t, s, "p", "id-p")
	wantWatermark(t, s, "p", protocol.StreamID{9}, 1)
	if info := mustInfo(t, s, "p"); info.Messages != 1 || info.Stream.IsZero() {
		t.Errorf("OutboxInfo(p) = %+v, want its push kept", info)
	}
	wantBinding(t, s, "q", "")
	wantWatermark(t, s, "q", protocol.StreamID{9}, 0)
	if info := mustInfo(t, s, "q"); !info.Stream.IsZero() {
		t.Errorf("OutboxInfo(q) = %+v, want the empty outbox gone", info)
	}

	// Once its pushes are acked, p expires in its turn.
	mustAckOutbox(t, s, "p", 1)
	clock.Advance(2 * time.Hour)
	mustTouch(t, s, "z")
	wantBinding(t, s, "p", "")
	wantWatermark(t, s, "p", protocol.StreamID{9}, 0)
	if info := mustInfo(t, s, "p"); !info.Stream.IsZero() {
		t.Errorf("OutboxInfo(p) = %+v, want it gone", info)
	}
}

// testIdleNever: a negative IdleExpiry keeps everything.
func testIdleNever(t *testing.T, h Harness) {
	s := h.Open(t, &queue.Options{IdleExpiry: -1})
	clock := useClockAt(t, h, s, time.Now())
	claim(t, s, "a", "z")
	mustBind(t, s, "a", "alice")
	mustSetWatermark(t, s, "a", protocol.StreamID{1}, 3)
	clock.Advance(10 * 365 * 24 * time.Hour)
	mustTouch(t, s, "z")
	wantBinding(t, s, "a", "alice")
	wantWatermark(t, s, "a", protocol.StreamID{1}, 3)
}
