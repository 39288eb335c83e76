package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
)

// ChildArg, as the first argument of [Main], selects the hidden child
// mode used by the memory, storm, fanout, offline and attack scenarios.
const ChildArg = "__bench-child"

// ChildEnv is set to "1" in the environment of every child process, so a
// program that does not route its arguments to [Main] unchanged (a test
// binary) can recognise a child and call Main with the arguments from
// ChildArg on.
const ChildEnv = "WSRELIABLE_BENCH_CHILD"

// Launcher tells how to start a copy of the running program in child mode:
// Path, then Args, then [ChildArg] and the child's own arguments.
type Launcher struct {
	// Path is the executable. Empty: os.Executable().
	Path string
	// Args come before ChildArg, e.g. ["bench"] when Main is the "bench"
	// command of its program.
	Args []string
	// Stderr receives the child's standard error. Nil: os.Stderr.
	Stderr io.Writer
}

// Bounds of the conversation with a child.
const (
	childReplyTimeout = 5 * time.Minute // the slowest command: connecting 10,000 clients
	childExitTimeout  = time.Minute
)

// child is a running child process that answers one JSON line per command.
type child struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	ctx   context.Context
}

// childStatus is every answer a child gives; fields not relevant to the
// command are zero.
type childStatus struct {
	URL        string         `json:"url,omitempty"`
	Conns      int            `json:"conns,omitempty"`        // open connections (clients: connected)
	Failed     int            `json:"failed,omitempty"`       // connections that could not be opened
	RSS        int64          `json:"rss,omitempty"`          // VmRSS
	RSSAfterGC int64          `json:"rss_after_gc,omitempty"` // VmRSS after GC and FreeOSMemory
	Sent       int            `json:"sent,omitempty"`
	Acked      int            `json:"acked,omitempty"`
	SendErrors int            `json:"send_errors,omitempty"`
	Attempts   int64          `json:"attempts,omitempty"` // failed connect attempts since mark, refused excluded
	Refused    int64          `json:"refused,omitempty"`  // connection refused since mark
	Errors     map[string]int `json:"errors,omitempty"`   // failed attempts by error text (sample)
	NoFile     uint64         `json:"nofile,omitempty"`
	Mem        *MemSample     `json:"mem,omitempty"`      // after GC and FreeOSMemory
	Pushed     int            `json:"pushed,omitempty"`   // pushes committed (server "push")
	Took       time.Duration  `json:"took,omitempty"`     // how long a command's work took
	Received   int64          `json:"received,omitempty"` // pushes handled (clients with -push)
	Peers      int            `json:"peers,omitempty"`    // clients that handled a push
	LastNS     int64          `json:"last_ns,omitempty"`  // wall clock (UnixNano) of the last push handled
	Detail     string         `json:"detail,omitempty"`   // a description (command "client")
	P50        time.Duration  `json:"p50,omitempty"`      // latency percentiles (honest "measure")
	P99        time.Duration  `json:"p99,omitempty"`
	Sessions   int64          `json:"sessions,omitempty"` // sessions opened (attackers "stop")
}

// executable returns path, or this program's executable if path is empty.
func executable(path string) (string, error) {
	if path != "" {
		return path, nil
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("bench: find executable: %w", err)
	}
	return p, nil
}

// command returns the command that runs this program in child mode with
// args.
func (l Launcher) command(ctx context.Context, args ...string) (*exec.Cmd, error) {
	path, err := executable(l.Path)
	if err != nil {
		return nil, err
	}
	argv := append(append(slices.Clone(l.Args), ChildArg), args...)
	cmd := exec.CommandContext(ctx, path, argv...)
	cmd.Env = append(os.Environ(), ChildEnv+"=1")
	return cmd, nil
}

func (l Launcher) start(ctx context.Context, args ...string) (*child, error) {
	cmd, err := l.command(ctx, args...)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = l.Stderr
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	cmd.WaitDelay = 10 * time.Second
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: child stdin: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: child stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start child %s: %w", cmd.Path, err)
	}
	c := &child{cmd: cmd, in: in, lines: make(chan string, 16), ctx: ctx}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	return c, nil
}

