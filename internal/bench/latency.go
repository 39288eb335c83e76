package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

// maxSamples bounds the latencies one run keeps.
const maxSamples = 1 << 20

// LatencyConfig describes a latency run.
type LatencyConfig struct {
	// Size is the payload size in bytes. Zero: 256.
	Size int
	// Durable fsyncs on both sides; false sets NoSync on both.
	Durable bool
	// Rate is the offered load in messages per second over all senders.
	// Zero: unloaded, one sender sends one message at a time and waits
	// for its receipt before the next.
	Rate float64
	// Senders is the number of pacing goroutines when Rate is set; each
	// sends at Rate/Senders. Zero: 1.
	Senders int
	// Clients is the number of clients the senders share. Zero: 1.
	Clients int
	// Duration bounds the run. Zero: 3 s.
	Duration time.Duration
	// Count bounds the messages sent. Zero: 100,000.
	Count int
	// Dir holds the run's temporary store files. Empty: os.TempDir().
	Dir string
}

// LatencyResult holds send-to-acknowledgement latencies: from the moment
// a message was due to be sent (Send called, for unloaded runs) until its
// receipt settled.
type LatencyResult struct {
	Config   LatencyConfig // the configuration run, defaults filled in
	Messages int           // messages measured
	// Achieved is the rate actually sent, messages per second.
	Achieved float64
	P50      time.Duration // median
	P99      time.Duration // 99th percentile
	Max      time.Duration // slowest
}

// Latency measures send-to-receipt latency. Unloaded (Rate zero), one
// goroutine sends a message, waits for its receipt, and repeats. Loaded,
// Senders goroutines each follow a fixed schedule at Rate/Senders and
// hand receipts to a collector, so a slow Send delays later sends but
// their latency still counts from the scheduled time (no coordinated
// omission).
func Latency(ctx context.Context, cfg LatencyConfig) (LatencyResult, error) {
	switch {
	case cfg.Size < 0 || cfg.Rate < 0 || cfg.Senders < 0 || cfg.Clients < 0 || cfg.Duration < 0 || cfg.Count < 0:
		return LatencyResult{}, fmt.Errorf("bench: negative field in %+v", cfg)
	}
	if cfg.Size == 0 {
		cfg.Size = 256
	}
	if cfg.Rate == 0 {
		cfg.Senders, cfg.Clients = 1, 1
	}
	cfg.Senders = max(cfg.Senders, 1)
	cfg.Clients = min(max(cfg.Clients, 1), cfg.Senders)
	if cfg.Duration == 0 {
		cfg.Duration = defaultRun
	}
	if cfg.Count == 0 {
		cfg.Count = 100_000
	}
	cfg.Count = min(cfg.Count, maxSamples)
	res := LatencyResult{Config: cfg}

	r, err := newRig(ctx, cfg.Dir, cfg.Clients, cfg.Durable, false)
	if err != nil {
		return res, err
	}
	defer r.close()
	p := payload(cfg.Size)
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+drainTimeout)
	defer cancel()

	var lats []time.Duration
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	if cfg.Rate == 0 {
		c := r.clients[0]
		for i := 0; i < cfg.Count && time.Now().Before(deadline); i++ {
			t0 := time.Now()
			rc, err := c.Send(ctx, p)
			if err != nil {
				return res, fmt.Errorf("bench: send: %w", err)
			}
			if err := rc.Wait(ctx); err != nil {
				return res, fmt.Errorf("bench: receipt: %w", err)
			}
			lats = append(lats, time.Since(t0))
		}
	} else {
		lats, err = paced(ctx, r.clients, cfg, p, start, deadline)
		if err != nil {
			return res, err
		}
	}
	elapsed := time.Since(start)
	if err := r.drain(ctx); err != nil {
		return res, err
	}
	if err := r.t.check(); err != nil {
		return res, err
	}
	res.Messages = len(lats)
	res.Achieved = float64(len(lats)) / min(elapsed, cfg.Duration).Seconds()
	res.P50, res.P99, res.Max = percentile(lats, 0.50), percentile(lats, 0.99), percentile(lats, 1)
	return res, r.close()
}

type due struct {
	r  *reliable.Receipt
	at time.Time
}

// paced runs cfg.Senders goroutines on a fixed schedule until deadline or
// cfg.Count messages, and returns the latencies measured from each
// message's scheduled time.
func paced(ctx context.Context, clients []*reliable.Client, cfg LatencyConfig, p []byte, start, deadline time.Time) ([]time.Duration, error) {
	interval := time.Duration(float64(time.Second) * float64(cfg.Senders) / cfg.Rate)
	perSender := cfg.Count / cfg.Senders
	var (
		mu      sync.Mutex
		all     []time.Duration
		firstMu sync.Mutex
		first   error
		wg      sync.WaitGroup
	)
	fail := func(err error) {
		firstMu.Lock()
		if first == nil {
			first = err
		}
		firstMu.Unlock()
	}
	for i := range cfg.Senders {
		c := clients[i%len(clients)]
		pending := make(chan due, 1<<14)
		// The collector: receipts of one client settle in order, so
		// waiting for them in order measures each one exactly.
		wg.Go(func() {
			var lats []time.Duration
			defer func() {
				mu.Lock()
				all = append(all, lats...)
				mu.Unlock()
			}()
			for d := range pending {
				if err := d.r.Wait(ctx); err != nil {
					fail(fmt.Errorf("bench: receipt: %w", err))
					for range pending {
					}
					return
				}
				lats = append(lats, time.Since(d.at))
			}
		})
		offset := time.Duration(i) * interval / time.Duration(cfg.Senders)
		wg.Go(func() {
			defer close(pending)
			for k := range perSender {
				at := start.Add(offset + time.Duration(k)*interval)
				if !at.Before(deadline) {
					return
				}
				if d := time.Until(at); d > 0 {
					select {
					case <-time.After(d):
					case <-ctx.Done():
						return
					}
				}
				rc, err := c.Send(ctx, p)
				if err != nil {
					fail(fmt.Errorf("bench: send: %w", err))
					return
				}
				pending <- due{rc, at}
			}
		})
	}
	wg.Wait()
	return all, first
}

// percentile returns the q-quantile (0..1) of ds, sorting ds in place.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	if !slices.IsSorted(ds) {
		slices.Sort(ds)
	}
	i := int(q*float64(len(ds))+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}
