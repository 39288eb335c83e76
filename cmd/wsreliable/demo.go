package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/wsreliable/wsreliable/internal/faultnet"
	"github.com/wsreliable/wsreliable/reliable"
)

// demoConfig holds the demo's flags.
type demoConfig struct {
	clients      int
	duration     time.Duration
	rate         int
	faultEvery   time.Duration
	drainTimeout time.Duration
	hbInterval   time.Duration
	hbTimeout    time.Duration
	seed         uint64
	noSync       bool
	verbose      bool
}

func runDemo(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", "[flags]", stderr)
	var cfg demoConfig
	fs.IntVar(&cfg.clients, "clients", 3, "number of clients, each with its own store")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long the clients send while faults are injected")
	fs.IntVar(&cfg.rate, "rate", 100, "messages per second per client")
	fs.DurationVar(&cfg.faultEvery, "fault-every", time.Second, "mean time between injected faults")
	fs.DurationVar(&cfg.drainTimeout, "drain-timeout", 20*time.Second, "how long to wait for the final acknowledgements")
	fs.DurationVar(&cfg.hbInterval, "heartbeat", 200*time.Millisecond, "heartbeat interval of clients and server")
	fs.DurationVar(&cfg.hbTimeout, "heartbeat-timeout", 300*time.Millisecond, "heartbeat timeout of clients and server")
	fs.Uint64Var(&cfg.seed, "seed", 0, "seed for the fault schedule; 0 picks one")
	fs.BoolVar(&cfg.noSync, "nosync", false, "skip fsync in the stores (faster; the demo restarts processes gracefully)")
	fs.BoolVar(&cfg.verbose, "v", false, "log connection events to stderr")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	switch {
	case cfg.clients < 1 || cfg.clients > 100:
		return usageError(fs, "-clients must be between 1 and 100")
	case cfg.duration <= 0 || cfg.duration > time.Hour:
		return usageError(fs, "-duration must be positive and at most 1h")
	case cfg.rate < 1 || cfg.rate > 10000:
		return usageError(fs, "-rate must be between 1 and 10000")
	case cfg.faultEvery < 10*time.Millisecond:
		return usageError(fs, "-fault-every must be at least 10ms")
	case cfg.drainTimeout <= 0:
		return usageError(fs, "-drain-timeout must be positive")
	case cfg.hbInterval <= 0 || cfg.hbTimeout <= 0:
		return usageError(fs, "-heartbeat and -heartbeat-timeout must be positive")
	}
	if cfg.seed == 0 {
		cfg.seed = rand.Uint64()%1_000_000 + 1
	}
	d := &demo{cfg: cfg, stdout: stdout, stderr: stderr}
	return d.run(ctx)
}

// demo is one run of the demo command.
type demo struct {
	cfg            demoConfig
	stdout, stderr io.Writer
	log            *slog.Logger
	dir            string
	url            string

	rec     recorder
	slots   []*clientSlot
	proxy   *faultnet.Proxy
	resets  atomic.Int64
	stalls  atomic.Int64
	refuses atomic.Int64
	restart atomic.Int64
}

// clientSlot is one simulated client process and what it confirmed.
type clientSlot struct {
	id   string
	path string

	mu       sync.Mutex
	c        *reliable.Client // the current instance
	past     reliable.Stats   // summed counters of closed instances
	sendErrs []error

	attempts  atomic.Uint64 // messages 0..attempts-1 were tried
	confirmed sync.Map      // index (uint64) → struct{}: Send returned nil
	nConf     atomic.Int64
	failed    atomic.Int64
}

// recorder is the demo server's handler: it records what each client's
// messages were and checks order and duplicates.
type recorder struct {
	mu        sync.Mutex
	seen      map[string]map[uint64]bool
	last      map[string]uint64 // highest index delivered + 1
	delivered int64
	dups      int64
	reorders  int64
	malformed int64
	examples  []string
}

func (r *recorder) handle(_ context.Context, m *reliable.Message) error {
	idx, err := strconv.ParseUint(string(m.Payload), 10, 64)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.malformed++
		return nil
	}
	if r.seen == nil {
		r.seen = map[string]map[uint64]bool{}
		r.last = map[string]uint64{}
	}
	s := r.seen[m.ClientID]
	if s == nil {
		s = map[uint64]bool{}
		r.seen[m.ClientID] = s
	}
	switch {
	case s[idx]:
		r.dups++
		r.example("%s: message %d delivered again", m.ClientID, idx)
		return nil
	case idx+1 < r.last[m.ClientID]:
		r.reorders++
		r.example("%s: message %d delivered after %d", m.ClientID, idx, r.last[m.ClientID]-1)
	}
	s[idx] = true
	r.delivered++
	r.last[m.ClientID] = max(r.last[m.ClientID], idx+1)
	return nil
}

