package postgres_test

import (
	"context"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/reliable"
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

// startServer starts a reliable.Server with opts (its Store set) and a
// handler that takes every message, serving on 127.0.0.1; it returns
// the server and its ws:// URL. Both close at the test's end.
func startServer(t *testing.T, opts *reliable.ServerOptions) (*reliable.Server, string) {
	t.Helper()
	srv, err := reliable.NewServer("", func(context.Context, *reliable.Message) error { return nil }, opts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		_ = srv.Close()
	})
	return srv, "ws" + strings.TrimPrefix(hs.URL, "http")
}
