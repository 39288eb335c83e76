package queue_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// stores lists the implementations the conformance tests run against.
var stores = []struct {
	name string
	open func(t *testing.T, opts *queue.Options) queue.Store
}{
	{"Memory", func(t *testing.T, opts *queue.Options) queue.Store {
		m := queue.NewMemory(opts)
		t.Cleanup(func() { _ = m.Close() })
		return m
	}},
	{"Bolt", func(t *testing.T, opts *queue.Options) queue.Store {
		return openBolt(t, tempPath(t), opts)
	}},
	{"BoltNoSync", func(t *testing.T, opts *queue.Options) queue.Store {
		o := queue.Options{}
		if opts != nil {
			o = *opts
		}
		o.NoSync = true
		return openBolt(t, tempPath(t), &o)
	}},
}

func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(*testing.T, *queue.Options) queue.Store)
	}{
		{"AppendOrder", testAppendOrder},
		{"ConcurrentAppends", testConcurrentAppends},
		{"ReadRanges", testReadRanges},
		{"AckDeletes", testAckDeletes},
		{"FailWhenFull", testFailWhenFull},
		{"TooLarge", testTooLarge},
		{"BlockWhenFull", testBlockWhenFull},
		{"ContextCanceled", testContextCanceled},
		{"CloseUnblocksWaiters", testCloseUnblocksWaiters},
		{"AfterClose", testAfterClose},
		{"WatermarksAndBindings", testWatermarksAndBindings},
		{"CallerBuffersNotRetained", testCallerBuffers},
		{"AppendBatch", testAppendBatch},
	}
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, s.open) })
			}
		})
	}
}

