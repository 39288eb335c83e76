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

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/reliable"
)

// Limits that bound every scenario in time even when a measurement stalls.
const (
	connectTimeout = 30 * time.Second // clients connected before a run starts
	drainTimeout   = 2 * time.Minute  // everything sent is acknowledged
	defaultRun     = 3 * time.Second  // Duration when neither it nor Count is set
	maxRun         = 10 * time.Minute // Duration when only Count is set
)

// Config describes one throughput or baseline run.
type Config struct {
	// Size is the payload size in bytes. Zero: 256.
	Size int
	// Senders is the number of goroutines sending. Zero: 1.
	Senders int
	// Clients is the number of clients (connections) the senders share:
	// sender i uses client i mod Clients. Zero: 1.
	Clients int
	// Batch, above 1, makes each sender queue Batch messages per call with
	// Client.SendBatch instead of one per Send (one commit for all of
	// them). Ignored by Baseline, which writes one message per payload.
	Batch int
	// Durable fsyncs on both sides (the library default); false sets
	// NoSync on the client and the server. Ignored by Baseline.
	Durable bool
	// Duration is how long the senders send. Count, if set, stops them
	// earlier. Zero with Count zero: 3 s; zero with Count set: at most
	// 10 minutes.
	Duration time.Duration
	// Count is the most messages sent in all. Zero: no count limit.
	Count int
	// Dir holds the run's temporary store files. Empty: os.TempDir().
	Dir string
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Size < 0 || c.Senders < 0 || c.Clients < 0 || c.Count < 0 || c.Duration < 0:
		return c, fmt.Errorf("bench: negative field in %+v", c)
	case c.Senders > 0 && c.Clients > c.Senders:
		return c, fmt.Errorf("bench: %d clients for %d senders", c.Clients, c.Senders)
	}
	if c.Size == 0 {
		c.Size = 256
	}
	c.Senders = max(c.Senders, 1)
	c.Clients = max(c.Clients, 1)
	if c.Duration == 0 {
		c.Duration = defaultRun
		if c.Count > 0 {
			c.Duration = maxRun
		}
	}
	return c, nil
}

// Mode names the durability setting: "durable" or "nosync".
func (c Config) Mode() string {
	if c.Durable {
		return "durable"
	}
	return "nosync"
}

// Result is the outcome of a throughput or baseline run.
type Result struct {
	// System is "gorilla" for the baseline, "wsreliable" for ours.
	System string
	// Config is the run's configuration with defaults filled in.
	Config Config
	// Messages is the number of messages that reached the server (for
	// wsreliable: were acknowledged).
	Messages int64
	// Elapsed runs from the first send until the server had (for
	// wsreliable: acknowledged) the last message.
	Elapsed time.Duration
}

// MsgsPerSec returns the message rate.
func (r Result) MsgsPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Messages) / r.Elapsed.Seconds()
}

// MBPerSec returns the payload rate in MB/s (10^6 bytes).
func (r Result) MBPerSec() float64 {
	return r.MsgsPerSec() * float64(r.Config.Size) / 1e6
}

// rig is a wsreliable server with connected clients, in a temp directory.
type rig struct {
	once    sync.Once
	closed  error
	dir     string
	t       tally
	srv     *reliableServer
	clients []*reliable.Client
}

func newRig(ctx context.Context, dir string, clients int, durable bool) (_ *rig, err error) {
	d, err := os.MkdirTemp(dir, "wsreliable-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	r := &rig{dir: d}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	r.srv, err = startReliableServer(ctx, "127.0.0.1:0", filepath.Join(d, "server.db"), r.t.handle,
		&reliable.ServerOptions{NoSync: !durable})
	if err != nil {
		return r, fmt.Errorf("bench: start server: %w", err)
	}
	for i := range clients {
		c, err := reliable.NewClient(r.srv.url, filepath.Join(d, fmt.Sprintf("client%d.db", i)),
			&reliable.ClientOptions{NoSync: !durable})
		if err != nil {
			return r, fmt.Errorf("bench: start client: %w", err)
		}
		r.clients = append(r.clients, c)
	}
	err = waitFor(ctx, connectTimeout, "clients to connect", func() bool {
		for _, c := range r.clients {
			if c.State() != reliable.StateConnected {
				return false
			}
		}
		return true
	})
	return r, err
}

// drain waits until every client's queue is acknowledged.
func (r *rig) drain(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	for _, c := range r.clients {
		if err := c.Drain(ctx); err != nil {
			return fmt.Errorf("bench: drain: %w", err)
		}
	}
	return nil
}