// reply waits for the child's next answer.
func (c *child) reply(timeout time.Duration) (childStatus, error) {
	var st childStatus
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-c.lines:
		if !ok {
			return st, errors.New("bench: child exited")
		}
		if msg, ok := strings.CutPrefix(line, "err "); ok {
			return st, fmt.Errorf("bench: child: %s", msg)
		}
		js, ok := strings.CutPrefix(line, "ok ")
		if !ok {
			return st, fmt.Errorf("bench: child said %q", line)
		}
		if err := json.Unmarshal([]byte(js), &st); err != nil {
			return st, fmt.Errorf("bench: child answer %q: %w", line, err)
		}
		return st, nil
	case <-t.C:
		return st, fmt.Errorf("bench: child did not answer within %v", timeout)
	case <-c.ctx.Done():
		return st, c.ctx.Err()
	}
}

// call sends one command and waits for its answer.
func (c *child) call(timeout time.Duration, cmd ...string) (childStatus, error) {
	if _, err := io.WriteString(c.in, strings.Join(cmd, " ")+"\n"); err != nil {
		return childStatus{}, fmt.Errorf("bench: child %s: %w", cmd[0], err)
	}
	return c.reply(timeout)
}

// stop asks the child to quit (by closing its stdin), kills it if it does
// not exit in time, and waits for it.
func (c *child) stop() error {
	_ = c.in.Close()
	t := time.NewTimer(childExitTimeout)
	defer t.Stop()
	for done := false; !done; {
		select {
		case _, ok := <-c.lines:
			done = !ok
		case <-t.C:
			_ = c.cmd.Process.Kill()
			for range c.lines {
			}
			done = true
		}
	}
	return c.cmd.Wait()
}

// runChild is the child side: args are the child's arguments after
// ChildArg. It answers commands read from stdin, one line each, until
// "quit" or EOF.
func runChild(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "bench child: missing mode (server, clients, attackers or honest)")
		return 2
	}
	switch args[0] {
	case pipeServerMode, pipeClientMode:
		return runPipeChild(ctx, args, stdin, stdout, stderr)
	}
	fs := flag.NewFlagSet("bench child "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	kind := fs.String("kind", "wsreliable", "gorilla or wsreliable")
	dir := fs.String("dir", "", "directory for the server's store")
	url := fs.String("url", "", "server URL (clients)")
	n := fs.Int("n", 0, "number of clients")
	healthy := fs.Duration("healthy", 0, "ClientOptions.HealthyAfter (0: library default)")
	push := fs.String("push", "", "clients take pushes, named `PREFIX`000000, PREFIX000001, …")
	kinds := fs.String("kinds", strings.Join(AttackKinds, ","), "attacks, comma-separated (attackers)")
	durable := fs.Bool("durable", false, "fsync the client's store (honest)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	var (
		cmds map[string]func([]string) (childStatus, error)
		st   childStatus
		stop func() error
		err  error
	)
	nofile, nerr := raiseNoFile()
	switch {
	case nerr != nil:
		err = nerr
	case args[0] == "server":
		cmds, st, stop, err = childServer(ctx, *kind, *dir)
	case args[0] == "clients":
		cmds, st, stop, err = childClients(ctx, *kind, *url, *n, *healthy, *push)
	case args[0] == attackersMode:
		cmds, st, stop, err = childAttackers(*url, *n, strings.Split(*kinds, ","))
	case args[0] == honestMode:
		cmds, st, stop, err = childHonest(ctx, *url, *dir, *durable)
	default:
		err = fmt.Errorf("unknown mode %q", args[0])
	}
	out := bufio.NewWriter(stdout)
	answer := func(st childStatus, err error) {
		if err != nil {
			fmt.Fprintf(out, "err %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			js, _ := json.Marshal(st)
			fmt.Fprintf(out, "ok %s\n", js)
		}
		out.Flush()
	}
	st.NoFile = nofile
	answer(st, err)
	if err != nil {
		return 1
	}
	defer func() {
		if err := stop(); err != nil {
			fmt.Fprintf(stderr, "bench child %s: %v\n", args[0], err)
			code = 1
		}
	}()
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "quit" {
			return 0
		}
		fn, ok := cmds[f[0]]
		if !ok {
			answer(childStatus{}, fmt.Errorf("unknown command %q", f[0]))
			continue
		}
		answer(fn(f[1:]))
	}
	return 0
}

