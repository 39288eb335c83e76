package queue_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCtx returns a context that ends with the test or after 30 s, so no
// test waits forever.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openBolt opens a store at path and, at cleanup, closes it and runs
// queue.Check on the file.
func openBolt(t testing.TB, path string, opts *queue.Options) *queue.Bolt {
	t.Helper()
	b, err := queue.Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil && !errors.Is(err, queue.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
		if err := queue.Check(path); err != nil {
			t.Errorf("Check after test: %v", err)
		}
	})
	return b
}

func tempPath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "queue.db")
}

// entry builds a test entry whose payload and headers encode n.
func entry(n int) queue.Entry {
	var id protocol.MessageID
	copy(id[:], fmt.Sprintf("id-%012d", n))
	e := queue.Entry{ID: id, Payload: fmt.Appendf(nil, "payload %d", n)}
	if n%2 == 0 {
		e.Headers = []protocol.Header{{Key: "n", Value: fmt.Sprint(n)}, {Key: "empty", Value: ""}}
	}
	return e
}

// withID returns e with an ID of its own for key: its first 8 bytes
// replaced by a hash of key.
func withID(e queue.Entry, key string) queue.Entry {
	h := fnv.New64a()
	h.Write([]byte(key))
	binary.BigEndian.PutUint64(e.ID[:8], h.Sum64())
	return e
}

func sameEntry(a, b queue.Entry) bool {
	if a.Seq != b.Seq || a.ID != b.ID || !bytes.Equal(a.Payload, b.Payload) || len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i] != b.Headers[i] {
			return false
		}
	}
	return true
}

func mustAppend(t testing.TB, s queue.Store, e queue.Entry) uint64 {
	t.Helper()
	seq, err := s.Append(testCtx(t), e)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return seq
}

func mustRead(t testing.TB, s queue.Store, from uint64, max, maxBytes int) []queue.Entry {
	t.Helper()
	es, err := s.Read(from, max, maxBytes)
	if err != nil {
		t.Fatalf("Read(%d, %d, %d): %v", from, max, maxBytes, err)
	}
	return es
}

func seqs(es []queue.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func entryWithPayload(n int) queue.Entry {
	return queue.Entry{Payload: make([]byte, n)}
}

// keepReading runs read in a loop on another goroutine until the
// returned stop is called, or until read fails; stop waits for it and
// returns the reads that succeeded and the first error.
func keepReading(read func() error) (stop func() (int, error)) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var n int
	var err error
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			if err = read(); err != nil {
				return
			}
			n++
		}
	})
	return func() (int, error) {
		close(done)
		wg.Wait()
		return n, err
	}
}
