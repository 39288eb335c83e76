package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsreliable/wsreliable/internal/fixedport"
	"github.com/wsreliable/wsreliable/reliable"
)

// RecoveryConfig describes a recovery run.
type RecoveryConfig struct {
	// Messages is the backlog queued while the server is down. Zero:
	// 100,000.
	Messages int
	// Size is the payload size. Zero: 256.
	Size int
	// Durable fsyncs on both sides while draining; false sets NoSync.
	Durable bool
	// BackoffMax is the client's reconnect backoff cap, which bounds how
	// long it takes to notice the server is up. Zero: 500 ms.
	BackoffMax time.Duration
	// Timeout bounds the fill and the drain, each. Zero: 10 minutes.
	Timeout time.Duration
	// Dir holds the store files. Empty: os.TempDir().
	Dir string
}

// RecoveryResult describes how a backlog drained.
type RecoveryResult struct {
	Config RecoveryConfig // the configuration run, defaults filled in
	// FileBefore is the client's queue file with the backlog; FileAfter
	// is the same file after the backlog was acknowledged and the client
	// closed.
	FileBefore, FileAfter int64
	// Fill is how long queueing the backlog took (with NoSync, so the
	// fill is not the measurement).
	Fill time.Duration
	// Connect runs from the server's start to the client's session.
	Connect time.Duration
	// Drain runs from the server's start until the whole backlog was
	// acknowledged.
	Drain time.Duration
}

// DrainRate returns messages per second from the session's start to the
// last acknowledgement (reconnect backoff excluded).
func (r RecoveryResult) DrainRate() float64 {
	d := r.Drain - r.Connect
	if d <= 0 {
		return 0
	}
	return float64(r.Config.Messages) / d.Seconds()
}

// Recovery queues a backlog while no server listens, starts the server and
// measures how long the backlog takes to drain. It fails if the handler
// did not see every message exactly once and in order, or if the queue
// file did not shrink.
func Recovery(ctx context.Context, cfg RecoveryConfig) (res RecoveryResult, err error) {
	if cfg.Messages == 0 {
		cfg.Messages = 100_000
	}
	if cfg.Size == 0 {
		cfg.Size = 256
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 500 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	res.Config = cfg
	dir, err := os.MkdirTemp(cfg.Dir, "wsreliable-bench-rec-")
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "client.db")

	// A port nobody listens on until the server starts, and nobody else
	// takes meanwhile (a port from 127.0.0.1:0 could go to another
	// process once released).
	port, err := fixedport.Reserve()
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer port.Close()
	addr := port.Addr()
	url := "ws://" + addr + "/"
	opts := reliable.ClientOptions{BackoffMin: 50 * time.Millisecond, BackoffMax: cfg.BackoffMax}

	// Fill.
	fctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	fill := opts
	fill.NoSync = true
	c, err := reliable.NewClient(url, path, &fill)
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	start := time.Now()
	var (
		tickets atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		sendErr error
	)
	p := payload(cfg.Size)
	for range 32 {
		wg.Go(func() {
			for tickets.Add(1) <= int64(cfg.Messages) {
				if _, err := c.Send(fctx, p); err != nil {
					errOnce.Do(func() { sendErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	res.Fill = time.Since(start)
	queued := c.Stats().Queued
	if err := errors.Join(sendErr, c.Close()); err != nil {
		return res, fmt.Errorf("bench: fill: %w", err)
	}
	if queued != cfg.Messages {
		return res, fmt.Errorf("bench: %d messages queued, want %d", queued, cfg.Messages)
	}
	if res.FileBefore, err = fileSize(path); err != nil {
		return res, err
	}

	// Drain: the client runs (and fails to dial) first, then the server
	// starts.
	var (
		connectedMu sync.Mutex
		connected   time.Time
	)
	drain := opts
	drain.NoSync = !cfg.Durable
	drain.OnStateChange = func(s reliable.State, _ error) {
		if s == reliable.StateConnected {
			connectedMu.Lock()
			if connected.IsZero() {
				connected = time.Now()
			}
			connectedMu.Unlock()
		}
	}
	c, err = reliable.NewClient(url, path, &drain)
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer func() {
		if c != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	select {
	case <-time.After(100 * time.Millisecond):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	var t tally
	start = time.Now()
	srv, err := startReliableServer(ctx, addr, filepath.Join(dir, "server.db"), t.handle,
		&reliable.ServerOptions{NoSync: !cfg.Durable})
	if err != nil {
		return res, fmt.Errorf("bench: start server: %w", err)
	}
	defer func() { err = errors.Join(err, srv.close()) }()
	dctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := c.Drain(dctx); err != nil {
		return res, fmt.Errorf("bench: drain: %w", err)
	}
	res.Drain = time.Since(start)
	connectedMu.Lock()
	res.Connect = connected.Sub(start)
	connectedMu.Unlock()
	if got := t.n.Load(); got != int64(cfg.Messages) {
		return res, fmt.Errorf("bench: server handled %d messages, want %d", got, cfg.Messages)
	}
	if err := t.check(); err != nil {
		return res, err
	}
	// Closing flushes the last acknowledgement to the store, which then
	// compacts the emptied file.
	err = c.Close()
	c = nil
	if err != nil {
		return res, fmt.Errorf("bench: close client: %w", err)
	}
	if res.FileAfter, err = fileSize(path); err != nil {
		return res, err
	}
	if res.FileAfter >= res.FileBefore {
		return res, fmt.Errorf("bench: queue file did not shrink: %d bytes before, %d after", res.FileBefore, res.FileAfter)
	}
	return res, nil
}

func fileSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	return fi.Size(), nil
}
