package postgres_test

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/uuid"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
	"github.com/wsreliable/wsreliable/store/postgres"
	"github.com/wsreliable/wsreliable/store/postgres/pgtest"
)

// TestStatusMany: one query finds the records Status would, pending or
// settled, and leaves out unknown IDs.
func TestStatusMany(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, pgtest.Start(t).NewSchema(t), nil)
	ids := make([]protocol.MessageID, 3)
	msgs := make([]queue.Push, 3)
	for i := range ids {
		ids[i] = protocol.MessageID(uuid.New())
		msgs[i] = queue.Push{Client: "a", Entry: queue.Entry{ID: ids[i], Payload: []byte("x")}}
	}
	if _, _, err := s.Push(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if err := s.Claim(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.AckOutbox(ctx, "a", 2, []queue.Outcome{{Seq: 2, Code: uint16(protocol.RejectHandler), Reason: "no"}}); err != nil {
		t.Fatal(err)
	}
	unknown := protocol.MessageID(uuid.New())
	got, err := s.StatusMany(append(ids, unknown))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[ids[0]].Pending || got[ids[0]].Code != 0 || got[ids[1]].Code != uint16(protocol.RejectHandler) || !got[ids[2]].Pending {
		t.Fatalf("StatusMany = %+v", got)
	}
	for _, id := range ids {
		if one, _, _ := s.Status(id); one != got[id] {
			t.Errorf("StatusMany[%s] = %+v, Status %+v", id, got[id], one)
		}
	}
}

// TestReceiptSettledByAnotherNode: a server waits on the receipts of
// pushes that a client connected to another server of the fleet
// acknowledges or rejects; they settle from the store's records.
func TestReceiptSettledByAnotherNode(t *testing.T) {
	ctx := testCtx(t)
	dsn := pgtest.Start(t).NewSchema(t)
	node := func(name string) (*reliable.Server, string) {
		return startServer(t, &reliable.ServerOptions{Store: openStore(t, dsn, &postgres.Options{NodeID: name})})
	}
	pusher, _ := node("a")
	_, urlB := node("b")
	cl, err := reliable.NewClient(urlB, filepath.Join(t.TempDir(), "c.db"), &reliable.ClientOptions{
		ClientID: "dev",
		Handler: func(_ context.Context, m *reliable.Message) error {
			if string(m.Payload) == "7" {
				return reliable.ErrRejected
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	var rs []*reliable.Receipt
	for i := range 20 {
		r, err := pusher.Send(ctx, "dev", []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	for i, r := range rs {
		err := r.Wait(ctx)
		if want := i == 7; want != errors.Is(err, reliable.ErrRejected) || !want && err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
	}
}
