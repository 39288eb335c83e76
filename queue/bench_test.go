package queue_test

import (
	"context"
	"os"
	"testing"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// BenchmarkAppend measures Append from many goroutines (8 per CPU), which
// share commits through the group commit. Run it with
//
//	go test -run '^$' -bench Append -benchtime 3s ./queue/
func BenchmarkAppend(b *testing.B) {
	for _, bc := range []struct {
		name   string
		noSync bool
	}{{"sync", false}, {"nosync", true}} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := queue.Open(tempPath(b), &queue.Options{
				NoSync: bc.noSync, MaxMessages: -1, MaxBytes: -1, CompactSize: -1,
			})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			e := queue.Entry{Payload: make([]byte, 256)}
			ctx := context.Background()
			b.SetBytes(int64(len(e.Payload)))
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Append(ctx, e); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/float64(queue.Commits(s)), "appends/commit")
		})
	}
}

// BenchmarkCommitFloor measures what one durable commit costs on this
// disk: a lone Append (one bbolt transaction: data pages, fdatasync, meta
// page, fdatasync), a lone SetWatermark (the server's commit before an
// ack), and, as the floor any single-file log would pay, one small write
// into a preallocated file followed by one fdatasync. Run it with
//
//	go test -run '^$' -bench CommitFloor ./queue/
func BenchmarkCommitFloor(b *testing.B) {
	ctx := context.Background()
	b.Run("bolt-append", func(b *testing.B) {
		s := openBenchStore(b)
		e := queue.Entry{Payload: make([]byte, 256)}
		for b.Loop() {
			if _, err := s.Append(ctx, e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bolt-watermark", func(b *testing.B) {
		s := openBenchStore(b)
		seq := uint64(0)
		for b.Loop() {
			seq++
			if err := s.SetWatermark(ctx, "peer", protocol.StreamID{1}, seq); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pwrite-fdatasync", func(b *testing.B) {
		f, err := os.OpenFile(tempPath(b), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		const size = 64 << 20
		if err := f.Truncate(size); err != nil {
			b.Fatal(err)
		}
		// Write the file once so that later writes allocate nothing and
		// fdatasync has no metadata to flush.
		zero := make([]byte, 1<<20)
		for off := int64(0); off < size; off += int64(len(zero)) {
			if _, err := f.WriteAt(zero, off); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		rec := make([]byte, 300)
		off := int64(0)
		for b.Loop() {
			if _, err := f.WriteAt(rec, off); err != nil {
				b.Fatal(err)
			}
			if err := fdatasync(f); err != nil {
				b.Fatal(err)
			}
			off = (off + int64(len(rec))) % (size - int64(len(rec)))
		}
	})
}

func openBenchStore(b *testing.B) *queue.Bolt {
	b.Helper()
	s, err := queue.Open(tempPath(b), &queue.Options{MaxMessages: -1, MaxBytes: -1, CompactSize: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}
