package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// fdMargin is the descriptors a process keeps for everything but the
// measured connections (files, listeners, pipes).
const fdMargin = 256

// MemoryConfig describes an idle-memory run.
type MemoryConfig struct {
	// System is "gorilla" (the baseline) or "wsreliable".
	System string
	// Clients is the number of idle connections. Zero: 10,000. It is
	// scaled down, with a note in the result, if the descriptor limit
	// cannot hold it.
	Clients int
	// Settle is how long the connections sit idle before the server's
	// memory is read. Zero: 2 s.
	Settle time.Duration
	// Launcher starts the child processes.
	Launcher Launcher
	// Dir holds the server's store. Empty: os.TempDir().
	Dir string
}

// MemoryResult is the server's resident memory with and without the idle
// connections. The server runs in a child process of its own, so nothing
// else the benchmark did is in its heap.
type MemoryResult struct {
	Config MemoryConfig // the configuration run, defaults filled in
	// Conns is the connections the server held when measured.
	Conns int
	// RSSBefore and RSSAfter are VmRSS before the clients connected and
	// after they sat idle, each read after a GC and debug.FreeOSMemory,
	// so they count live memory rather than garbage not yet returned.
	RSSBefore, RSSAfter int64
	// RSSAfterNoGC is VmRSS at the same moment, read before the GC.
	RSSAfterNoGC int64
	// ClientRSS is the client process's VmRSS (for information only).
	ClientRSS int64
	// Notes report scaling and other deviations from the configuration.
	Notes []string
}

// PerConn returns the server's extra resident bytes per connection.
func (r MemoryResult) PerConn() float64 {
	if r.Conns == 0 {
		return 0
	}
	return float64(r.RSSAfter-r.RSSBefore) / float64(r.Conns)
}

// fitClients raises the descriptor limit and scales n down to what one
// process may hold, with a note saying so.
func fitClients(n int) (int, []string, error) {
	limit, err := raiseNoFile()
	if err != nil {
		return 0, nil, err
	}
	if need := uint64(n + fdMargin); limit < need {
		fit := int(limit) - fdMargin
		if fit < 1 {
			return 0, nil, fmt.Errorf("bench: RLIMIT_NOFILE hard limit %d leaves no room for connections", limit)
		}
		note := fmt.Sprintf("SCALED DOWN: RLIMIT_NOFILE hard limit is %d, so %d connections instead of %d", limit, fit, n)
		return fit, []string{note}, nil
	}
	return n, nil, nil
}

// IdleMemory measures what a server pays per idle connection. It starts
// the server in one child process and the clients in another (a process
// may hold only so many descriptors, and the server's RSS must not include
// the clients or this process's earlier work). The server reports VmRSS
// from /proc/self/status before the clients connect and after they have
// sat idle for cfg.Settle.
func IdleMemory(ctx context.Context, cfg MemoryConfig) (res MemoryResult, err error) {
	switch cfg.System {
	case "gorilla", "wsreliable":
	default:
		return res, fmt.Errorf("bench: MemoryConfig.System %q: want gorilla or wsreliable", cfg.System)
	}
	if cfg.Clients == 0 {
		cfg.Clients = 10_000
	}
	if cfg.Settle == 0 {
		cfg.Settle = 2 * time.Second
	}
	res.Config = cfg
	n, notes, err := fitClients(cfg.Clients)
	if err != nil {
		return res, err
	}
	res.Notes = notes
	res.Config.Clients = n

	dir, err := os.MkdirTemp(cfg.Dir, "wsreliable-bench-mem-")
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)

	srv, err := cfg.Launcher.start(ctx, "server", "-kind", cfg.System, "-dir", dir)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, srv.stop()) }()
	hello, err := srv.reply(childReplyTimeout)
	if err != nil {
		return res, err
	}
	before, err := srv.call(time.Minute, "rss")
	if err != nil {
		return res, err
	}
	res.RSSBefore = before.RSSAfterGC

	cl, err := cfg.Launcher.start(ctx, "clients", "-kind", cfg.System, "-url", hello.URL, "-n", strconv.Itoa(n))
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, cl.stop()) }()
	ready, err := cl.reply(childReplyTimeout)
	if err != nil {
		return res, err
	}
	if ready.Failed > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d of %d connections failed to open", ready.Failed, n))
	}
	res.ClientRSS = ready.RSS
	select {
	case <-time.After(cfg.Settle):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	after, err := srv.call(time.Minute, "rss")
	if err != nil {
		return res, err
	}
	res.RSSAfter, res.RSSAfterNoGC, res.Conns = after.RSSAfterGC, after.RSS, after.Conns
	if res.Conns != ready.Conns {
		res.Notes = append(res.Notes, fmt.Sprintf("server held %d connections, clients had %d open", res.Conns, ready.Conns))
	}
	return res, nil
}
