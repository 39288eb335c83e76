package postgres_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/store/postgres"
	"github.com/wsreliable/wsreliable/store/postgres/pgtest"
)

// TestMigrateConcurrently: nodes starting together on an empty database
// all open (the advisory lock serializes the migration); a schema from
// a newer release is refused with ErrVersion.
func TestMigrateConcurrently(t *testing.T) {
	c := pgtest.Start(t)
	dsn := c.NewSchema(t)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			s, err := postgres.Open(testCtx(t), dsn, nil)
			if err != nil {
				t.Errorf("concurrent Open: %v", err)
				return
			}
			_ = s.Close()
		})
	}
	wg.Wait()
	conn, err := pgx.Connect(testCtx(t), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(testCtx(t))
	var n, v int
	if err := conn.QueryRow(testCtx(t), `SELECT count(*), max(version) FROM wsr_schema`).Scan(&n, &v); err != nil || n != 1 || v != 1 {
		t.Fatalf("wsr_schema holds %d rows, version %d, %v; want one row, version 1", n, v, err)
	}
	if _, err := conn.Exec(testCtx(t), `UPDATE wsr_schema SET version = 99`); err != nil {
		t.Fatal(err)
	}
	if s, err := postgres.Open(testCtx(t), dsn, nil); !errors.Is(err, queue.ErrVersion) {
		if s != nil {
			_ = s.Close()
		}
		t.Fatalf("Open of a newer schema = %v, want ErrVersion", err)
	}
}

// TestFencing: two stores claim the same peer 200 times, concurrently.
// In every round the store whose claim came last writes and the other is
// fenced out of every write (SetWatermark, Bind, Touch, AckOutbox) with
// ErrFenced, changing nothing: the loser writes a higher watermark, its
// own binding and an ack of the whole outbox, and none of it shows.
func TestFencing(t *testing.T) {
	c := pgtest.Start(t)
	dsn := c.NewSchema(t)
	stores := []*postgres.Store{openStore(t, dsn, nil), openStore(t, dsn, nil)}
	ctx := testCtx(t)
	const peer, rounds = "device-1", 200
	stream := protocol.StreamID{7}
	for _, s := range stores {
		if err := s.SetWatermark(ctx, peer, stream, 1); !errors.Is(err, queue.ErrFenced) {
			t.Fatalf("write before any Claim = %v, want ErrFenced", err)
		}
	}
	if _, _, err := stores[0].Push(ctx, []queue.Push{{Client: peer, Entry: queue.Entry{Payload: []byte("x")}}}); err != nil {
		t.Fatalf("Push (not fenced): %v", err)
	}
	wins := [2]int{}
	var last uint64
	for round := range rounds {
		var wg sync.WaitGroup
		errs := [2]error{}
		for i, s := range stores {
			wg.Go(func() { errs[i] = s.Claim(ctx, peer) })
		}
		wg.Wait()
		if err := errors.Join(errs[:]...); err != nil {
			t.Fatalf("round %d: Claim: %v", round, err)
		}
		// Each writes; exactly one is the owner.
		base := uint64(round+1) * 1000
		var wrote [2]error
		for i, s := range stores {
			seq := base + 1
			if i == 1 {
				seq = base + 2
			}
			wrote[i] = s.SetWatermark(ctx, peer, stream, seq)
		}
		winner := -1
		switch {
		case wrote[0] == nil && errors.Is(wrote[1], queue.ErrFenced):
			winner = 0
		case wrote[1] == nil && errors.Is(wrote[0], queue.ErrFenced):
			winner = 1
		default:
			t.Fatalf("round %d: SetWatermark = %v, %v; want exactly one nil, the other ErrFenced", round, wrote[0], wrote[1])
		}
		wins[winner]++
		loser := stores[1-winner]
		want := base + 1 + uint64(winner)
		if err := loser.SetWatermark(ctx, peer, stream, base+999); !errors.Is(err, queue.ErrFenced) {
			t.Fatalf("round %d: loser's SetWatermark = %v, want ErrFenced", round, err)
		}
		if err := loser.Bind(ctx, peer, "loser"); !errors.Is(err, queue.ErrFenced) {
			t.Fatalf("round %d: loser's Bind = %v, want ErrFenced", round, err)
		}
		if err := loser.Touch(ctx, peer); !errors.Is(err, queue.ErrFenced) {
			t.Fatalf("round %d: loser's Touch = %v, want ErrFenced", round, err)
		}
		if err := loser.AckOutbox(ctx, peer, 1, nil); !errors.Is(err, queue.ErrFenced) {
			t.Fatalf("round %d: loser's AckOutbox = %v, want ErrFenced", round, err)
		}
		if err := stores[winner].Bind(ctx, peer, fmt.Sprint("winner-", round)); err != nil {
			t.Fatalf("round %d: winner's Bind: %v", round, err)
		}
		for _, s := range stores {
			wm, err := s.Watermark(peer, stream)
			if err != nil || wm != want || wm < last {
				t.Fatalf("round %d: Watermark = %d, %v; want %d (the winner's), never below %d", round, wm, err, want, last)
			}
			if id, err := s.Binding(peer); err != nil || id != fmt.Sprint("winner-", round) {
				t.Fatalf("round %d: Binding = %q, %v; want the winner's", round, id, err)
			}
		}
		last = want
	}
	if info, err := stores[0].OutboxInfo(peer); err != nil || info.Messages != 1 {
		t.Fatalf("the fenced acks changed the outbox: %+v, %v", info, err)
	}
	t.Logf("%d contended rounds: store A won %d, store B %d; every loser write fenced", rounds, wins[0], wins[1])
	// Release: writes are fenced until the next Claim.
	for _, s := range stores {
		s.Release(peer)
		if err := s.Touch(ctx, peer); !errors.Is(err, queue.ErrFenced) {
			t.Fatalf("Touch after Release = %v, want ErrFenced", err)
		}
	}
}

