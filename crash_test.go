package wsreliable_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
)

// Environment of a child process started by a crash test.
const (
	envChild = "WSRELIABLE_CRASH_CHILD" // "sender" or "server"
	envURL   = "WSRELIABLE_CRASH_URL"
	envAddr  = "WSRELIABLE_CRASH_ADDR"
	envStore = "WSRELIABLE_CRASH_STORE"
	envRun   = "WSRELIABLE_CRASH_RUN"
	envCount = "WSRELIABLE_CRASH_COUNT"
)

// children are the roles a test can start this test binary in, by name
// in the environment variable envChild. Test files add to it in init.
var children = map[string]func() error{
	"sender": senderChild,
	"server": serverChild,
}

// crashChild runs the test binary as a child process when the environment
// asks for it. It exits the process; it returns false when no child role
// was asked for.
func crashChild() bool {
	role := os.Getenv(envChild)
	if role == "" {
		return false
	}
	run, ok := children[role]
	err := fmt.Errorf("unknown child role %q", role)
	if ok {
		err = run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

// senderChild sends payloads "<run>-<i>" and prints each one on stdout once
// Send has returned nil, then drains and prints "drained".
func senderChild() error {
	count, _ := strconv.Atoi(os.Getenv(envCount))
	run := os.Getenv(envRun)
	c, err := reliable.NewClient(os.Getenv(envURL), os.Getenv(envStore), clientOptions())
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range count {
		p := run + "-" + strconv.Itoa(i)
		if _, err := c.Send(ctx, []byte(p)); err != nil {
			return err
		}
		if _, err := os.Stdout.WriteString(p + "\n"); err != nil {
			return err
		}
	}
	if err := c.Drain(ctx); err != nil {
		return err
	}
	_, err = os.Stdout.WriteString("drained\n")
	return err
}

// crashAckBatch is the server's AckBatch in TestCrashServer: the bound
// on what one crash may hand to the handler again.
const crashAckBatch = 64

func crashServerOptions() *reliable.ServerOptions {
	o := serverOptions()
	o.AckBatch = crashAckBatch
	return o
}

// serverChild serves on a fixed address and prints "<client> <seq>
// <payload>" for each delivered message before acknowledging it.
func serverChild() error {
	srv, err := reliable.NewServer(os.Getenv(envStore), func(_ context.Context, m *reliable.Message) error {
		_, err := fmt.Fprintf(os.Stdout, "%s %d %s\n", m.ClientID, m.Seq, m.Payload)
		return err
	}, crashServerOptions())
	if err != nil {
		return err
	}
	var ln net.Listener
	for range 100 { // the killed predecessor's port may linger briefly
		if ln, err = net.Listen("tcp", os.Getenv(envAddr)); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	return http.Serve(ln, srv)
}

// child is a running child process whose stdout lines arrive on lines.
type child struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
}

func startChild(tb testing.TB, env ...string) *child {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	ch := &child{cmd: cmd, lines: make(chan string, 1<<16), done: make(chan struct{})}
	go func() {
		defer close(ch.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			ch.lines <- sc.Text()
		}
		close(ch.lines)
	}()
	return ch
}

// kill SIGKILLs the child and waits for it and for its output to end.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
	_ = c.cmd.Wait()
}

// wait waits for the child to exit on its own, with a deadline.
func (c *child) wait(tb testing.TB, d time.Duration) error {
	tb.Helper()
	select {
	case <-c.done:
	case <-time.After(d):
		c.kill()
		return errors.New("child did not finish in time")
	}
	return c.cmd.Wait()
}

// crashCycles is how many times each crash test kills its child.
func crashCycles() int {
	if testing.Short() {
		return 5
	}
	return 20 * soak()
}

// TestCrashSender SIGKILLs a sending process at random points and starts it
// again on the same store: every payload whose Send returned nil reaches
// the handler exactly once, in order, and the store file stays consistent.
func TestCrashSender(t *testing.T) {
	led := &crashLedger{seen: map[string]int{}}
	_, addr := startServer(t, led.handle)
	url := "ws://" + addr + "/"
	store := filepath.Join(t.TempDir(), "client.db")
	rng := rand.New(rand.NewPCG(3, 4))
	confirmed := map[string]bool{}
	cycles := crashCycles()
	for run := 0; run <= cycles; run++ {
		last := run == cycles
		count := 100000
		if last {
			count = 200
		}
		c := startChild(t, envChild+"=sender", envURL+"="+url, envStore+"="+store,
			envRun+"="+strconv.Itoa(run), envCount+"="+strconv.Itoa(count))
		killAt := 1 + rng.IntN(400)
		n := 0
		deadline := time.After(time.Minute)
	read:
		for {
			select {
			case line, ok := <-c.lines:
				if !ok {
					break read
				}
				if line == "drained" {
					continue
				}
				confirmed[line] = true
				n++
				if !last && n >= killAt {
					c.kill()
					break read
				}
			case <-deadline:
				c.kill()
				t.Fatalf("run %d: child stalled after %d confirmations", run, n)
			}
		}
		if last {
			if err := c.wait(t, time.Minute); err != nil {
				t.Fatalf("final run: %v", err)
			}
		}
		if err := queue.Check(store); err != nil {
			t.Fatalf("after run %d: %v", run, err)
		}
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	var lost int
	for p := range confirmed {
		if led.seen[p] == 0 {
			lost++
		}
	}
	t.Logf("%d kills, %d confirmed, %d delivered, %d lost, %d duplicates", cycles, len(confirmed), len(led.seen), lost, led.dups)
	if lost != 0 || led.dups != 0 || len(led.disorder) != 0 {
		t.Fatalf("lost %d, duplicates %d, out of order %v", lost, led.dups, led.disorder)
	}
}

// crashLedger checks payloads "<run>-<i>": each at most once, and per
// client (run, i) increasing.
type crashLedger struct {
	mu       sync.Mutex
	seen     map[string]int
	last     [2]int
	dups     int
	disorder []string
}

func (l *crashLedger) handle(_ context.Context, m *reliable.Message) error {
	run, i, ok := strings.Cut(string(m.Payload), "-")
	r, err1 := strconv.Atoi(run)
	n, err2 := strconv.Atoi(i)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("payload %q: %w", m.Payload, reliable.ErrRejected)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	p := string(m.Payload)
	l.seen[p]++
	if l.seen[p] > 1 {
		l.dups++
		return nil
	}
	if r < l.last[0] || (r == l.last[0] && n <= l.last[1] && len(l.seen) > 1) {
		l.disorder = append(l.disorder, fmt.Sprintf("%s after %d-%d", p, l.last[0], l.last[1]))
	}
	l.last = [2]int{r, n}
	return nil
}

// TestCrashServer SIGKILLs the receiving server at random points and
// restarts it on the same store while a client keeps sending. Nothing is
// lost or reordered; duplicates are only possible for messages handled but
// not yet committed when the server died, at most AckBatch per crash. The
// test measures and reports them.
func TestCrashServer(t *testing.T) {
	addr := testkit.FreeAddr(t)
	store := filepath.Join(t.TempDir(), "server.db")
	env := []string{envChild + "=server", envAddr + "=" + addr, envStore + "=" + store}

	const total = 6000
	ctx := testkit.Deadline(t, 3*time.Minute)
	c, err := reliable.NewClient("ws://"+addr+"/", filepath.Join(t.TempDir(), "client.db"), clientOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var receipts []*reliable.Receipt
	for i := range total {
		r, err := c.Send(ctx, []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		receipts = append(receipts, r)
	}

	rng := rand.New(rand.NewPCG(5, 6))
	deliveries := make([]int, total)
	var dups, kills, maxDupsPerKill int
	prevSeq := uint64(0)
	// record checks one line of the server's output and returns the
	// payload it carried and whether it was a duplicate.
	record := func(line string) (int, bool) {
		var id string
		var seq uint64
		var p int
		if _, err := fmt.Sscanf(line, "%s %d %d", &id, &seq, &p); err != nil || p < 0 || p >= total {
			t.Fatalf("bad line %q: %v", line, err)
		}
		if seq > prevSeq+1 {
			t.Fatalf("gap: seq %d after %d", seq, prevSeq)
		}
		prevSeq = seq
		deliveries[p]++
		return p, deliveries[p] > 1
	}
	cycles := crashCycles() / 2
	for run := 0; ; run++ {
		srv := startChild(t, env...)
		killAt := 1 + rng.IntN(600)
		n, runDups := 0, 0
		last := run >= cycles
		deadline := time.After(time.Minute)
	read:
		for {
			select {
			case line, ok := <-srv.lines:
				if !ok {
					t.Fatalf("server child exited")
				}
				p, dup := record(line)
				if dup {
					dups++
					runDups++
				}
				n++
				if (last && p == total-1) || (!last && n >= killAt) {
					break read
				}
			case <-deadline:
				srv.kill()
				t.Fatalf("run %d: server delivered nothing for a minute after %d lines; client %v: %v", run, n, c.State(), c.Err())
			}
		}
		if last {
			for _, r := range receipts {
				if err := r.Wait(ctx); err != nil {
					t.Fatalf("receipt %d: %v", r.Seq(), err)
				}
			}
		}
		srv.kill()
		// Lines the server wrote before it died were deliveries too.
		for line := range srv.lines {
			if _, dup := record(line); dup {
				dups++
				runDups++
			}
		}
		if last {
			break
		}
		kills++
		maxDupsPerKill = max(maxDupsPerKill, runDups)
		if err := queue.Check(store); err != nil {
			t.Fatalf("server store after kill %d: %v", kills, err)
		}
	}
	for p, n := range deliveries {
		if n == 0 {
			t.Fatalf("payload %d never delivered", p)
		}
	}
	t.Logf("%d server kills: %d duplicates in all, at most %d after one restart (bound: AckBatch = %d)", kills, dups, maxDupsPerKill, crashAckBatch)
	if maxDupsPerKill > crashAckBatch {
		t.Fatalf("a restart redelivered %d messages, more than AckBatch", maxDupsPerKill)
	}
}
