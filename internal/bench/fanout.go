package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
)

// FanoutConfig describes a fan-out run.
type FanoutConfig struct {
	// Clients is the number of recipients, connected and offline alike.
	// Zero: 10,000. It is scaled down, with a note, if the descriptor
	// limit cannot hold the connected ones.
	Clients int
	// Rounds is the number of fan-outs of each kind. Zero: 3.
	Rounds int
	// Size is the payload size. Zero: 256.
	Size int
	// Timeout bounds each wait (clients connecting, a fan-out arriving).
	// Zero: 5 minutes.
	Timeout time.Duration
	// Launcher starts the client process.
	Launcher Launcher
	// Dir holds the server's store. Empty: os.TempDir().
	Dir string
}

// FanoutRound is one fan-out to connected clients, timed from the
// SendMany call.
type FanoutRound struct {
	// Commit is until SendMany returned: every copy durable (one commit).
	Commit time.Duration
	// Delivered is until the last client's Handler had its copy.
	Delivered time.Duration
	// Settled is until every receipt had settled as acknowledged.
	Settled time.Duration
}

// FanoutResult describes fan-outs of one message to many clients.
type FanoutResult struct {
	Config FanoutConfig // the configuration run, defaults filled in
	// Online are the fan-outs to connected clients.
	Online []FanoutRound
	// Offline are the commit times of the same fan-out to as many clients
	// that are not connected.
	Offline []time.Duration
	// FileSize is the server's store afterwards (holding the offline
	// clients' pushes).
	FileSize int64
	// Handled is the pushes the connected clients handled, each once and
	// in order, and Checked the offline clients' pushes found in the
	// store afterwards: each Clients × Rounds, or the run failed.
	Handled int64
	Checked int
	Notes   []string // remarks for the report
}

// Fanout connects cfg.Clients clients (in a child process, with in-memory
// stores: the server is under test) that take pushes, and times
// cfg.Rounds fan-outs of one message to all of them with one
// Server.SendMany each: until the commit, until every Handler had it and
// until every receipt settled. Then it times as many fan-outs to
// cfg.Clients clients that never connect (the commit is all there is).
// The server fsyncs (the default). It fails unless every client handled
// every fan-out once and in order, every receipt was acknowledged, and
// the store afterwards holds exactly the offline clients' pushes.
func Fanout(ctx context.Context, cfg FanoutConfig) (res FanoutResult, err error) {
	if cfg.Clients == 0 {
		cfg.Clients = 10_000
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = 3
	}
	if cfg.Size == 0 {
		cfg.Size = 256
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Minute
	}
	res.Config = cfg
	if cfg.Clients < 0 || cfg.Rounds < 0 || cfg.Size < 0 || cfg.Timeout < 0 {
		return res, fmt.Errorf("bench: negative field in %+v", cfg)
	}
	n, notes, err := fitClients(cfg.Clients)
	if err != nil {
		return res, err
	}
	res.Notes = notes
	res.Config.Clients = n

	dir, err := os.MkdirTemp(cfg.Dir, "wsreliable-bench-fanout-")
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "server.db")
	// The store is opened here, so that a fan-out that does not settle
	// can say what the server holds for a client it did not reach.
	store, err := queue.Open(path, nil)
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	closeStore := sync.OnceValue(store.Close)
	defer func() { err = errors.Join(err, closeStore()) }()
	var t tally // the clients send nothing
	srv, err := startReliableServer(ctx, "127.0.0.1:0", "", t.handle, &reliable.ServerOptions{Store: store})
	if err != nil {
		return res, err
	}
	defer func() {
		if srv != nil {
			err = errors.Join(err, srv.close())
		}
	}()

	cl, err := cfg.Launcher.start(ctx, "clients", "-url", srv.url, "-n", strconv.Itoa(n), "-push", onlinePrefix)
	if err != nil {
		return res, err
	}
	defer func() {
		if cl != nil {
			err = errors.Join(err, cl.stop())
		}
	}()
	ready, err := cl.reply(childReplyTimeout)
	if err != nil {
		return res, err
	}
	if ready.Conns != n {
		return res, fmt.Errorf("bench: %d of %d clients connected", ready.Conns, n)
	}
	if err := waitFor(ctx, cfg.Timeout, "the server to hold every session", func() bool { return srv.srv.Stats().Sessions >= n }); err != nil {
		return res, err
	}

	// whereIs says what the server and the client hold for a client a
	// fan-out did not reach, for the failure's message.
	whereIs := func(id string) string {
		info, err := store.OutboxInfo(id)
		where := fmt.Sprintf("server: %d sessions, outbox of %s acked up to %d of %d, holding %d", srv.srv.Stats().Sessions, id, info.Acked, info.LastSeq, info.Messages)
		if err != nil {
			where = fmt.Sprintf("server: outbox of %s: %v", id, err)
		}
		st, err := cl.call(time.Minute, "client", id)
		if err != nil {
			return fmt.Sprintf("%s; client: %v", where, err)
		}
		return where + "; client: " + st.Detail
	}
	p := payload(cfg.Size)
	online, offline := clientNames(onlinePrefix, n), clientNames(offlinePrefix, n)
	for r := 1; r <= cfg.Rounds; r++ {
		round, handled, err := fanoutRound(ctx, srv.srv, cl, online, r, p, cfg.Timeout, whereIs)
		if err != nil {
			return res, fmt.Errorf("bench: fan-out %d to connected clients: %w", r, err)
		}
		res.Online = append(res.Online, round)
		res.Handled = handled
	}
	for r := 1; r <= cfg.Rounds; r++ {
		start := time.Now()
		rs, err := srv.srv.SendMany(ctx, offline, reliable.OutgoingMessage{Payload: p})
		if err != nil {
			return res, fmt.Errorf("bench: fan-out %d to offline clients: %w", r, err)
		}
		res.Offline = append(res.Offline, time.Since(start))
		if err := checkSeqs(rs, uint64(r)); err != nil {
			return res, err
		}
	}

	// The clients leave first, so their sessions end (and delete what was
	// acknowledged) before the server closes its store.
	err = cl.stop()
	cl = nil
	if err != nil {
		return res, fmt.Errorf("bench: stop clients: %w", err)
	}
	err = srv.close()
	srv = nil
	if err != nil {
		return res, fmt.Errorf("bench: close server: %w", err)
	}
	// The check opens the file itself.
	if err := closeStore(); err != nil {
		return res, fmt.Errorf("bench: close store: %w", err)
	}
	if res.FileSize, err = fileSize(path); err != nil {
		return res, err
	}
	if _, err := checkOutboxes(path, online, cfg.Rounds, 0, p); err != nil {
		return res, err
	}
	res.Checked, err = checkOutboxes(path, offline, cfg.Rounds, cfg.Rounds, p)
	return res, err
}

