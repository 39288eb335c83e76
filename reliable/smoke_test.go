package reliable_test

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

func TestSmokeSendAndAck(t *testing.T) {
	var s sink
	_, url := startServer(t, s.handle, nil)
	c, err := reliable.NewClient(url, filepath.Join(t.TempDir(), "client.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 2000
	var last *reliable.Receipt
	for i := range n {
		r, err := c.Send(ctx, []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		last = r
	}
	if err := last.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	got := s.seen[c.ID()]
	s.mu.Unlock()
	if len(got) != n {
		t.Fatalf("handler saw %d messages, want %d", len(got), n)
	}
	for i, p := range got {
		if p != strconv.Itoa(i) {
			t.Fatalf("message %d is %q", i, p)
		}
	}
	if st := c.Stats(); st.Queued != 0 || st.Acked != n {
		t.Fatalf("stats %+v", st)
	}
}

func TestSendBatch(t *testing.T) {
	var s sink
	_, url := startServer(t, s.handle, nil)
	c, err := reliable.NewClient(url, filepath.Join(t.TempDir(), "client.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var want []string
	for b := range 10 {
		msgs, payloads := numbered(b*50, 50)
		want = append(want, payloads...)
		rs, err := c.SendBatch(ctx, msgs)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range rs {
			if r.Seq() != uint64(b*50+i+1) {
				t.Fatalf("receipt %d of batch %d has seq %d", i, b, r.Seq())
			}
		}
		if err := rs[len(rs)-1].Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	got := strings.Join(s.seen[c.ID()], ",")
	s.mu.Unlock()
	if got != strings.Join(want, ",") {
		t.Fatalf("handler saw %d messages out of order or incomplete", len(s.seen[c.ID()]))
	}
}

// TestDrainSettlesReceipts: once Drain returns, every receipt of a message
// queued before it has settled (send -receipts prints them right after).
func TestDrainSettlesReceipts(t *testing.T) {
	var s sink
	_, url := startServer(t, s.handle, nil)
	c := newClient(t, url, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for round := range 20 {
		msgs, _ := numbered(round*100, 100)
		var rs []*reliable.Receipt
		for _, m := range msgs {
			r, err := c.Send(ctx, m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r)
		}
		if err := c.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		for i, r := range rs {
			select {
			case <-r.Done():
				if err := r.Err(); err != nil {
					t.Fatalf("round %d receipt %d: %v", round, i, err)
				}
			default:
				t.Fatalf("round %d: receipt %d of %d unsettled after Drain returned", round, i, len(rs))
			}
		}
	}
}
