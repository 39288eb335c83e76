package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	// Push reverses the direction: the senders push from the server to
	// the clients (Server.Send, or Server.SendBatch with Batch; each
	// client's ClientOptions.Handler takes them), and Baseline's raw
	// server writes while its clients read.
	Push bool
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
	// Messages is the number of messages that reached the receiver (the
	// server, or the clients with Push; for wsreliable: were handled and
	// acknowledged).
	Messages int64
	// Elapsed runs from the first send until the receiver had (for
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
// Its tally counts what the receiving side's handlers saw: the server's,
// or with push the clients' (each under its own client ID).
type rig struct {
	once    sync.Once
	closed  error
	dir     string
	t       tally
	srv     *reliableServer
	clients []*reliable.Client
}

// newRig starts a server and clients; with push the clients take the
// server's pushes into the tally.
func newRig(ctx context.Context, dir string, clients int, durable, push bool) (_ *rig, err error) {
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
	// Pushes may be queued faster than one client takes them: the
	// outbox quota (10,000 by default) would then refuse them, which
	// measures the quota, not the throughput. Unbounded here.
	r.srv, err = startReliableServer(ctx, "127.0.0.1:0", filepath.Join(d, "server.db"), r.t.handle,
		&reliable.ServerOptions{NoSync: !durable, OutboxMaxMessages: -1, OutboxMaxBytes: -1})
	if err != nil {
		return r, fmt.Errorf("bench: start server: %w", err)
	}
	for i := range clients {
		opts := &reliable.ClientOptions{NoSync: !durable}
		if push {
			opts.Handler = r.t.handle
		}
		c, err := reliable.NewClient(r.srv.url, filepath.Join(d, fmt.Sprintf("client%d.db", i)), opts)
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
// (fsync) latency times the messages sharing a commit. With cfg.Push the
// senders call Server.Send for their client instead, and the run waits
// for every push's receipt. It fails if the receiving handlers saw a
// duplicate, a gap or a different count, or a push settled other than
// acknowledged.
func Throughput(ctx context.Context, cfg Config) (Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Result{}, err
	}
	res := Result{System: "wsreliable", Config: cfg}
	r, err := newRig(ctx, cfg.Dir, cfg.Clients, cfg.Durable, cfg.Push)
	if err != nil {
		return res, err
	}
	defer r.close()

	p := payload(cfg.Size)
	var (
		tickets  atomic.Int64 // messages claimed by senders (Count)
		sent     atomic.Int64 // Send returned nil
		errOnce  sync.Once
		sendErr  error
		wg       sync.WaitGroup
		receipts = make([][]*reliable.Receipt, cfg.Senders) // pushes, per sender
	)
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	sctx, cancel := context.WithDeadline(ctx, deadline.Add(drainTimeout))
	defer cancel()
	for i := range cfg.Senders {
		send := r.sender(sctx, r.clients[i%len(r.clients)], cfg, p, &receipts[i])
		n := max(cfg.Batch, 1)
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if cfg.Count > 0 && tickets.Add(int64(n)) > int64(cfg.Count) {
					return
				}
				if err := send(); err != nil {
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
	if cfg.Push {
		err = waitReceipts(ctx, slices.Concat(receipts...))
	} else {
		err = r.drain(ctx)
	}
	if err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start)
	res.Messages = sent.Load()
	if got := r.t.n.Load(); got != res.Messages {
		return res, fmt.Errorf("bench: handlers saw %d messages, %d were sent", got, res.Messages)
	}
	if err := r.t.check(); err != nil {
		return res, err
	}
	return res, r.close()
}

// sender returns the function one sender goroutine calls in a loop: a
// Send (or SendBatch) on c, or with cfg.Push a Server.Send to c whose
// receipt it appends to receipts.
func (r *rig) sender(ctx context.Context, c *reliable.Client, cfg Config, p []byte, receipts *[]*reliable.Receipt) func() error {
	switch {
	case cfg.Push && cfg.Batch > 1:
		srv, id := r.srv.srv, c.ID()
		batch := make([]reliable.OutgoingMessage, cfg.Batch)
		for i := range batch {
			batch[i].Payload = p
		}
		return func() error {
			rcs, err := srv.SendBatch(ctx, id, batch)
			if err == nil {
				*receipts = append(*receipts, rcs...)
			}
			return err
		}
	case cfg.Push:
		srv, id := r.srv.srv, c.ID()
		return func() error {
			rc, err := srv.Send(ctx, id, p)
			if err == nil {
				*receipts = append(*receipts, rc)
			}
			return err
		}
	case cfg.Batch > 1:
		batch := make([]reliable.OutgoingMessage, cfg.Batch)
		for i := range batch {
			batch[i].Payload = p
		}
		return func() error {
			_, err := c.SendBatch(ctx, batch)
			return err
		}
	}
	return func() error {
		_, err := c.Send(ctx, p)
		return err
	}
}

// waitReceipts waits for every receipt to settle, within drainTimeout,
// and fails unless each one was acknowledged.
func waitReceipts(ctx context.Context, rs []*reliable.Receipt) error {
	ctx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	for i, rc := range rs {
		if err := rc.Wait(ctx); err != nil {
			return fmt.Errorf("bench: receipt %d of %d (seq %d): %w", i+1, len(rs), rc.Seq(), err)
		}
	}
	return nil
}

// Baseline is the raw gorilla/websocket counterpart of Throughput: the
// same senders and connections write one binary WebSocket message per
// payload (senders sharing a connection take turns on a mutex, since a
// gorilla Conn allows one writer); the other side reads and counts them.
// With cfg.Push the server's side of each connection writes and the
// client's reads. No acknowledgement, no disk. It ends when the reading
// side has read everything.
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
	var (
		conns   = make([]*websocket.Conn, 0, cfg.Clients)
		readers sync.WaitGroup
		pushed  atomic.Int64 // read by the clients (Push)
	)
	defer func() {
		for _, ws := range conns {
			ws.Close()
		}
		readers.Wait()
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
	writers, read := conns, &srv.n
	if cfg.Push {
		if writers, err = srv.accepted(ctx, cfg.Clients); err != nil {
			return res, err
		}
		read = &pushed
		for _, ws := range conns {
			readers.Go(func() {
				for {
					if _, _, err := ws.ReadMessage(); err != nil {
						return
					}
					pushed.Add(1)
				}
			})
		}
	}
	mus := make([]sync.Mutex, len(writers))
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
		ws, mu := writers[i%len(writers)], &mus[i%len(writers)]
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
	if err := waitFor(ctx, drainTimeout, "the raw receivers to read everything", func() bool {
		return read.Load() >= res.Messages
	}); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start)
	if got := read.Load(); got != res.Messages {
		return res, fmt.Errorf("bench: raw receivers read %d messages, %d were written", got, res.Messages)
	}
	return res, nil
}