// childServer runs a raw gorilla or a wsreliable server and reports its
// memory on "rss".
func childServer(ctx context.Context, kind, dir string) (map[string]func([]string) (childStatus, error), childStatus, func() error, error) {
	var (
		url   string
		conns func() int
		stop  func() error
		srv   *reliable.Server
		store *queue.Bolt
	)
	switch kind {
	case "gorilla":
		s, err := startRawServer(ctx)
		if err != nil {
			return nil, childStatus{}, nil, err
		}
		url, stop = s.url, func() error { s.close(); return nil }
		conns = func() int { return int(s.open.Load()) }
	case "wsreliable":
		if dir == "" {
			return nil, childStatus{}, nil, errors.New("-dir is required")
		}
		// The store is opened here, with the options NewServer would
		// give it (a server without OnSettled), so that "drain" can
		// acknowledge pushes without clients.
		b, err := queue.Open(filepath.Join(dir, "server.db"), &queue.Options{SettleReported: true})
		if err != nil {
			return nil, childStatus{}, nil, err
		}
		var t tally
		s, err := startReliableServer(ctx, "127.0.0.1:0", "", t.handle, &reliable.ServerOptions{Store: b})
		if err != nil {
			return nil, childStatus{}, nil, errors.Join(err, b.Close())
		}
		url, srv, store = s.url, s.srv, b
		stop = func() error { return errors.Join(s.close(), b.Close()) }
		conns = func() int { return s.srv.Stats().Sessions }
	default:
		return nil, childStatus{}, nil, fmt.Errorf("unknown kind %q", kind)
	}
	cmds := map[string]func([]string) (childStatus, error){
		"rss": func([]string) (childStatus, error) {
			var st childStatus
			var err error
			if st.RSS, err = rss(); err != nil {
				return st, err
			}
			runtime.GC()
			debug.FreeOSMemory()
			m, err := memStatus()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			m.Heap = int64(ms.HeapInuse)
			st.RSSAfterGC, st.Mem = m.RSS, &m
			st.Conns = conns()
			return st, err
		},
	}
	if srv != nil {
		// push CLIENTS ROUNDS CHUNK SIZE PREFIX: see pushRounds.
		cmds["push"] = func(args []string) (childStatus, error) {
			var n [4]int
			if len(args) != len(n)+1 {
				return childStatus{}, fmt.Errorf("push wants CLIENTS ROUNDS CHUNK SIZE PREFIX, got %q", args)
			}
			for i := range n {
				v, err := strconv.Atoi(args[i])
				if err != nil || v <= 0 {
					return childStatus{}, fmt.Errorf("push: argument %d: %q is not a positive number", i+1, args[i])
				}
				n[i] = v
			}
			start := time.Now()
			pushed, err := pushRounds(ctx, srv, clientNames(args[4], n[0]), n[1], n[2], payload(n[3]))
			return childStatus{Pushed: pushed, Took: time.Since(start)}, err
		}
		// drain CLIENTS PREFIX: see ackOutboxes.
		cmds["drain"] = func(args []string) (childStatus, error) {
			if len(args) != 2 {
				return childStatus{}, fmt.Errorf("drain wants CLIENTS PREFIX, got %q", args)
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n <= 0 {
				return childStatus{}, fmt.Errorf("drain: %q is not a positive number", args[0])
			}
			start := time.Now()
			acked, err := ackOutboxes(ctx, store, clientNames(args[1], n))
			return childStatus{Acked: acked, Took: time.Since(start)}, err
		}
	}
	return cmds, childStatus{URL: url}, stop, nil
}

// clientSet is the client side of the memory, storm and fanout scenarios.
type clientSet struct {
	raw      []*websocket.Conn
	rel      []*reliable.Client
	receipts []*reliable.Receipt

	attempts atomic.Int64 // failed connect attempts since mark, refused excluded
	refused  atomic.Int64
	mu       sync.Mutex
	errs     map[string]int

	pushes tally        // pushes handled, by client (with -push)
	last   atomic.Int64 // wall clock (UnixNano) of the last push handled
}

// handlePush is the clients' Handler with -push.
func (cs *clientSet) handlePush(ctx context.Context, m *reliable.Message) error {
	err := cs.pushes.handle(ctx, m)
	cs.last.Store(time.Now().UnixNano())
	return err
}

// laggards describes the n clients whose pushes are furthest behind.
func (cs *clientSet) laggards(n int) string {
	cs.pushes.mu.Lock()
	last := maps.Clone(cs.pushes.last)
	cs.pushes.mu.Unlock()
	behind := slices.Clone(cs.rel)
	slices.SortStableFunc(behind, func(a, b *reliable.Client) int { return cmp.Compare(last[a.ID()], last[b.ID()]) })
	var b strings.Builder
	for i, c := range behind[:min(n, len(behind))] {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(describeClient(c, last[c.ID()]))
	}
	return b.String()
}

// describeClient says where client c stands; lastSeq is the last push its
// Handler took.
func describeClient(c *reliable.Client, lastSeq uint64) string {
	st := c.Stats()
	return fmt.Sprintf("%s handled up to seq %d, %v, %d reconnects, %d pushes received", c.ID(), lastSeq, st.State, st.Reconnects, st.Received)
}

// failedAttempt records a connect attempt that failed with err.
func (cs *clientSet) failedAttempt(err error) {
	if errors.Is(err, syscall.ECONNREFUSED) {
		cs.refused.Add(1)
		return
	}
	cs.attempts.Add(1)
	cs.mu.Lock()
	if msg := fmt.Sprint(err); len(cs.errs) < 8 || cs.errs[msg] > 0 {
		cs.errs[msg]++
	}
	cs.mu.Unlock()
}

func (cs *clientSet) connected() int {
	n := len(cs.raw)
	for _, c := range cs.rel {
		if c.State() == reliable.StateConnected {
			n++
		}
	}
	return n
}

// childClients opens n connections to url: raw gorilla ones, or
// wsreliable clients with in-memory stores (only the server is measured),
// which take pushes as clientNames(push, n) if push is not empty.
func childClients(ctx context.Context, kind, url string, n int, healthy time.Duration, push string) (map[string]func([]string) (childStatus, error), childStatus, func() error, error) {
	cs := &clientSet{errs: make(map[string]int)}
	var st childStatus
	switch kind {
	case "gorilla":
		st.Failed = cs.dialRaw(ctx, url, n)
	case "wsreliable":
		if err := cs.startReliable(ctx, url, n, healthy, push); err != nil {
			cs.close()
			return nil, st, nil, err
		}
	default:
		return nil, st, nil, fmt.Errorf("unknown kind %q", kind)
	}
	st.Conns = cs.connected()
	st.RSS, _ = rss()
	p := payload(64)
	cmds := map[string]func([]string) (childStatus, error){
		"rss": func([]string) (childStatus, error) {
			r, err := rss()
			return childStatus{RSS: r, Conns: cs.connected()}, err
		},
		// send: every client sends one message (queued while the server
		// is down); receipts are kept for "wait".
		"send": func([]string) (childStatus, error) {
			sctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			var st childStatus
			rs := make([]*reliable.Receipt, len(cs.rel))
			errs := make([]error, len(cs.rel))
			parallel(16, len(cs.rel), func(i int) {
				rs[i], errs[i] = cs.rel[i].Send(sctx, p)
			})
			for i, r := range rs {
				if errs[i] != nil {
					st.SendErrors++
					continue
				}
				cs.receipts = append(cs.receipts, r)
				st.Sent++
			}
			return st, nil
		},
		// wait DURATION: wait for every receipt so far to settle.
		"wait": func(args []string) (childStatus, error) {
			d := time.Minute
			if len(args) > 0 {
				if v, err := time.ParseDuration(args[0]); err == nil {
					d = v
				}
			}
			wctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			var st childStatus
			for _, r := range cs.receipts {
				if r.Wait(wctx) == nil {
					st.Acked++
				} else {
					st.SendErrors++
				}
			}
			cs.receipts = nil
			return st, nil
		},
		// mark: start counting failed connect attempts afresh.
		"mark": func([]string) (childStatus, error) {
			cs.attempts.Store(0)
			cs.refused.Store(0)
			cs.mu.Lock()
			clear(cs.errs)
			cs.mu.Unlock()
			return childStatus{}, nil
		},
		// recv N TIMEOUT: wait until N pushes in all have been handled;
		// fails on a duplicate or a gap in any client's stream, or if
		// more than N arrived.
		"recv": func(args []string) (childStatus, error) {
			if len(args) != 2 {
				return childStatus{}, fmt.Errorf("recv wants N TIMEOUT, got %q", args)
			}
			want, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return childStatus{}, fmt.Errorf("recv: %w", err)
			}
			d, err := time.ParseDuration(args[1])
			if err != nil {
				return childStatus{}, fmt.Errorf("recv: %w", err)
			}
			err = waitFor(ctx, d, "pushes to be handled", func() bool { return cs.pushes.n.Load() >= want })
			st := childStatus{Received: cs.pushes.n.Load(), Peers: cs.pushes.peers(), LastNS: cs.last.Load()}
			switch {
			case err != nil:
				return st, fmt.Errorf("%w (%d of %d handled; furthest behind: %s)", err, st.Received, want, cs.laggards(5))
			case st.Received != want:
				return st, fmt.Errorf("%d pushes handled, want %d", st.Received, want)
			}
			return st, cs.pushes.check()
		},
		// client ID: where one client stands (for a failure's message).
		"client": func(args []string) (childStatus, error) {
			for _, c := range cs.rel {
				if len(args) == 1 && c.ID() == args[0] {
					cs.pushes.mu.Lock()
					last := cs.pushes.last[c.ID()]
					cs.pushes.mu.Unlock()
					return childStatus{Detail: describeClient(c, last)}, nil
				}
			}
			return childStatus{}, fmt.Errorf("client wants the ID of one of the clients, got %q", args)
		},
		"stats": func([]string) (childStatus, error) {
			st := childStatus{Conns: cs.connected(), Attempts: cs.attempts.Load(), Refused: cs.refused.Load()}
			cs.mu.Lock()
			st.Errors = maps.Clone(cs.errs)
			cs.mu.Unlock()
			return st, nil
		},
	}
	return cmds, st, cs.close, nil
}

