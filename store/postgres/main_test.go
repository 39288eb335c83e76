package postgres_test

import (
	"context"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/store/postgres"
)

func TestMain(m *testing.M) {
	if os.Getenv(nodeEnv) != "" { // a gateway node of TestGatewayFleet
		os.Exit(runNode())
	}
	goleak.VerifyTestMain(m)
}

// testCtx is a context that ends with the test, or after two minutes.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
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