func (r *recorder) example(format string, a ...any) {
	if len(r.examples) < 5 {
		r.examples = append(r.examples, fmt.Sprintf(format, a...))
	}
}

func (r *recorder) counts() (delivered, dups int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.delivered, r.dups
}

func (d *demo) run(ctx context.Context) int {
	cfg := d.cfg
	fail := func(format string, a ...any) int {
		fmt.Fprintf(d.stderr, "wsreliable demo: "+format+"\n", a...)
		return exitFail
	}
	d.log = slog.New(slog.DiscardHandler)
	if cfg.verbose {
		d.log = newLogger(d.stderr, slog.LevelInfo, false)
	}
	var err error
	d.dir, err = os.MkdirTemp("", "wsreliable-demo-")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(d.dir)

	// The server, on loopback.
	srv, err := reliable.NewServer(filepath.Join(d.dir, "server.db"), d.rec.handle, &reliable.ServerOptions{
		HeartbeatInterval: cfg.hbInterval,
		HeartbeatTimeout:  cfg.hbTimeout,
		NoSync:            cfg.noSync,
		Logger:            d.log.With("side", "server"),
	})
	if err != nil {
		return fail("%v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return fail("%v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelDebug)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = hs.Serve(ln)
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			fmt.Fprintf(d.stderr, "wsreliable demo: server shutdown: %v\n", err)
		}
		if err := hs.Shutdown(sctx); err != nil {
			hs.Close()
		}
		<-served
	}()

	// The proxy every client goes through.
	d.proxy, err = faultnet.Listen(ln.Addr().String())
	if err != nil {
		return fail("%v", err)
	}
	defer d.proxy.Close()
	d.url = "ws://" + d.proxy.Addr() + "/ws"

	d.slots = make([]*clientSlot, cfg.clients)
	for i := range d.slots {
		s := &clientSlot{id: fmt.Sprintf("client-%d", i+1), path: filepath.Join(d.dir, fmt.Sprintf("client-%d.db", i+1))}
		if s.c, err = d.open(s); err != nil {
			d.closeClients()
			return fail("%v", err)
		}
		d.slots[i] = s
	}
	defer d.closeClients()

	fmt.Fprintf(d.stderr, "wsreliable demo: %d clients -> proxy %s -> server %s, %v at %d msg/s each, seed %d\n",
		cfg.clients, d.proxy.Addr(), ln.Addr(), cfg.duration, cfg.rate, cfg.seed)

	start := time.Now()
	sendCtx, stopSending := context.WithTimeout(ctx, cfg.duration)
	defer stopSending()
	progressDone := make(chan struct{})
	stopProgress := d.progress(start, progressDone)

	var wg sync.WaitGroup
	for i, s := range d.slots {
		// Client 1 is restarted (closed and reopened on its store) midway.
		restartAt := time.Duration(0)
		if i == 0 {
			restartAt = cfg.duration / 2
		}
		wg.Go(func() { d.sendLoop(sendCtx, s, start, restartAt) })
	}
	wg.Go(func() { d.injectFaults(sendCtx) })
	wg.Wait()

	// Heal the network and wait for every confirmed message.
	d.proxy.Refuse(false)
	d.proxy.Resume()
	drainErrs := d.drainAll(ctx)
	close(progressDone)
	stopProgress()

	res := d.tally(time.Since(start), drainErrs)
	if ctx.Err() != nil {
		fmt.Fprintf(d.stderr, "wsreliable demo: interrupted (%v)\n", context.Cause(ctx))
		return interruptCode(ctx)
	}
	if !res {
		return exitFail
	}
	return exitOK
}

// open starts a client on s's store, through the proxy.
func (d *demo) open(s *clientSlot) (*reliable.Client, error) {
	return reliable.NewClient(d.url, s.path, &reliable.ClientOptions{
		ClientID:          s.id,
		HeartbeatInterval: d.cfg.hbInterval,
		HeartbeatTimeout:  d.cfg.hbTimeout,
		HandshakeTimeout:  time.Second,
		BackoffMin:        50 * time.Millisecond,
		BackoffMax:        500 * time.Millisecond,
		HealthyAfter:      time.Second,
		NoSync:            d.cfg.noSync,
		Logger:            d.log.With("side", s.id),
	})
}

// closeClients closes every client still open.
func (d *demo) closeClients() {
	for _, s := range d.slots {
		if s == nil {
			continue
		}
		s.mu.Lock()
		if s.c != nil {
			s.past = addStats(s.past, s.c.Stats())
			if err := s.c.Close(); err != nil {
				fmt.Fprintf(d.stderr, "wsreliable demo: %s: close: %v\n", s.id, err)
			}
			s.c = nil
		}
		s.mu.Unlock()
	}
}

