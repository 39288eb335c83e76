package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
	"github.com/wsreliable/wsreliable/store/postgres"
	"github.com/wsreliable/wsreliable/store/postgres/pgtest"
)

// applied is the application table of the handler tests: one row per
// application of a message, no key, so a double application shows.
func createApplied(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(testCtx(t), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(testCtx(t), `CREATE TABLE applied (client text NOT NULL, seq bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return conn
}

func insertApplied(ctx context.Context, tx pgx.Tx, m *reliable.Message) error {
	_, err := tx.Exec(ctx, `INSERT INTO applied (client, seq) VALUES ($1, $2)`, m.ClientID, int64(m.Seq))
	return err
}

// countApplied returns how often each (client, seq) was applied.
func countApplied(t *testing.T, conn *pgx.Conn) map[string]int {
	t.Helper()
	rows, _ := conn.Query(testCtx(t), `SELECT client, seq, count(*) FROM applied GROUP BY client, seq`)
	out := map[string]int{}
	var (
		client string
		seq, n int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&client, &seq, &n}, func() error {
		out[fmt.Sprintf("%s/%d", client, seq)] = int(n)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func message(client string, seq uint64) *reliable.Message {
	return &reliable.Message{ClientID: client, Address: client, Stream: protocol.StreamID{9}, Seq: seq, Payload: []byte("p")}
}

// TestHandlerOnce: the same message handled twice is applied once (the
// second call finds the watermark advanced and returns nil, so it is
// acknowledged); a rejection advances the watermark without the
// handler's writes; a failure advances nothing; a fenced store applies
// nothing and its error is not a rejection.
func TestHandlerOnce(t *testing.T) {
	c := pgtest.Start(t)
	dsn := c.NewSchema(t)
	conn := createApplied(t, dsn)
	s := openStore(t, dsn, nil)
	ctx := testCtx(t)
	h := s.Handler(insertApplied)
	if err := s.Claim(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := h(ctx, message("c", 1)); err != nil {
			t.Fatalf("handler: %v", err)
		}
	}
	if got := countApplied(t, conn); got["c/1"] != 1 || len(got) != 1 {
		t.Fatalf("applied %v, want c/1 once", got)
	}
	if wm, err := s.Watermark("c", protocol.StreamID{9}); err != nil || wm != 1 {
		t.Fatalf("Watermark = %d, %v; want 1", wm, err)
	}

	reject := s.Handler(func(ctx context.Context, tx pgx.Tx, m *reliable.Message) error {
		if err := insertApplied(ctx, tx, m); err != nil {
			return err
		}
		return fmt.Errorf("bad message: %w", reliable.ErrRejected)
	})
	if err := reject(ctx, message("c", 2)); !errors.Is(err, reliable.ErrRejected) {
		t.Fatalf("rejecting handler = %v, want ErrRejected", err)
	}
	if wm, _ := s.Watermark("c", protocol.StreamID{9}); wm != 2 {
		t.Fatalf("Watermark after a rejection = %d, want 2 (a rejected message is passed)", wm)
	}
	if err := reject(ctx, message("c", 2)); err != nil {
		t.Fatalf("rejected message handled again = %v, want nil (a duplicate)", err)
	}

	fail := s.Handler(func(ctx context.Context, tx pgx.Tx, m *reliable.Message) error {
		if err := insertApplied(ctx, tx, m); err != nil {
			return err
		}
		return errors.New("try later")
	})
	if err := fail(ctx, message("c", 3)); err == nil || errors.Is(err, reliable.ErrRejected) {
		t.Fatalf("failing handler = %v, want its error", err)
	}
	if wm, _ := s.Watermark("c", protocol.StreamID{9}); wm != 2 {
		t.Fatalf("Watermark after a failure = %d, want 2", wm)
	}
	if err := h(ctx, message("c", 3)); err != nil {
		t.Fatal(err)
	}

	other := openStore(t, dsn, nil)
	if err := other.Claim(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	err := h(ctx, message("c", 4))
	if !errors.Is(err, queue.ErrFenced) || errors.Is(err, reliable.ErrRejected) {
		t.Fatalf("fenced handler = %v, want ErrFenced and no rejection", err)
	}
	if got := countApplied(t, conn); len(got) != 2 || got["c/1"] != 1 || got["c/3"] != 1 {
		t.Fatalf("applied %v, want c/1 and c/3 once each", got)
	}
}

// TestHandlerRace: for each of 4 clients, a session on each of two
// stores delivers the client's 100 messages in order, as reliable does,
// from the watermark on; a session fenced out takes the client back (a
// reconnect to its node: a Claim) and resumes from the watermark, up to
// 25 times, so the claim moves back and forth under load and both
// sessions often handle the same message at once. Every message is
// applied exactly once.
func TestHandlerRace(t *testing.T) {
	c := pgtest.Start(t)
	dsn := c.NewSchema(t)
	conn := createApplied(t, dsn)
	stores := []*postgres.Store{openStore(t, dsn, nil), openStore(t, dsn, nil)}
	ctx := testCtx(t)
	const n, takeovers = 100, 25
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		counts = map[string]int{}
	)
	for ci := range 4 {
		client := fmt.Sprint("c", ci)
		for _, s := range stores {
			h := s.Handler(insertApplied)
			wg.Go(func() {
				claims := 0
				for ctx.Err() == nil {
					wm, err := s.Watermark(client, protocol.StreamID{9})
					if err != nil {
						t.Errorf("Watermark: %v", err)
						return
					}
					if wm >= n {
						return
					}
					err = h(ctx, message(client, wm+1))
					mu.Lock()
					switch {
					case err == nil:
						counts["handled"]++
					case errors.Is(err, queue.ErrFenced):
						counts["fenced"]++
					default:
						t.Errorf("handler: %v", err)
					}
					mu.Unlock()
					if errors.Is(err, queue.ErrFenced) {
						if claims < takeovers {
							claims++
							if err := s.Claim(ctx, client); err != nil {
								t.Errorf("Claim: %v", err)
								return
							}
						} else {
							time.Sleep(time.Millisecond) // the owner finishes
						}
					}
				}
			})
		}
	}
	wg.Wait()
	got := countApplied(t, conn)
	for ci := range 4 {
		for seq := 1; seq <= n; seq++ {
			if k := got[fmt.Sprintf("c%d/%d", ci, seq)]; k != 1 {
				t.Errorf("c%d/%d applied %d times, want once", ci, seq, k)
			}
		}
	}
	t.Logf("%d handler calls applied or acknowledged a duplicate, %d were fenced; %d messages applied, each once",
		counts["handled"], counts["fenced"], len(got))
}

// TestHandlerConcurrentDuplicates: eight goroutines of one store handle
// the same message at once (a redelivery racing the original); the
// watermark's row lock serializes them and the message is applied once.
func TestHandlerConcurrentDuplicates(t *testing.T) {
	c := pgtest.Start(t)
	dsn := c.NewSchema(t)
	conn := createApplied(t, dsn)
	s := openStore(t, dsn, nil)
	ctx := testCtx(t)
	if err := s.Claim(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	h := s.Handler(insertApplied)
	const n = 20
	for seq := uint64(1); seq <= n; seq++ {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if err := h(ctx, message("c", seq)); err != nil {
					t.Errorf("handler: %v", err)
				}
			})
		}
		wg.Wait()
	}
	got := countApplied(t, conn)
	for seq := 1; seq <= n; seq++ {
		if k := got[fmt.Sprintf("c/%d", seq)]; k != 1 {
			t.Errorf("c/%d applied %d times, want once", seq, k)
		}
	}
}