func testAppendOrder(t *testing.T, open func(*testing.T, *queue.Options) queue.Store) {
	s := open(t, nil)
	if m := s.Meta(); m.ClientID == "" || m.Stream.IsZero() {
		t.Fatalf("Meta = %+v, want a client ID and stream", m)
	}
	var want []queue.Entry
	for i := 1; i <= 10; i++ {
		e := entry(i)
		seq := mustAppend(t, s, e)
		if seq != uint64(i) {
			t.Fatalf("Append #%d returned seq %d", i, seq)
		}
		e.Seq = seq
		want = append(want, e)
	}
	got := mustRead(t, s, 0, 0, 0)
	if len(got) != len(want) {
		t.Fatalf("Read returned %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if !sameEntry(got[i], want[i]) {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	st := s.Stats()
	if st.Messages != 10 || st.FirstSeq != 1 || st.LastSeq != 10 || st.Acked != 0 {
		t.Errorf("Stats = %+v", st)
	}
	var bytes int64
	for _, e := range want {
		bytes += int64(len(e.Payload))
		for _, h := range e.Headers {
			bytes += int64(len(h.Key) + len(h.Value))
		}
	}
	if st.Bytes != bytes {
		t.Errorf("Stats.Bytes = %d, want %d", st.Bytes, bytes)
	}
}

func testConcurrentAppends(t *testing.T, open func(*testing.T, *queue.Options) queue.Store) {
	s := open(t, nil)
	const workers, each = 32, 40
	ctx := testCtx(t)
	var (
		mu  sync.Mutex
		got = map[uint64]int{} // seq -> entry number
		wg  sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				n := w*each + i
				seq, err := s.Append(ctx, entry(n))
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				if prev, dup := got[seq]; dup {
					t.Errorf("seq %d assigned to entries %d and %d", seq, prev, n)
				}
				got[seq] = n
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(got) != workers*each {
		t.Fatalf("%d distinct seqs, want %d", len(got), workers*each)
	}
	es := mustRead(t, s, 1, 0, 0)
	if len(es) != workers*each {
		t.Fatalf("Read returned %d entries, want %d", len(es), workers*each)
	}
	for i, e := range es {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d: not contiguous", i, e.Seq)
		}
		want := entry(got[e.Seq])
		want.Seq = e.Seq
		if !sameEntry(e, want) {
			t.Fatalf("seq %d holds %+v, want %+v", e.Seq, e, want)
		}
	}
}

func testReadRanges(t *testing.T, open func(*testing.T, *queue.Options) queue.Store) {
	s := open(t, nil)
	for range 10 {
		mustAppend(t, s, queue.Entry{Payload: make([]byte, 10)})
	}
	tests := []struct {
		name          string
		from          uint64
		max, maxBytes int
		want          []uint64
	}{
		{"all", 1, 0, 0, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"from zero", 0, 2, 0, []uint64{1, 2}},
		{"middle", 5, 3, 0, []uint64{5, 6, 7}},
		{"bytes", 3, 0, 25, []uint64{3, 4}},
		{"bytes exact", 3, 0, 30, []uint64{3, 4, 5}},
		{"at least one", 9, 5, 1, []uint64{9}},
		{"tail", 10, 5, 0, []uint64{10}},
		{"beyond", 11, 5, 0, []uint64{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := seqs(mustRead(t, s, tc.from, tc.max, tc.maxBytes))
			if !slices.Equal(got, tc.want) {
				t.Errorf("Read(%d, %d, %d) = %v, want %v", tc.from, tc.max, tc.maxBytes, got, tc.want)
			}
		})
	}
}

func testAckDeletes(t *testing.T, open func(*testing.T, *queue.Options) queue.Store) {
	s := open(t, nil)
	ctx := testCtx(t)
	for i := range 10 {
		mustAppend(t, s, entry(i))
	}
	if err := s.Ack(ctx, 5); err != nil {
		t.Fatalf("Ack(5): %v", err)
	}
	if got := seqs(mustRead(t, s, 0, 0, 0)); !slices.Equal(got, []uint64{6, 7, 8, 9, 10}) {
		t.Fatalf("after Ack(5) Read = %v", got)
	}
	if st := s.Stats(); st.Messages != 5 || st.FirstSeq != 6 || st.Acked != 5 || st.LastSeq != 10 {
		t.Fatalf("Stats = %+v", st)
	}
	if err := s.Ack(ctx, 3); err != nil {
		t.Fatalf("Ack(3) after Ack(5): %v", err)
	}
	if st := s.Stats(); st.Acked != 5 || st.Messages != 5 {
		t.Fatalf("Ack(3) changed Stats: %+v", st)
	}
	// Acking beyond the last sequence acks what exists, not the future.
	if err := s.Ack(ctx, 100); err != nil {
		t.Fatalf("Ack(100): %v", err)
	}
	if st := s.Stats(); st.Acked != 10 || st.Messages != 0 || st.Bytes != 0 || st.FirstSeq != 0 {
		t.Fatalf("after Ack(100) Stats = %+v", st)
	}
	if seq := mustAppend(t, s, entry(11)); seq != 11 {
		t.Fatalf("Append after acking everything = %d, want 11 (never reused)", seq)
	}
	if got := seqs(mustRead(t, s, 0, 0, 0)); !slices.Equal(got, []uint64{11}) {
		t.Fatalf("Read = %v, want [11]", got)
	}
}

func testFailWhenFull(t *testing.T, open func(*testing.T, *queue.Options) queue.Store) {
	t.Run("messages", func(t *testing.T) {
		s := open(t, &queue.Options{MaxMessages: 3, FailWhenFull: true})
		for range 3 {
			mustAppend(t, s, entry(1))
		}
		if _, err := s.Append(testCtx(t), entry(1)); !errors.Is(err, queue.ErrFull) {
			t.Fatalf("4th Append = %v, want ErrFull", err)
		}
		if err := s.Ack(testCtx(t), 1); err != nil {
			t.Fatal(err)
		}
		if seq := mustAppend(t, s, entry(1)); seq != 4 {
			t.Fatalf("Append after Ack = %d, want 4", seq)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		s := open(t, &queue.Options{MaxBytes: 25, FailWhenFull: true})
		mustAppend(t, s, queue.Entry{Payload: make([]byte, 10)})
		mustAppend(t, s, queue.Entry{Payload: make([]byte, 10)})
		if _, err := s.Append(testCtx(t), queue.Entry{Payload: make([]byte, 6)}); !errors.Is(err, queue.ErrFull) {
			t.Fatalf("Append over MaxBytes = %v, want ErrFull", err)
		}
		mustAppend(t, s, queue.Entry{Headers: []protocol.Header{{Key: "k", Value: "vvvv"}}})
		if st := s.Stats(); st.Bytes != 25 {
			t.Fatalf("Stats.Bytes = %d, want 25", st.Bytes)
		}
	})
}

func testTooLarge(t *testing.T, open func(*testing.T, *queue.Options) queue.Store) {
	s := open(t, &queue.Options{MaxBytes: 10})
	_, err := s.Append(testCtx(t), queue.Entry{Payload: make([]byte, 11)})
	if !errors.Is(err, queue.ErrTooLarge) {
		t.Fatalf("Append of 11 bytes with MaxBytes 10 = %v, want ErrTooLarge", err)
	}
	mustAppend(t, s, queue.Entry{Payload: make([]byte, 10)})
}

func testBlockWhenFull(t *testing.T, open func(*testing.T, *queue.Options) queue.Store) {
	s := open(t, &queue.Options{MaxMessages: 2})
	mustAppend(t, s, entry(1))
	mustAppend(t, s, entry(2))

	// A waiting Append gives up when its context ends.
	ctx, cancel := context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancel()
	_, err := s.Append(ctx, entry(3))
	if !errors.Is(err, queue.ErrFull) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append on a full store with a deadline = %v, want ErrFull and DeadlineExceeded", err)
	}

	// A waiting Append proceeds once an ack makes room.
	type result struct {
		seq uint64
		err error
	}
	res := make(chan result, 1)
	go func() {
		seq, err := s.Append(testCtx(t), entry(3))
		res <- result{seq, err}
	}()
	if err := s.Ack(testCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if r.err != nil || r.seq != 3 {
			t.Fatalf("waiting Append = %d, %v; want 3, nil", r.seq, r.err)
		}
	case <-testCtx(t).Done():
		t.Fatal("waiting Append did not proceed after Ack")
	}
}

func testContextCanceled(t *testing.T, open func(*testing.T, *queue.Options) queue.Store) {
	s := open(t, &queue.Options{MaxMessages: 1})
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	if _, err := s.Append(ctx, entry(1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with canceled ctx = %v, want context.Canceled", err)
	}
	if err := s.SetWatermark(ctx, "p", protocol.StreamID{1}, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("SetWatermark with canceled ctx = %v, want context.Canceled", err)
	}
	mustAppend(t, s, entry(1))
	if _, err := s.Append(ctx, entry(2)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append on full store with canceled ctx = %v, want context.Canceled", err)
	}
	if st := s.Stats(); st.Messages != 1 || st.LastSeq != 1 {
		t.Fatalf("failed appends changed Stats: %+v", st)
	}
}

func testCloseUnblocksWaiters(t *testing.T, open func(*testing.T, *queue.Options) queue.Store) {
	s := open(t, &queue.Options{MaxMessages: 1})
	mustAppend(t, s, entry(1))
	const waiters = 8
	errs := make(chan error, waiters)
	for range waiters {
		go func() {
			_, err := s.Append(testCtx(t), entry(2))
			errs <- err
		}()
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for range waiters {
		select {
		case err := <-errs:
			if !errors.Is(err, queue.ErrClosed) {
				t.Errorf("waiting Append after Close = %v, want ErrClosed", err)
			}
		case <-testCtx(t).Done():
			t.Fatal("Close did not unblock a waiting Append")
		}
	}
}

func testAfterClose(t *testing.T, open func(*testing.T, *queue.Options) queue.Store) {
	s := open(t, nil)
	mustAppend(t, s, entry(1))
	meta := s.Meta()
	var wg sync.WaitGroup
	closeErrs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { closeErrs <- s.Close() })
	}
	wg.Wait()
	close(closeErrs)
	nils := 0
	for err := range closeErrs {
		switch {
		case err == nil:
			nils++
		case !errors.Is(err, queue.ErrClosed):
			t.Errorf("concurrent Close = %v", err)
		}
	}
	if nils != 1 {
		t.Errorf("%d of 4 concurrent Close calls returned nil, want 1", nils)
	}
	ctx := testCtx(t)
	checks := map[string]error{}
	_, checks["Append"] = s.Append(ctx, entry(2))
	_, checks["Read"] = s.Read(1, 0, 0)
	checks["Ack"] = s.Ack(ctx, 1)
	_, checks["Watermark"] = s.Watermark("p", protocol.StreamID{1})
	checks["SetWatermark"] = s.SetWatermark(ctx, "p", protocol.StreamID{1}, 1)
	_, checks["Binding"] = s.Binding("p")
	checks["Bind"] = s.Bind(ctx, "p", "id")
	checks["Close"] = s.Close()
	for name, err := range checks {
		if !errors.Is(err, queue.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if s.Meta() != meta {
		t.Errorf("Meta changed after Close")
	}
}

func testWatermarksAndBindings(t *testing.T, open func(*testing.T, *queue.Options) queue.Store) {
	s := open(t, nil)
	ctx := testCtx(t)
	a, b := protocol.StreamID{1}, protocol.StreamID{2}
	if wm, err := s.Watermark("peer", a); err != nil || wm != 0 {
		t.Fatalf("unknown Watermark = %d, %v", wm, err)
	}
	if err := s.SetWatermark(ctx, "peer", a, 7); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWatermark(ctx, "peer", b, 9); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWatermark(ctx, "other", a, 3); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		peer   string
		stream protocol.StreamID
		want   uint64
	}{{"peer", a, 7}, {"peer", b, 9}, {"other", a, 3}, {"other", b, 0}} {
		if wm, err := s.Watermark(tc.peer, tc.stream); err != nil || wm != tc.want {
			t.Errorf("Watermark(%s, %v) = %d, %v; want %d", tc.peer, tc.stream, wm, err, tc.want)
		}
	}
	if err := s.SetWatermark(ctx, "", a, 1); err == nil {
		t.Error("SetWatermark with empty peer succeeded")
	}

	if id, err := s.Binding("c1"); err != nil || id != "" {
		t.Fatalf("unknown Binding = %q, %v", id, err)
	}
	if err := s.Bind(ctx, "c1", "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(ctx, "c1", "bob"); err != nil {
		t.Fatal(err)
	}
	if id, err := s.Binding("c1"); err != nil || id != "bob" {
		t.Fatalf("Binding = %q, %v; want bob", id, err)
	}
	if err := s.Bind(ctx, "", "x"); err == nil {
		t.Error("Bind with empty peer succeeded")
	}
}

func testCallerBuffers(t *testing.T, open func(*testing.T, *queue.Options) queue.Store) {
	s := open(t, nil)
	payload := []byte("original")
	headers := []protocol.Header{{Key: "k", Value: "v"}}
	mustAppend(t, s, queue.Entry{Payload: payload, Headers: headers})
	copy(payload, "XXXXXXXX")
	headers[0].Value = "changed"
	got := mustRead(t, s, 1, 1, 0)
	if string(got[0].Payload) != "original" || got[0].Headers[0].Value != "v" {
		t.Fatalf("store kept the caller's buffers: %+v", got[0])
	}
	got[0].Payload[0] = 'Z'
	if again := mustRead(t, s, 1, 1, 0); string(again[0].Payload) != "original" {
		t.Fatalf("Read returned the store's own buffer")
	}
}

// testAppendBatch: a batch gets consecutive sequences in slice order,
// interleaves correctly with single appends, counts against the message
// limit as a whole, and an empty batch is an error.
func testAppendBatch(t *testing.T, open func(*testing.T, *queue.Options) queue.Store) {
	s := open(t, &queue.Options{MaxMessages: 5, FailWhenFull: true})
	ctx := context.Background()
	if _, err := s.Append(ctx, queue.Entry{Payload: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	first, err := s.AppendBatch(ctx, []queue.Entry{{Payload: []byte("b")}, {Payload: []byte("c")}, {Payload: []byte("d")}})
	if err != nil || first != 2 {
		t.Fatalf("AppendBatch = %d, %v; want 2, nil", first, err)
	}
	if _, err := s.AppendBatch(ctx, []queue.Entry{{Payload: []byte("e")}, {Payload: []byte("f")}}); !errors.Is(err, queue.ErrFull) {
		t.Fatalf("batch over the limit: %v, want ErrFull", err)
	}
	if _, err := s.AppendBatch(ctx, nil); err == nil {
		t.Fatal("empty batch accepted")
	}
	got, err := s.Read(1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var text string
	for i, e := range got {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i, e.Seq)
		}
		text += string(e.Payload)
	}
	if text != "abcd" {
		t.Fatalf("read %q, want abcd", text)
	}
	if st := s.Stats(); st.Messages != 4 || st.LastSeq != 4 {
		t.Fatalf("stats %+v", st)
	}
}
