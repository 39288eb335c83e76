package queue_test

import (
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/queue/queuetest"
)

// TestServerStore runs the exported conformance suite (which other
// backends run too) against Bolt and Memory.
func TestServerStore(t *testing.T) {
	setClock := func(s queue.ServerStore, now func() time.Time) {
		switch s := s.(type) {
		case *queue.Bolt:
			queue.SetClock(s, now)
		case *queue.Memory:
			queue.SetMemoryClock(s, now)
		}
	}
	for _, s := range outboxStores {
		t.Run(s.name, func(t *testing.T) {
			queuetest.TestServerStore(t, queuetest.Harness{
				Open:     func(t *testing.T, opts *queue.Options) queue.ServerStore { return s.open(t, opts) },
				SetClock: setClock,
			})
		})
	}
}
