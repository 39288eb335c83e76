package queue_test

import (
	"context"
	"testing"

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
