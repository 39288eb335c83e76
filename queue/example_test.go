package queue_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/wsreliable/wsreliable/queue"
)

// ExampleOpen queues messages durably, reads them back for sending and
// deletes them once the peer has acknowledged them.
func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "queue-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	q, err := queue.Open(filepath.Join(dir, "client.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()

	// One commit (one fsync) for the whole batch.
	first, err := q.AppendBatch(ctx, []queue.Entry{{Payload: []byte("a")}, {Payload: []byte("b")}, {Payload: []byte("c")}})
	if err != nil {
		log.Fatal(err)
	}
	entries, err := q.Read(first, 10, 0)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range entries {
		fmt.Printf("seq %d: %s\n", e.Seq, e.Payload)
	}
	// The peer acknowledged everything up to 2.
	if err := q.Ack(ctx, 2); err != nil {
		log.Fatal(err)
	}
	st := q.Stats()
	fmt.Printf("queued %d, first %d, last %d\n", st.Messages, st.FirstSeq, st.LastSeq)
	// Output:
	// seq 1: a
	// seq 2: b
	// seq 3: c
	// queued 1, first 3, last 3
}

// ExampleBolt_Push queues one message for three clients in one commit: a
// server's push outboxes, one stream per client, kept on disk (offline
// clients cost no memory).
func ExampleBolt_Push() {
	dir, _ := os.MkdirTemp("", "queue-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	q, err := queue.Open(filepath.Join(dir, "server.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()

	var pushes []queue.Push
	for _, client := range []string{"phone-1", "phone-2", "phone-3"} {
		pushes = append(pushes, queue.Push{Client: client, Entry: queue.Entry{Payload: []byte("sale ends tonight")}})
	}
	seqs, _, err := q.Push(ctx, pushes)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("sequences:", seqs)
	info, err := q.OutboxInfo("phone-2")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("phone-2 holds %d message(s), seq %d..%d\n", info.Messages, info.FirstSeq, info.LastSeq)
	// Output:
	// sequences: [1 1 1]
	// phone-2 holds 1 message(s), seq 1..1
}