// dialRaw opens n gorilla connections with a few dialers in parallel and
// returns how many failed.
func (cs *clientSet) dialRaw(ctx context.Context, url string, n int) int {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conns := make([]*websocket.Conn, n)
	parallel(8, n, func(i int) {
		ws, resp, err := d.DialContext(ctx, url, nil)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err == nil {
			conns[i] = ws
		}
	})
	failed := 0
	for _, ws := range conns {
		if ws == nil {
			failed++
			continue
		}
		cs.raw = append(cs.raw, ws)
	}
	return failed
}

// startReliable starts n wsreliable clients in batches, waiting for each
// batch to connect, so the server's accept queue is not the bottleneck.
// With push not empty they take pushes, as clientNames(push, n).
func (cs *clientSet) startReliable(ctx context.Context, url string, n int, healthy time.Duration, push string) error {
	const batch = 250
	var names []string
	if push != "" {
		names = clientNames(push, n)
	}
	for len(cs.rel) < n {
		from := len(cs.rel)
		for i := range min(batch, n-from) {
			var prev reliable.State
			opts := &reliable.ClientOptions{
				Store:        queue.NewMemory(nil),
				HealthyAfter: healthy,
				// Called from the client's connection goroutine only, so
				// prev needs no lock.
				OnStateChange: func(s reliable.State, err error) {
					if s == reliable.StateDisconnected && prev == reliable.StateConnecting {
						cs.failedAttempt(err)
					}
					prev = s
				},
			}
			if names != nil {
				opts.ClientID, opts.Handler = names[from+i], cs.handlePush
			}
			c, err := reliable.NewClient(url, "", opts)
			if err != nil {
				return err
			}
			cs.rel = append(cs.rel, c)
		}
		if err := waitFor(ctx, 2*time.Minute, "clients to connect", func() bool {
			for _, c := range cs.rel[from:] {
				if c.State() != reliable.StateConnected {
					return false
				}
			}
			return true
		}); err != nil {
			return fmt.Errorf("%w (%d of %d started)", err, len(cs.rel), n)
		}
	}
	return nil
}

// clientsCloseTimeout bounds closing a child's clients; it is shorter
// than childExitTimeout, so the child can say what hung before the
// parent kills it.
const clientsCloseTimeout = childExitTimeout * 3 / 4

// close closes every connection, many at a time. If that takes longer
// than clientsCloseTimeout it writes every goroutine's stack to stderr (a
// Close that hangs is a bug to see) and returns an error; the process is
// about to exit anyway.
func (cs *clientSet) close() error {
	var open atomic.Int64
	open.Store(int64(len(cs.raw) + len(cs.rel)))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, ws := range cs.raw {
			ws.Close()
			open.Add(-1)
		}
		parallel(64, len(cs.rel), func(i int) {
			_ = cs.rel[i].Close()
			open.Add(-1)
		})
	}()
	select {
	case <-done:
		return nil
	case <-time.After(clientsCloseTimeout):
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		return fmt.Errorf("%d of %d clients still closing after %v (goroutines above)", open.Load(), len(cs.raw)+len(cs.rel), clientsCloseTimeout)
	}
}

// parallel runs fn(0..n-1) on at most workers goroutines.
func parallel(workers, n int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				fn(i)
			}
		})
	}
	wg.Wait()
}