// fanoutRound pushes p to every client in ids with one SendMany, as the
// round-th push to each, and waits until the client process has handled
// all of them and every receipt was acknowledged. It returns the pushes
// the client process has handled in all. On failure it adds whereIs of
// the first client whose receipt did not settle.
func fanoutRound(ctx context.Context, srv *reliable.Server, cl *child, ids []string, round int, p []byte, timeout time.Duration, whereIs func(id string) string) (FanoutRound, int64, error) {
	var res FanoutRound
	start := time.Now()
	rs, err := srv.SendMany(ctx, ids, reliable.OutgoingMessage{Payload: p})
	if err != nil {
		return res, 0, err
	}
	res.Commit = time.Since(start)
	if err := checkSeqs(rs, uint64(round)); err != nil {
		return res, 0, err
	}
	settled := make(chan error, 1)
	go func() {
		err := waitReceipts(ctx, rs)
		res.Settled = time.Since(start)
		settled <- err
	}()
	st, err := cl.call(timeout+time.Minute, "recv", strconv.Itoa(len(ids)*round), timeout.String())
	err = errors.Join(err, <-settled)
	if err != nil {
		i := slices.IndexFunc(rs, func(rc *reliable.Receipt) bool {
			select {
			case <-rc.Done():
				return false
			default:
				return true
			}
		})
		if i >= 0 {
			// A fan-out that never settles is a hang to see: the
			// goroutines go to stderr, as a child's do.
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			err = fmt.Errorf("%w; first unsettled: seq %d to %s (%s; server goroutines above)", err, rs[i].Seq(), ids[i], whereIs(ids[i]))
		}
		return res, st.Received, err
	}
	if st.Peers != len(ids) {
		return res, st.Received, fmt.Errorf("%d of %d clients handled a push", st.Peers, len(ids))
	}
	// The child's wall clock: the same machine's.
	res.Delivered = time.Unix(0, st.LastNS).Sub(start)
	return res, st.Received, nil
}
