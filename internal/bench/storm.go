package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/wsreliable/wsreliable/internal/fixedport"
	"github.com/wsreliable/wsreliable/reliable"
)

// StormConfig describes a reconnect-storm run.
type StormConfig struct {
	// Clients is the number of connected clients. Zero: 5,000. It is
	// scaled down, with a note, if the descriptor limit cannot hold it.
	Clients int
	// Durable fsyncs the server's watermarks (clients use in-memory
	// stores: only the server is under test). False sets NoSync.
	Durable bool
	// HealthyAfter is the clients' ClientOptions.HealthyAfter; the run
	// waits this long after the clients connect, so every backoff starts
	// from its minimum as after a long healthy connection. Zero: 2 s.
	HealthyAfter time.Duration
	// Timeout bounds the wait for the storm to settle. Zero: 5 minutes.
	Timeout time.Duration
	// Launcher starts the client process.
	Launcher Launcher
	// Dir holds the server's store. Empty: os.TempDir().
	Dir string
}

// StormResult describes a server restart under many clients.
type StormResult struct {
	Config StormConfig // the configuration run, defaults filled in
	// Down is how long no server listened.
	Down time.Duration
	// Reconnected runs from the new server's start until every client had
	// a session again; CaughtUp until, in addition, the message each
	// client queued while the server was down was handled and every
	// receipt settled.
	Reconnected, CaughtUp time.Duration
	// FailedHandshakes counts connect attempts after the restart that
	// failed for any reason but "connection refused"; Refused counts
	// those (the listener not up yet, or its accept queue full).
	FailedHandshakes, Refused int64
	// Errors samples the failed attempts by error text.
	Errors map[string]int
	Notes  []string // remarks for the report
}

// Storm connects cfg.Clients clients (in a child process), restarts the
// server (Close, then a new server on the same port and store) while each
// client queues one message, and measures how long it takes until every
// client has reconnected and every queued message is handled. It fails on
// any lost, duplicated or reordered message.
func Storm(ctx context.Context, cfg StormConfig) (res StormResult, err error) {
	if cfg.Clients == 0 {
		cfg.Clients = 5_000
	}
	if cfg.HealthyAfter == 0 {
		cfg.HealthyAfter = 2 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Minute
	}
	res.Config = cfg
	n, notes, err := fitClients(cfg.Clients)
	if err != nil {
		return res, err
	}
	res.Notes = notes
	res.Config.Clients = n

	dir, err := os.MkdirTemp(cfg.Dir, "wsreliable-bench-storm-")
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "server.db")
	opts := &reliable.ServerOptions{NoSync: !cfg.Durable}
	var t tally
	// The restarted server listens on the same port; while it is down no
	// other process may take it.
	port, err := fixedport.Reserve()
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer port.Close()
	srv, err := startReliableServer(ctx, port.Addr(), path, t.handle, opts)
	if err != nil {
		return res, err
	}
	defer func() {
		if srv != nil {
			err = errors.Join(err, srv.close())
		}
	}()

	cl, err := cfg.Launcher.start(ctx, "clients", "-url", srv.url, "-n", strconv.Itoa(n),
		"-healthy", cfg.HealthyAfter.String())
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, cl.stop()) }()
	if _, err := cl.reply(childReplyTimeout); err != nil {
		return res, err
	}
	// One message each, so every stream has a watermark to resume from.
	if err := sendAndWait(cl, n, cfg.Timeout); err != nil {
		return res, fmt.Errorf("bench: warm-up: %w", err)
	}
	select {
	case <-time.After(cfg.HealthyAfter):
	case <-ctx.Done():
		return res, ctx.Err()
	}

	// Restart: the clients see going-away and reconnect with backoff.
	down := time.Now()
	err = srv.close()
	srv = nil
	if err != nil {
		return res, fmt.Errorf("bench: close server: %w", err)
	}
	st, err := cl.call(time.Minute, "send")
	if err != nil {
		return res, err
	}
	if st.Sent != n {
		return res, fmt.Errorf("bench: %d of %d clients queued a message while the server was down", st.Sent, n)
	}
	if _, err := cl.call(time.Minute, "mark"); err != nil {
		return res, err
	}
	start := time.Now()
	res.Down = start.Sub(down)
	srv, err = startReliableServer(ctx, port.Addr(), path, t.handle, opts)
	if err != nil {
		return res, fmt.Errorf("bench: restart server: %w", err)
	}
	want := int64(2 * n)
	err = waitFor(ctx, cfg.Timeout, "clients to reconnect and catch up", func() bool {
		if res.Reconnected == 0 && srv.srv.Stats().Sessions >= n {
			res.Reconnected = time.Since(start)
		}
		return res.Reconnected > 0 && t.n.Load() >= want
	})
	if err != nil {
		return res, fmt.Errorf("%w (%d sessions, %d of %d messages)", err, srv.srv.Stats().Sessions, t.n.Load(), want)
	}
	w, err := cl.call(cfg.Timeout+time.Minute, "wait", cfg.Timeout.String())
	if err != nil {
		return res, err
	}
	res.CaughtUp = time.Since(start)
	if w.Acked != n {
		return res, fmt.Errorf("bench: %d of %d receipts acknowledged after the restart", w.Acked, n)
	}
	stats, err := cl.call(time.Minute, "stats")
	if err != nil {
		return res, err
	}
	res.FailedHandshakes, res.Refused, res.Errors = stats.Attempts, stats.Refused, stats.Errors
	if got := t.n.Load(); got != want {
		return res, fmt.Errorf("bench: server handled %d messages, want %d", got, want)
	}
	return res, t.check()
}

// sendAndWait has every client send one message and waits for the acks.
func sendAndWait(cl *child, n int, timeout time.Duration) error {
	st, err := cl.call(time.Minute, "send")
	if err != nil {
		return err
	}
	if st.Sent != n {
		return fmt.Errorf("%d of %d clients sent", st.Sent, n)
	}
	w, err := cl.call(timeout+time.Minute, "wait", timeout.String())
	if err != nil {
		return err
	}
	if w.Acked != n {
		return fmt.Errorf("%d of %d acknowledged", w.Acked, n)
	}
	return nil
}