func addStats(a, b reliable.Stats) reliable.Stats {
	a.Acked += b.Acked
	a.Rejected += b.Rejected
	a.Redelivered += b.Redelivered
	a.Reconnects += b.Reconnects
	return a
}

// stats returns s's counters summed over its instances, and its state.
func (s *clientSlot) stats() (reliable.Stats, reliable.State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.past
	state := reliable.StateClosed
	if s.c != nil {
		cur := s.c.Stats()
		st = addStats(st, cur)
		state = cur.State
	}
	return st, state
}

// sendLoop sends numbered messages at the configured rate until ctx ends,
// restarting the client once at restartAt if it is not zero.
func (d *demo) sendLoop(ctx context.Context, s *clientSlot, start time.Time, restartAt time.Duration) {
	tick := time.NewTicker(time.Second / time.Duration(d.cfg.rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if restartAt > 0 && time.Since(start) >= restartAt {
			restartAt = 0
			if err := d.restartClient(s); err != nil {
				s.mu.Lock()
				s.sendErrs = append(s.sendErrs, err)
				s.mu.Unlock()
				return
			}
		}
		s.mu.Lock()
		c := s.c
		s.mu.Unlock()
		idx := s.attempts.Add(1) - 1
		_, err := c.Send(ctx, []byte(strconv.FormatUint(idx, 10)))
		if err != nil {
			if ctx.Err() != nil {
				return // the sending phase ended during Send; not queued
			}
			s.failed.Add(1)
			s.mu.Lock()
			if len(s.sendErrs) < 3 {
				s.sendErrs = append(s.sendErrs, err)
			}
			s.mu.Unlock()
			continue
		}
		s.confirmed.Store(idx, struct{}{})
		s.nConf.Add(1)
	}
}

// restartClient closes s's client, as a process exit would, and opens a
// new one on the same store. Unacknowledged messages must be replayed by
// the new instance.
func (d *demo) restartClient(s *clientSlot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	queued := s.c.Stats().Queued
	s.past = addStats(s.past, s.c.Stats())
	if err := s.c.Close(); err != nil {
		s.c = nil
		return fmt.Errorf("restart: close: %w", err)
	}
	c, err := d.open(s)
	if err != nil {
		s.c = nil
		return fmt.Errorf("restart: reopen: %w", err)
	}
	s.c = c
	d.restart.Add(1)
	d.log.Info("client restarted", "client", s.id, "unacknowledged", queued)
	return nil
}

// injectFaults resets, stalls and refuses connections at random until ctx
// ends, and leaves the proxy healed.
func (d *demo) injectFaults(ctx context.Context) {
	rng := rand.New(rand.NewPCG(d.cfg.seed, 0x5eed))
	jitter := func(base time.Duration) time.Duration {
		return base/2 + time.Duration(rng.Int64N(int64(base)))
	}
	sleep := func(t time.Duration) bool {
		timer := time.NewTimer(t)
		defer timer.Stop()
		select {
		case <-timer.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	defer func() {
		d.proxy.Refuse(false)
		d.proxy.Resume()
	}()
	for sleep(jitter(d.cfg.faultEvery)) {
		switch rng.IntN(3) {
		case 0: // connection reset
			d.resets.Add(1)
			d.proxy.Reset()
		case 1: // half-open link: only heartbeats can tell
			d.stalls.Add(1)
			d.proxy.Stall()
			sleep(jitter(600 * time.Millisecond))
			d.proxy.Resume()
		case 2: // server unreachable for a while
			d.refuses.Add(1)
			d.proxy.Refuse(true)
			d.proxy.Reset()
			sleep(jitter(400 * time.Millisecond))
			d.proxy.Refuse(false)
		}
	}
}

// drainAll waits until every client's queue is acknowledged.
func (d *demo) drainAll(ctx context.Context) []error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.drainTimeout)
	defer cancel()
	errs := make([]error, len(d.slots))
	var wg sync.WaitGroup
	for i, s := range d.slots {
		s.mu.Lock()
		c := s.c
		s.mu.Unlock()
		if c == nil {
			errs[i] = fmt.Errorf("%s: no client", s.id)
			continue
		}
		wg.Go(func() {
			if err := c.Drain(ctx); err != nil {
				errs[i] = fmt.Errorf("%s: drain: %w (%d still queued)", s.id, err, c.Stats().Queued)
			}
		})
	}
	wg.Wait()
	return errs
}

// progress reports on stderr until done is closed: a line rewritten in
// place on a terminal, else a line a second. The returned function waits
// for the reporter to finish.
func (d *demo) progress(start time.Time, done <-chan struct{}) func() {
	tty := isTerminal(d.stderr)
	every := time.Second
	if tty {
		every = 200 * time.Millisecond
	}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-done:
				if tty {
					fmt.Fprintf(d.stderr, "\r%s\x1b[K\n", d.progressLine(start))
				}
				return
			}
			if tty {
				fmt.Fprintf(d.stderr, "\r%s\x1b[K", d.progressLine(start))
			} else {
				fmt.Fprintln(d.stderr, d.progressLine(start))
			}
		}
	}()
	return func() { <-finished }
}

