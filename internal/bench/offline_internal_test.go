package bench

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// TestCheckOutboxes: the store check of the fanout and offline scenarios
// accepts outboxes holding exactly their pushes and names each way they
// can differ.
func TestCheckOutboxes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.db")
	st, err := queue.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, p := clientNames("x-", 3), payload(16)
	for round := range 2 {
		pushes := make([]queue.Push, len(ids))
		for i, id := range ids {
			pushes[i] = queue.Push{Client: id, Entry: queue.Entry{ID: protocol.MessageID{byte(round), byte(i)}, Payload: p}}
		}
		if _, _, err := st.Push(context.Background(), pushes); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		ids        []string
		last, held int
		p          []byte
		want       string // error substring; empty: success
	}{
		{"all there", ids, 2, 2, p, ""},
		{"fewer held than found", ids, 2, 1, p, "holding 2, want 2 holding 1"},
		{"more assigned than found", ids, 3, 3, p, "last sequence 2 holding 2, want 3 holding 3"},
		{"another payload", ids, 2, 2, payload(17), "16-byte payload"},
		{"a client never pushed to", clientNames("y-", 1), 2, 2, p, "last sequence 0 holding 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := checkOutboxes(path, tc.ids, tc.last, tc.held, tc.p)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want == "" && n != len(ids)*tc.held:
				t.Fatalf("checked %d entries, want %d", n, len(ids)*tc.held)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
