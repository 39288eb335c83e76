package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/reliable"
	"github.com/wsreliable/wsreliable/store/postgres/pgtest"
)

// TestStoreQuota is issue 9's disk row on the PostgreSQL store: pushes
// fill it to ServerOptions.MaxStoreBytes (counted by Store.Stats), then
// fail with ErrStoreFull; the client they wait for drains them, and
// pushes are accepted again.
func TestStoreQuota(t *testing.T) {
	ctx := testCtx(t)
	c := pgtest.Start(t)
	st := openStore(t, c.NewSchema(t), nil)
	const quota = 256 << 10
	srv, url := startServer(t, &reliable.ServerOptions{Store: st, MaxStoreBytes: quota})

	payload := bytes.Repeat([]byte("p"), 16<<10)
	pushed := 0
	// Stats reads the database once a second: the refusal may come up
	// to a second of pushes late. The loop is bounded in count and time.
	deadline := time.Now().Add(30 * time.Second)
	for ; pushed < 2000 && time.Now().Before(deadline); pushed++ {
		_, err := srv.Send(ctx, "hoarder", payload)
		if errors.Is(err, reliable.ErrStoreFull) {
			break
		}
		if err != nil {
			t.Fatalf("push %d: %v", pushed, err)
		}
	}
	stats := srv.Stats()
	if stats.StoreFull == 0 || stats.StoreBytes < quota {
		t.Fatalf("after %d pushes of %d bytes: StoreFull %d, StoreBytes %d, quota %d", pushed, len(payload), stats.StoreFull, stats.StoreBytes, quota)
	}
	// This node's pushes count at once: the refusal comes within a push.
	if limit := int64(quota + 2*len(payload) + 4<<10); stats.StoreBytes > limit {
		t.Errorf("the store holds %d bytes by its measure, quota %d: the quota did not stop it", stats.StoreBytes, quota)
	}
	t.Logf("%d pushes of %d bytes, then ErrStoreFull at %d bytes (quota %d)", pushed, len(payload), stats.StoreBytes, quota)

	var got atomic.Int64
	cl, err := reliable.NewClient(url, filepath.Join(t.TempDir(), "hoarder.db"), &reliable.ClientOptions{
		ClientID: "hoarder",
		Handler: func(context.Context, *reliable.Message) error {
			got.Add(1)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	testkit.Eventually(t, 60*time.Second, func() bool { return got.Load() == int64(pushed) },
		"the hoarder received %d of %d pushes", got.Load(), pushed)
	testkit.Eventually(t, 60*time.Second, func() bool { return srv.Stats().StoreBytes < quota },
		"the store never drained below its quota: %d bytes", srv.Stats().StoreBytes)
	if _, err := srv.Send(ctx, "hoarder", []byte("after")); err != nil {
		t.Fatalf("push after draining: %v", err)
	}
}
