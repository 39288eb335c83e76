package queue_test

import (
	"testing"

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

// push is entry n for client, with an ID of that client's: pushes are
// idempotent by ID.
func push(client string, n int) queue.Push {
	return queue.Push{Client: client, Entry: withID(entry(n), client)}
}
