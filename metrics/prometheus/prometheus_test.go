package prometheus_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/reliable"

	wsprom "github.com/wsreliable/wsreliable/metrics/prometheus"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestScrapeCountsWhatHappened runs a real server and client on
// 127.0.0.1: a scrape reports exactly what was sent, pushed and settled.
func TestScrapeCountsWhatHappened(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	obs := wsprom.NewObserver()
	srv, err := reliable.NewServer(filepath.Join(t.TempDir(), "server.db"), func(_ context.Context, m *reliable.Message) error {
		if string(m.Payload) == "13" {
			return fmt.Errorf("unlucky: %w", reliable.ErrRejected)
		}
		return nil
	}, &reliable.ServerOptions{Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(obs, wsprom.NewCollector(srv))

	hs := httptest.NewServer(srv)
	defer func() {
		hs.Close()
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	}()
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
	c, err := reliable.NewClient(url, filepath.Join(t.TempDir(), "client.db"), &reliable.ClientOptions{
		ClientID: "counted",
		Handler:  func(context.Context, *reliable.Message) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}

	const up, down = 100, 20
	var last *reliable.Receipt
	for i := range up {
		if last, err = c.Send(ctx, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := last.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range down {
		r, err := srv.Send(ctx, "counted", []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return srv.Stats().Sessions == 0 })

	// "0".."99" is 190 bytes, less the rejected "13"; "0".."19" is 30.
	want := `
# HELP wsreliable_connects_total Sessions started.
# TYPE wsreliable_connects_total counter
wsreliable_connects_total 1
# HELP wsreliable_disconnects_total Sessions ended, by WebSocket close code (1006: the link broke without a close frame).
# TYPE wsreliable_disconnects_total counter
wsreliable_disconnects_total{code="1000"} 1
# HELP wsreliable_messages_duplicate_total Client messages dropped as already delivered.
# TYPE wsreliable_messages_duplicate_total counter
wsreliable_messages_duplicate_total 0
# HELP wsreliable_messages_received_total Client messages handled and acknowledged.
# TYPE wsreliable_messages_received_total counter
wsreliable_messages_received_total 99
# HELP wsreliable_messages_rejected_total Client messages rejected, by the handler or after MaxAttempts.
# TYPE wsreliable_messages_rejected_total counter
wsreliable_messages_rejected_total 1
# HELP wsreliable_pushes_settled_total Pushes settled, by status: acked, rejected, expired or evicted.
# TYPE wsreliable_pushes_settled_total counter
wsreliable_pushes_settled_total{status="acked"} 20
wsreliable_pushes_settled_total{status="evicted"} 0
wsreliable_pushes_settled_total{status="expired"} 0
wsreliable_pushes_settled_total{status="rejected"} 0
# HELP wsreliable_pushes_total Pushes committed to client outboxes.
# TYPE wsreliable_pushes_total counter
wsreliable_pushes_total 20
# HELP wsreliable_pushed_bytes_total Payload bytes of the pushes committed to client outboxes.
# TYPE wsreliable_pushed_bytes_total counter
wsreliable_pushed_bytes_total 30
# HELP wsreliable_received_bytes_total Payload bytes of the client messages handled and acknowledged.
# TYPE wsreliable_received_bytes_total counter
wsreliable_received_bytes_total 188
# HELP wsreliable_sessions Open sessions.
# TYPE wsreliable_sessions gauge
wsreliable_sessions 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"wsreliable_connects_total", "wsreliable_disconnects_total", "wsreliable_messages_duplicate_total",
		"wsreliable_messages_received_total", "wsreliable_messages_rejected_total", "wsreliable_pushes_settled_total",
		"wsreliable_pushes_total", "wsreliable_pushed_bytes_total", "wsreliable_received_bytes_total", "wsreliable_sessions",
	); err != nil {
		t.Error(err)
	}

	// The histograms saw every handler call and committed every message
	// (the rejected one too: its watermark advanced).
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byResult := map[string]uint64{}
	var commits, committed float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "wsreliable_handler_duration_seconds":
				byResult[label(m, "result")] = m.GetHistogram().GetSampleCount()
			case "wsreliable_commit_messages":
				commits, committed = float64(m.GetHistogram().GetSampleCount()), m.GetHistogram().GetSampleSum()
			}
		}
	}
	if byResult["ok"] != up-1 || byResult["rejected"] != 1 || byResult["error"] != 0 {
		t.Errorf("handler calls by result %v, want ok %d, rejected 1, error 0", byResult, up-1)
	}
	if committed != up || commits < 1 {
		t.Errorf("%v messages committed in %v commits, want %d in at least 1", committed, commits, up)
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// eventually polls cond every 10ms for up to 10s.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