func (d *demo) progressLine(start time.Time) string {
	var sent int64
	var reconnects uint64
	states := make([]string, len(d.slots))
	for i, s := range d.slots {
		sent += s.nConf.Load()
		st, state := s.stats()
		reconnects += st.Reconnects
		states[i] = state.String()
	}
	delivered, dups := d.rec.counts()
	return fmt.Sprintf("%5.1fs  sent %d  delivered %d  duplicates %d  faults %d  reconnects %d  [%s]",
		time.Since(start).Seconds(), sent, delivered, dups, d.faults(), reconnects, strings.Join(states, " "))
}

func (d *demo) faults() int64 { return d.resets.Load() + d.stalls.Load() + d.refuses.Load() }

// tally prints the final counts on stdout and reports whether the run
// passed: nothing lost, doubled or reordered, every queue drained.
func (d *demo) tally(elapsed time.Duration, drainErrs []error) bool {
	var sent, failed, lost, unconfirmed int64
	var st reliable.Stats
	var lostExamples []string
	d.rec.mu.Lock()
	for _, s := range d.slots {
		sent += s.nConf.Load()
		failed += s.failed.Load()
		seen := d.rec.seen[s.id]
		s.confirmed.Range(func(k, _ any) bool {
			if idx := k.(uint64); !seen[idx] {
				lost++
				if len(lostExamples) < 5 {
					lostExamples = append(lostExamples, fmt.Sprintf("%s: message %d", s.id, idx))
				}
			}
			return true
		})
		for idx := range seen {
			if _, ok := s.confirmed.Load(idx); !ok {
				unconfirmed++
			}
		}
		cst, _ := s.stats()
		st = addStats(st, cst)
	}
	delivered, dups, reorders, malformed := d.rec.delivered, d.rec.dups, d.rec.reorders, d.rec.malformed
	examples := d.rec.examples
	d.rec.mu.Unlock()

	ok := lost == 0 && dups == 0 && reorders == 0 && malformed == 0
	for _, err := range drainErrs {
		if err != nil {
			ok = false
			fmt.Fprintf(d.stderr, "wsreliable demo: %v\n", err)
		}
	}
	for _, s := range d.slots {
		for _, err := range s.sendErrs {
			fmt.Fprintf(d.stderr, "wsreliable demo: %s: send failed: %v\n", s.id, err)
		}
	}
	for _, e := range append(examples, lostExamples...) {
		fmt.Fprintf(d.stderr, "wsreliable demo: %s\n", e)
	}

	tw := tabwriter.NewWriter(d.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "clients:\t%d (%d restarted midway)\n", d.cfg.clients, d.restart.Load())
	fmt.Fprintf(tw, "elapsed:\t%.1fs\n", elapsed.Seconds())
	fmt.Fprintf(tw, "sent:\t%d\t(Send returned nil)\n", sent)
	if failed > 0 {
		fmt.Fprintf(tw, "send errors:\t%d\t(not queued, not counted as sent)\n", failed)
	}
	fmt.Fprintf(tw, "delivered:\t%d\n", delivered)
	fmt.Fprintf(tw, "duplicates:\t%d\n", dups)
	fmt.Fprintf(tw, "out of order:\t%d\n", reorders)
	fmt.Fprintf(tw, "lost:\t%d\n", lost)
	if unconfirmed > 0 {
		fmt.Fprintf(tw, "unconfirmed:\t%d\t(delivered although Send failed)\n", unconfirmed)
	}
	if malformed > 0 {
		fmt.Fprintf(tw, "malformed:\t%d\n", malformed)
	}
	fmt.Fprintf(tw, "reconnects:\t%d\n", st.Reconnects)
	fmt.Fprintf(tw, "redelivered:\t%d\t(sent again after a reconnect)\n", st.Redelivered)
	fmt.Fprintf(tw, "faults:\t%d\t(%d resets, %d stalls, %d refusals)\n",
		d.faults(), d.resets.Load(), d.stalls.Load(), d.refuses.Load())
	fmt.Fprintf(tw, "seed:\t%d\n", d.cfg.seed)
	result := "PASS"
	if !ok {
		result = "FAIL"
	}
	fmt.Fprintf(tw, "result:\t%s\n", result)
	_ = tw.Flush()
	return ok
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
