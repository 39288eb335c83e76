package postgres_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/store/postgres"
	"github.com/wsreliable/wsreliable/store/postgres/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testCtx is a context that ends with the test, or after a minute.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// openStore opens a store on dsn, closed at cleanup.
func openStore(t testing.TB, dsn string, opts *postgres.Options) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(testCtx(t), dsn, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestSmoke(t *testing.T) {
	start := time.Now()
	c := pgtest.Start(t)
	t.Logf("primary up in %v", time.Since(start))
	s := openStore(t, c.DSN(), nil)
	ctx := testCtx(t)
	if err := s.SetWatermark(ctx, "p", [16]byte{1}, 5); err == nil {
		t.Fatal("unclaimed write succeeded")
	}
	if err := s.Claim(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWatermark(ctx, "p", [16]byte{1}, 5); err != nil {
		t.Fatal(err)
	}
	seqs, _, err := s.Push(ctx, []queue.Push{{Client: "p", Entry: queue.Entry{Payload: []byte("x")}}})
	t.Log(seqs, err)
	start = time.Now()
	c.StartStandby()
	t.Logf("standby up in %v", time.Since(start))
}
