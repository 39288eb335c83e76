package postgres_test

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/store/postgres"
	"github.com/wsreliable/wsreliable/store/postgres/pgtest"
)

// benchStores runs fn against a PostgreSQL store (a local server, fsync
// and synchronous_commit on, no standby) and a bbolt store (fsync on) in
// the same run, so their figures compare.
func benchStores(b *testing.B, fn func(b *testing.B, s queue.ServerStore)) {
	b.Run("postgres", func(b *testing.B) {
		c := pgtest.Start(b)
		fn(b, openStore(b, c.NewSchema(b), &postgres.Options{MaxConns: 16}))
	})
	b.Run("bolt", func(b *testing.B) {
		s, err := queue.Open(filepath.Join(b.TempDir(), "q.db"), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		fn(b, s)
	})
}

// BenchmarkSetWatermark: 16 goroutines per CPU commit watermarks of
// their own peers; the group commit batches them.
func BenchmarkSetWatermark(b *testing.B) {
	benchStores(b, func(b *testing.B, s queue.ServerStore) {
		ctx := testCtx(b)
		var next atomic.Int64
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			peer := fmt.Sprint("peer-", next.Add(1))
			if o, ok := s.(queue.Owner); ok {
				if err := o.Claim(ctx, peer); err != nil {
					b.Error(err)
					return
				}
			}
			for seq := uint64(1); pb.Next(); seq++ {
				if err := s.SetWatermark(ctx, peer, protocol.StreamID{1}, seq); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkPush: 16 goroutines per CPU push one 256-byte message per
// call to their own clients; each call is its own commit.
func BenchmarkPush(b *testing.B) {
	benchStores(b, func(b *testing.B, s queue.ServerStore) {
		ctx := testCtx(b)
		var next atomic.Int64
		payload := make([]byte, 256)
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			g := next.Add(1)
			client := fmt.Sprint("client-", g)
			for n := uint64(1); pb.Next(); n++ {
				if _, _, err := s.Push(ctx, []queue.Push{{Client: client, Entry: queue.Entry{ID: messageID(uint64(g), n), Payload: payload}}}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkPushFanout: one call pushes a 256-byte message to 1,000
// clients (one commit); the figure is per call.
func BenchmarkPushFanout(b *testing.B) {
	benchStores(b, func(b *testing.B, s queue.ServerStore) {
		ctx := testCtx(b)
		msgs := make([]queue.Push, 1000)
		for i := range msgs {
			msgs[i] = queue.Push{Client: fmt.Sprint("client-", i), Entry: queue.Entry{Payload: make([]byte, 256)}}
		}
		b.ResetTimer()
		for n := uint64(1); b.Loop(); n++ {
			for i := range msgs {
				msgs[i].Entry.ID = messageID(n, uint64(i))
			}
			if _, _, err := s.Push(ctx, msgs); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// messageID is a distinct message ID for (a, b), as senders keep them
// (a shared ID would make every push of a run update one settlement
// record, serializing the pushes).
func messageID(a, b uint64) protocol.MessageID {
	var id protocol.MessageID
	binary.BigEndian.PutUint64(id[:], a)
	binary.BigEndian.PutUint64(id[8:], b)
	return id
}
