package reliable_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/reliable"
)

// countingObserver adds up what an Observer is told.
type countingObserver struct {
	mu        sync.Mutex
	handled   int
	failed    int
	committed int
	commits   int
}

func (o *countingObserver) ObserveHandler(_ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.handled++
	if err != nil {
		o.failed++
	}
}

func (o *countingObserver) ObserveCommit(_ time.Duration, messages int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.commits++
	o.committed += messages
}

// TestStatsCountWhatHappened: the server's counters agree exactly with
// what was sent and received, both ways.
func TestStatsCountWhatHappened(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	var obs countingObserver
	srv, url := startServer(t, func(_ context.Context, m *reliable.Message) error {
		if string(m.Payload) == "13" {
			return fmt.Errorf("unlucky: %w", reliable.ErrRejected)
		}
		return nil
	}, &reliable.ServerOptions{Observer: &obs})
	in := newInboxSink()
	c := newClient(t, url, &reliable.ClientOptions{ClientID: "counted", Handler: in.handle})
	const up, down = 100, 50
	var last *reliable.Receipt
	for i := range up {
		r, err := c.Send(ctx, []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		last = r
	}
	if err := last.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	rs, _ := pushNumbered(t, ctx, srv, "counted", 0, down)
	for _, r := range rs {
		if err := r.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st := srv.Stats()
	if st.Received != up-1 || st.Rejected != 1 || st.Duplicates != 0 || st.Expired != 0 {
		t.Errorf("client→server: received %d, rejected %d, duplicates %d, expired %d; want %d, 1, 0, 0", st.Received, st.Rejected, st.Duplicates, st.Expired, up-1)
	}
	if wantBytes := uint64(190); st.ReceivedBytes != wantBytes-2 { // "0".."99" is 190 bytes, less the rejected "13"
		t.Errorf("ReceivedBytes = %d, want %d", st.ReceivedBytes, wantBytes-2)
	}
	if st.Pushed != down || st.PushAcked != down || st.PushRejected != 0 || st.PushedBytes != 90 {
		t.Errorf("pushes: %d pushed (%d bytes), %d acked, %d rejected; want %d (90 bytes), %d, 0", st.Pushed, st.PushedBytes, st.PushAcked, st.PushRejected, down, down)
	}
	if st.Connects != 1 || st.Sessions != 1 {
		t.Errorf("connects %d, sessions %d; want 1, 1", st.Connects, st.Sessions)
	}
	obs.mu.Lock()
	if obs.handled != up || obs.failed != 1 || obs.committed != up {
		t.Errorf("observer: %d handler calls (%d failed), %d messages committed in %d commits; want %d (1), %d", obs.handled, obs.failed, obs.committed, obs.commits, up, up)
	}
	obs.mu.Unlock()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return srv.Stats().Disconnects[protocol.CloseNormal] == 1 },
		"disconnects %v, want one normal close", srv.Stats().Disconnects)
}
