package postgres_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/store/postgres/pgtest"
)

// TestNotifyAcrossStores: a push committed by store A wakes the Notify
// function of store B, with the client's ID (any bytes); after B's
// listening connection is killed, B reconnects and hints arrive again.
func TestNotifyAcrossStores(t *testing.T) {
	c := pgtest.Start(t)
	dsn := c.NewSchema(t)
	a, b := openStore(t, dsn, nil), openStore(t, dsn, nil)
	hints := make(chan string, 1024)
	b.Notify(func(client string) {
		select {
		case hints <- client:
		default:
		}
	})
	ctx := testCtx(t)
	client := "dev\x00\xff-1"
	// await pushes to client from a until b reports it: LISTEN takes
	// effect shortly after Notify returns, and after a reconnect.
	lostSaid := false // a "" hint: hints may have been lost
	await := func(what string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			if _, _, err := a.Push(ctx, []queue.Push{{Client: client, Entry: queue.Entry{Payload: []byte("x")}}}); err != nil {
				t.Fatalf("Push: %v", err)
			}
			select {
			case got := <-hints:
				if got == "" {
					lostSaid = true
					continue
				}
				if got != client {
					t.Fatalf("hint for %q, want %q", got, client)
				}
				return
			case <-time.After(200 * time.Millisecond):
			case <-deadline:
				t.Fatalf("%s: no hint within 30 s", what)
			}
		}
	}
	await("first push")
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var killed int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'`).Scan(&killed); err != nil || killed == 0 {
		t.Fatalf("terminating the listener: %d, %v", killed, err)
	}
	for len(hints) > 0 {
		<-hints
	}
	if lostSaid {
		t.Fatal(`a "" hint (hints lost) before the listener lost anything`)
	}
	await("after the listener's connection was killed")
	if !lostSaid {
		t.Fatal(`no "" hint after the listener reconnected: the server would not know to look at its clients`)
	}
}