// TestFencedWritesInOneBatch: a fenced write fails alone; the writes
// committed in the same group-commit transaction succeed.
func TestFencedWritesInOneBatch(t *testing.T) {
	c := pgtest.Start(t)
	dsn := c.NewSchema(t)
	a, b := openStore(t, dsn, nil), openStore(t, dsn, nil)
	ctx := testCtx(t)
	const n = 64
	for i := range n {
		if err := a.Claim(ctx, fmt.Sprint("p", i)); err != nil {
			t.Fatal(err)
		}
	}
	// b takes over the odd peers.
	for i := 1; i < n; i += 2 {
		if err := b.Claim(ctx, fmt.Sprint("p", i)); err != nil {
			t.Fatal(err)
		}
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = a.SetWatermark(ctx, fmt.Sprint("p", i), protocol.StreamID{1}, 5) })
	}
	wg.Wait()
	for i, err := range errs {
		wm, rerr := a.Watermark(fmt.Sprint("p", i), protocol.StreamID{1})
		if rerr != nil {
			t.Fatal(rerr)
		}
		if i%2 == 0 && (err != nil || wm != 5) {
			t.Errorf("owned peer %d: SetWatermark = %v, watermark %d; want nil, 5", i, err, wm)
		}
		if i%2 == 1 && (!errors.Is(err, queue.ErrFenced) || wm != 0) {
			t.Errorf("peer %d taken over: SetWatermark = %v, watermark %d; want ErrFenced, 0", i, err, wm)
		}
	}
}

