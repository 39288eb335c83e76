package otel_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/reliable"

	wsotel "github.com/wsreliable/wsreliable/metrics/otel"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestCollectCountsWhatHappened runs a real server and client on
// 127.0.0.1: a collection reports exactly what was sent, pushed and
// settled.
func TestCollectCountsWhatHappened(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() {
		if err := mp.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	obs, err := wsotel.NewObserver(mp)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := reliable.NewServer(filepath.Join(t.TempDir(), "server.db"), func(_ context.Context, m *reliable.Message) error {
		if string(m.Payload) == "13" {
			return fmt.Errorf("unlucky: %w", reliable.ErrRejected)
		}
		return nil
	}, &reliable.ServerOptions{Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := wsotel.Register(mp, srv)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := reg.Unregister(); err != nil {
			t.Error(err)
		}
	}()

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
	for deadline := time.Now().Add(10 * time.Second); srv.Stats().Sessions != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("session still open 10s after the client closed")
		}
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := flatten(t, rm)
	// "0".."99" is 190 bytes, less the rejected "13"; "0".."19" is 30.
	for _, w := range []struct {
		key  string
		want int64
	}{
		{"wsreliable.sessions", 0},
		{"wsreliable.connects", 1},
		{"wsreliable.disconnects{code=1000}", 1},
		{"wsreliable.messages.received", up - 1},
		{"wsreliable.received.size", 188},
		{"wsreliable.messages.rejected", 1},
		{"wsreliable.messages.duplicate", 0},
		{"wsreliable.pushes", down},
		{"wsreliable.pushed.size", 30},
		{"wsreliable.pushes.settled{status=acked}", down},
		{"wsreliable.pushes.settled{status=rejected}", 0},
		{"wsreliable.handler.duration{result=ok}.count", up - 1},
		{"wsreliable.handler.duration{result=rejected}.count", 1},
		{"wsreliable.commit.messages.sum", up},
	} {
		if v, ok := got[w.key]; !ok || v != w.want {
			t.Errorf("%s = %d (present %v), want %d", w.key, v, ok, w.want)
		}
	}
	if got["wsreliable.commit.duration.count"] < 1 {
		t.Errorf("no commit durations recorded")
	}
}

// flatten maps each data point to "name{k=v,...}" (histograms as
// name.count and name.sum) and its value.
func flatten(t *testing.T, rm metricdata.ResourceMetrics) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	key := func(name string, attrs attribute.Set) string {
		if attrs.Len() == 0 {
			return name
		}
		var kv []string
		for _, a := range attrs.ToSlice() {
			kv = append(kv, string(a.Key)+"="+a.Value.String())
		}
		return name + "{" + strings.Join(kv, ",") + "}"
	}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != wsotel.ScopeName {
			t.Errorf("scope %q, want %q", sm.Scope.Name, wsotel.ScopeName)
		}
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				if !d.IsMonotonic || d.Temporality != metricdata.CumulativeTemporality {
					t.Errorf("%s: monotonic %v, temporality %v; want a cumulative counter", m.Name, d.IsMonotonic, d.Temporality)
				}
				for _, p := range d.DataPoints {
					out[key(m.Name, p.Attributes)] = p.Value
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out[key(m.Name, p.Attributes)] = p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[key(m.Name, p.Attributes)+".count"] = int64(p.Count)
				}
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					out[key(m.Name, p.Attributes)+".count"] = int64(p.Count)
					out[key(m.Name, p.Attributes)+".sum"] = p.Sum
				}
			default:
				t.Errorf("%s: unexpected data %T", m.Name, m.Data)
			}
		}
	}
	return out
}
