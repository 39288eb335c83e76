package reliable_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/reliable"
)

// TestMessageRate: with MaxMessageRate an identity's messages reach the
// handler no faster than its token bucket allows (the k-th by time t at
// most burst + rate × (t − start), from the test's own clock, which
// started before the bucket existed), the server pushes back by not
// reading instead of refusing, and every message is delivered, in order,
// before its receipt settles. Another identity has a bucket of its own.
func TestMessageRate(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	const (
		rate  = 40.0
		burst = 5
		n     = 50
	)
	var (
		mu    sync.Mutex
		times = map[string][]time.Time{}
		seen  = map[string][]string{}
	)
	srv, url := startServer(t, func(_ context.Context, m *reliable.Message) error {
		mu.Lock()
		defer mu.Unlock()
		times[m.Identity] = append(times[m.Identity], time.Now())
		seen[m.Identity] = append(seen[m.Identity], string(m.Payload))
		return nil
	}, &reliable.ServerOptions{Authenticate: authByHeader, MaxMessageRate: rate, MessageBurst: burst})

	start := time.Now()
	var wg sync.WaitGroup
	for _, id := range []string{"alice", "bob"} {
		c := newClient(t, url, &reliable.ClientOptions{ClientID: "device", Header: asIdentity(id)})
		wg.Go(func() { sendAll(t, ctx, c, names(id, 1, n)...) })
	}
	wg.Wait()
	elapsed := time.Since(start)

	mu.Lock()
	defer mu.Unlock()
	for _, id := range []string{"alice", "bob"} {
		if got, want := seen[id], names(id, 1, n); !slices.Equal(got, want) {
			t.Errorf("%s: handler saw %q, want %q", id, got, want)
		}
		for k, at := range times[id] {
			if bound := burst + rate*at.Sub(start).Seconds(); float64(k+1) > bound {
				t.Errorf("%s: message %d handled %v after the start, over the bucket's %.1f", id, k+1, at.Sub(start), bound)
				break
			}
		}
	}
	st := srv.Stats()
	if st.RateWaits == 0 {
		t.Errorf("no session ever waited for its rate: %+v", st)
	}
	t.Logf("2 identities × %d messages at %.0f/s (burst %d) in %v; %d waits, %v waited in all", n, rate, burst, elapsed.Round(time.Millisecond), st.RateWaits, st.RateWaited.Round(time.Millisecond))
}

// TestMessageRateOptions: a negative rate or burst is a configuration
// error naming the field.
func TestMessageRateOptions(t *testing.T) {
	for _, o := range []*reliable.ServerOptions{{MaxMessageRate: -1}, {MessageBurst: -1}} {
		if _, err := reliable.NewServer(t.TempDir()+"/s.db", func(context.Context, *reliable.Message) error { return nil }, o); err == nil {
			t.Errorf("NewServer(%+v) succeeded", *o)
		}
	}
}

// TestMessageRateReconnect: an identity that spends its burst, leaves and
// comes back at once (as another client ID) gets no fresh burst: its
// bucket outlives its sessions until it has refilled.
func TestMessageRateReconnect(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	const (
		rate  = 20.0
		burst = 5
	)
	var (
		mu    sync.Mutex
		times []time.Time
	)
	srv, url := startServer(t, func(_ context.Context, m *reliable.Message) error {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		return nil
	}, &reliable.ServerOptions{Authenticate: authByHeader, MaxMessageRate: rate, MessageBurst: burst})
	start := time.Now()
	for _, id := range []string{"first", "second"} {
		c := newClient(t, url, &reliable.ClientOptions{ClientID: id, Header: asIdentity("alice")})
		sendAll(t, ctx, c, names(id, 1, burst)...)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(times) != 2*burst {
		t.Fatalf("handled %d messages, want %d", len(times), 2*burst)
	}
	for k, at := range times {
		if bound := burst + rate*at.Sub(start).Seconds(); float64(k+1) > bound {
			t.Fatalf("message %d handled %v after the start, over the bucket's %.1f: the reconnect refilled it", k+1, at.Sub(start), bound)
		}
	}
	if st := srv.Stats(); st.RateWaits == 0 {
		t.Errorf("the second client never waited: %+v", st)
	}
}