// close closes the clients, the server and removes the files; it is
// idempotent.
func (r *rig) close() error {
	r.once.Do(func() {
		var errs []error
		for _, c := range r.clients {
			errs = append(errs, c.Close())
		}
		if r.srv != nil {
			errs = append(errs, r.srv.close())
		}
		errs = append(errs, os.RemoveAll(r.dir))
		r.closed = errors.Join(errs...)
	})
	return r.closed
}

func payload(size int) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return p
}

// Throughput sends as fast as cfg.Senders goroutines can call
// Client.Send, spread over cfg.Clients clients, to one server, then waits
// until everything sent is acknowledged. Send blocks until its group
// commit is on disk, so with Durable the rate is bounded by the commit
// (fsync) latency times the messages sharing a commit. It fails if the
// server's handler saw a duplicate, a gap or a different count.
func Throughput(ctx context.Context, cfg Config) (Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Result{}, err
	}
	res := Result{System: "wsreliable", Config: cfg}
	r, err := newRig(ctx, cfg.Dir, cfg.Clients, cfg.Durable)
	if err != nil {
		return res, err
	}
	defer r.close()

	p := payload(cfg.Size)
	var (
		tickets atomic.Int64 // messages claimed by senders (Count)
		sent    atomic.Int64 // Send returned nil
		errOnce sync.Once
		sendErr error
		wg      sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	sctx, cancel := context.WithDeadline(ctx, deadline.Add(drainTimeout))
	defer cancel()
	for i := range cfg.Senders {
		c := r.clients[i%len(r.clients)]
		wg.Go(func() {
			n := max(cfg.Batch, 1)
			batch := make([]reliable.OutgoingMessage, n)
			for i := range batch {
				batch[i].Payload = p
			}
			for time.Now().Before(deadline) {
				if cfg.Count > 0 && tickets.Add(int64(n)) > int64(cfg.Count) {
					return
				}
				var err error
				if n == 1 {
					_, err = c.Send(sctx, p)
				} else {
					_, err = c.SendBatch(sctx, batch)
				}
				if err != nil {
					errOnce.Do(func() { sendErr = err })
					return
				}
				sent.Add(int64(n))
			}
		})
	}
	wg.Wait()
	if sendErr != nil {
		return res, fmt.Errorf("bench: send: %w", sendErr)
	}
	if err := r.drain(ctx); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start)
	res.Messages = sent.Load()
	if got := r.t.n.Load(); got != res.Messages {
		return res, fmt.Errorf("bench: server handled %d messages, clients sent %d", got, res.Messages)
	}
	if err := r.t.check(); err != nil {
		return res, err
	}
	return res, r.close()
}

// Baseline is the raw gorilla/websocket counterpart of Throughput: the
// same senders and connections write one binary WebSocket message per
// payload (senders sharing a connection take turns on a mutex, since a
// gorilla Conn allows one writer); the server reads and counts them. No
// acknowledgement, no disk. It ends when the server has read everything.
func Baseline(ctx context.Context, cfg Config) (Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Result{}, err
	}
	res := Result{System: "gorilla", Config: cfg}
	srv, err := startRawServer(ctx)
	if err != nil {
		return res, err
	}
	defer srv.close()
	conns := make([]*websocket.Conn, 0, cfg.Clients)
	defer func() {
		for _, ws := range conns {
			ws.Close()
		}
	}()
	d := websocket.Dialer{HandshakeTimeout: connectTimeout}
	for range cfg.Clients {
		ws, resp, err := d.DialContext(ctx, srv.url, nil)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err != nil {
			return res, fmt.Errorf("bench: dial: %w", err)
		}
		conns = append(conns, ws)
	}
	mus := make([]sync.Mutex, len(conns))
	p := payload(cfg.Size)
	var (
		tickets atomic.Int64
		sent    atomic.Int64
		errOnce sync.Once
		sendErr error
		wg      sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	for i := range cfg.Senders {
		ws, mu := conns[i%len(conns)], &mus[i%len(conns)]
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if cfg.Count > 0 && tickets.Add(1) > int64(cfg.Count) {
					return
				}
				mu.Lock()
				_ = ws.SetWriteDeadline(deadline.Add(drainTimeout))
				err := ws.WriteMessage(websocket.BinaryMessage, p)
				mu.Unlock()
				if err != nil {
					errOnce.Do(func() { sendErr = err })
					return
				}
				sent.Add(1)
			}
		})
	}
	wg.Wait()
	if sendErr != nil {
		return res, fmt.Errorf("bench: write: %w", sendErr)
	}
	res.Messages = sent.Load()
	if err := waitFor(ctx, drainTimeout, "the raw server to read everything", func() bool {
		return srv.n.Load() >= res.Messages
	}); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start)
	if got := srv.n.Load(); got != res.Messages {
		return res, fmt.Errorf("bench: raw server read %d messages, clients wrote %d", got, res.Messages)
	}
	return res, nil
}