// TestPushFullFailsAlone: concurrent pushes are group committed, yet each
// call is all or none on its own: pushes over a full outbox fail with
// ErrFull while those sharing their transactions commit.
func TestPushFullFailsAlone(t *testing.T) {
	c := pgtest.Start(t)
	s := openStore(t, c.NewSchema(t), &postgres.Options{Queue: queue.Options{OutboxMaxMessages: 5}})
	ctx := testCtx(t)
	const n = 40
	errs := make([]error, n)
	seqs := make([][]uint64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			msgs := []queue.Push{{Client: "full", Entry: queue.Entry{ID: messageID(1, uint64(i))}}}
			if i%2 == 1 {
				msgs = []queue.Push{{Client: fmt.Sprint("free-", i), Entry: queue.Entry{ID: messageID(2, uint64(i))}}}
			}
			seqs[i], _, errs[i] = s.Push(ctx, msgs)
		})
	}
	wg.Wait()
	var full []uint64
	refused := 0
	for i, err := range errs {
		switch {
		case i%2 == 1 && (err != nil || len(seqs[i]) != 1 || seqs[i][0] != 1):
			t.Errorf("push to a free outbox = %v, %v; want [1]", seqs[i], err)
		case i%2 == 0 && errors.Is(err, queue.ErrFull):
			refused++
		case i%2 == 0 && err == nil:
			full = append(full, seqs[i][0])
		case i%2 == 0:
			t.Errorf("push to the full outbox: %v", err)
		}
	}
	slices.Sort(full)
	if !slices.Equal(full, []uint64{1, 2, 3, 4, 5}) || refused != n/2-5 {
		t.Fatalf("full outbox: sequences %v, %d refused; want 1..5 and %d refused", full, refused, n/2-5)
	}
	if info, err := s.OutboxInfo("full"); err != nil || info.Messages != 5 || info.LastSeq != 5 {
		t.Fatalf("OutboxInfo = %+v, %v", info, err)
	}
	for i := 0; i < n; i += 2 {
		st, found, err := s.Status(messageID(1, uint64(i)))
		if err != nil || found != (errs[i] == nil) || (found && !st.Pending) {
			t.Errorf("Status of push %d (err %v) = %+v, %v, %v", i, errs[i], st, found, err)
		}
	}
}

// TestIdleExpiryDropsClaims: an idle peer's owner row expires with its
// state (120,000 one-message client IDs must not stay as rows); a claim
// still held on it is fenced, and a new Claim works.
func TestIdleExpiryDropsClaims(t *testing.T) {
	c := pgtest.Start(t)
	dsn := c.NewSchema(t)
	var now atomic.Int64
	now.Store(time.Now().UnixMilli())
	s := openStore(t, dsn, &postgres.Options{
		Queue: queue.Options{IdleExpiry: time.Hour},
		Now:   func() time.Time { return time.UnixMilli(now.Load()) },
	})
	ctx := testCtx(t)
	for _, p := range []string{"idle", "busy"} {
		if err := s.Claim(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := s.SetWatermark(ctx, p, protocol.StreamID{1}, 3); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	owners := func(p string) int {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM wsr_owners WHERE peer = $1`, []byte(p)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if owners("idle") != 1 {
		t.Fatal("no owner row after Claim")
	}
	now.Add((2 * time.Hour).Milliseconds())
	// A write lets the writer find what came due.
	if err := s.Touch(ctx, "busy"); err != nil {
		t.Fatal(err)
	}
	if n := owners("idle"); n != 0 {
		t.Fatalf("%d owner rows for a peer idle past IdleExpiry, want 0", n)
	}
	if n := owners("busy"); n != 1 {
		t.Fatalf("%d owner rows for a peer in use, want 1", n)
	}
	if err := s.SetWatermark(ctx, "idle", protocol.StreamID{1}, 4); !errors.Is(err, queue.ErrFenced) {
		t.Fatalf("write under an expired claim: %v, want ErrFenced", err)
	}
	if err := s.Claim(ctx, "idle"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWatermark(ctx, "idle", protocol.StreamID{1}, 4); err != nil {
		t.Fatalf("write under a new claim: %v", err)
	}
}
