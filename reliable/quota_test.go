package reliable_test

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/reliable"
)

// TestStoreQuota is the disk row ("one client sending 1 MB messages: the
// disk fills in minutes"): pushes fill the store to MaxStoreBytes, then
// further pushes fail with ErrStoreFull and a new client's hello is
// closed with 1013 and a retry hint, all counted; the server stays up,
// the client whose pushes wait still connects and drains them, and then
// pushes and new clients are accepted again.
func TestStoreQuota(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	const quota = 512 << 10
	var s sink
	srv, url := startServer(t, s.handle, &reliable.ServerOptions{MaxStoreBytes: quota, NoSync: true})

	payload := bytes.Repeat([]byte("p"), 16<<10)
	var pushed int
	for ; pushed < 200; pushed++ {
		_, err := srv.Send(ctx, "hoarder", payload)
		if errors.Is(err, reliable.ErrStoreFull) {
			break
		}
		if err != nil {
			t.Fatalf("push %d: %v", pushed, err)
		}
	}
	st := srv.Stats()
	if pushed == 200 || st.StoreFull != 1 || st.StoreBytes < quota {
		t.Fatalf("after %d pushes of %d bytes: StoreFull %d, StoreBytes %d, quota %d", pushed, len(payload), st.StoreFull, st.StoreBytes, quota)
	}
	if st.StoreBytes > quota+4*int64(len(payload))+64<<10 {
		t.Errorf("the store holds %d bytes of live data, quota %d: the quota did not stop it", st.StoreBytes, quota)
	}
	t.Logf("%d pushes of %d bytes, then the store was at %d bytes (quota %d)", pushed, len(payload), st.StoreBytes, quota)
	if _, err := srv.SendMany(ctx, []string{"a", "b"}, reliable.OutgoingMessage{Payload: []byte("x")}); !errors.Is(err, reliable.ErrStoreFull) {
		t.Fatalf("SendMany over the quota: %v, want ErrStoreFull", err)
	}

	// A client with nothing waiting would only add state: 1013.
	ws, _, err := dialRaw(t, url, []string{protocol.Subprotocol}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sendFrames(t, ws, &protocol.Hello{ClientID: "newcomer", Stream: newStream()})
	if ce := expectClose(t, ws, protocol.CloseTryAgainLater); ce.Text != "retry-after=5s" {
		t.Errorf("close reason %q, want a retry hint", ce.Text)
	}
	testkit.Eventually(t, ioTimeout, func() bool {
		st := srv.Stats()
		return st.StoreFull == 3 && st.Refused["store quota"] == 1
	}, "StoreFull %d, Refused %v: want 3 refusals, 1 of them a hello", srv.Stats().StoreFull, srv.Stats().Refused)

	// The hoarder still connects and drains its pushes.
	var got atomic.Int64
	newClient(t, url, &reliable.ClientOptions{
		ClientID: "hoarder",
		Handler: func(context.Context, *reliable.Message) error {
			got.Add(1)
			return nil
		},
	})
	testkit.Eventually(t, testTimeout, func() bool { return got.Load() == int64(pushed) },
		"the hoarder received %d of %d pushes", got.Load(), pushed)
	testkit.Eventually(t, testTimeout, func() bool { return srv.Stats().StoreBytes < quota },
		"the store never drained below its quota: %d bytes", srv.Stats().StoreBytes)

	// Accepted again.
	r, err := srv.Send(ctx, "hoarder", []byte("after"))
	if err != nil {
		t.Fatalf("push after draining: %v", err)
	}
	if err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	ws2, _ := handshake(t, url, "newcomer", newStream())
	closeRawConn(ws2)
	t.Logf("drained to %d bytes; accepted again", srv.Stats().StoreBytes)
}
