//go:build linux

// Kernel-level fault tests: a server and a sender run as child processes
// in two network namespaces joined by a veth pair, and iptables makes the
// link half-open (every packet dropped, no FIN, no RST) or lossy. Other
// tests pause a child with SIGSTOP. Each checks that the dead link is
// found within the heartbeat bound and that everything the sender
// confirmed reaches the server's handler exactly once, in order.
//
// The namespace tests need root, ip (iproute2) and iptables. Without them
// they skip loudly, or fail when CI=true.
package wsreliable_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

// Environment of the net-server and net-sender children, besides envChild,
// envAddr, envURL, envStore and envCount from crash_test.go.
const (
	envPace      = "WSRELIABLE_NET_PACE"      // pause between sends (time.Duration)
	envSendFor   = "WSRELIABLE_NET_SEND_FOR"  // stop sending after this long (time.Duration)
	envHeartbeat = "WSRELIABLE_NET_HEARTBEAT" // "interval/timeout", e.g. "200ms/300ms"
)

// Heartbeats of both sides in these tests. A half-open link must be found
// within netHBInterval+netHBTimeout; detectMargin absorbs scheduling delay
// under -race on a small machine.
const (
	netHBInterval = 200 * time.Millisecond
	netHBTimeout  = 300 * time.Millisecond
	detectMargin  = 500 * time.Millisecond
	faultCycles   = 3
)

func init() {
	children["net-server"] = netServerChild
	children["net-sender"] = netSenderChild
}

func heartbeatEnv() string {
	return envHeartbeat + "=" + netHBInterval.String() + "/" + netHBTimeout.String()
}

// childHeartbeat reads envHeartbeat.
func childHeartbeat() (interval, timeout time.Duration, err error) {
	iv, to, ok := strings.Cut(os.Getenv(envHeartbeat), "/")
	if !ok {
		return 0, 0, fmt.Errorf("%s=%q: want interval/timeout", envHeartbeat, os.Getenv(envHeartbeat))
	}
	if interval, err = time.ParseDuration(iv); err != nil {
		return 0, 0, err
	}
	if timeout, err = time.ParseDuration(to); err != nil {
		return 0, 0, err
	}
	return interval, timeout, nil
}

// durationEnv reads a time.Duration from the environment; empty is 0.
func durationEnv(name string) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

// stampWriter prefixes each write (one slog record) with "log <unixnano> ".
type stampWriter struct{ w io.Writer }

func (s stampWriter) Write(p []byte) (int, error) {
	if _, err := fmt.Fprintf(s.w, "log %d %s", time.Now().UnixNano(), p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// netServerChild listens on envAddr (port 0 allowed), prints "listening
// <addr>", then "deliver <client> <seq> <payload>" for each message handed
// to its handler and "log <unixnano> <slog record>" for each session event.
func netServerChild() error {
	iv, to, err := childHeartbeat()
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stampWriter{os.Stdout}, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	srv, err := reliable.NewServer(os.Getenv(envStore), func(_ context.Context, m *reliable.Message) error {
		_, err := fmt.Fprintf(os.Stdout, "deliver %s %d %s\n", m.ClientID, m.Seq, m.Payload)
		return err
	}, &reliable.ServerOptions{HeartbeatInterval: iv, HeartbeatTimeout: to, Logger: logger})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", os.Getenv(envAddr))
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(os.Stdout, "listening %s\n", ln.Addr()); err != nil {
		return err
	}
	return http.Serve(ln, srv)
}

// netSenderChild sends payloads "0", "1", … to envURL and prints "sent <i>"
// once Send has returned nil for it, and "state <unixnano> <state>
// [<quoted cause>]" on every state change. It stops sending after envCount
// messages, after envSendFor, or when its stdin ends, whichever comes
// first; then it drains, prints "stats …" and "drained", and exits.
func netSenderChild() error {
	iv, to, err := childHeartbeat()
	if err != nil {
		return err
	}
	pace, err := durationEnv(envPace)
	if err != nil {
		return err
	}
	sendFor, err := durationEnv(envSendFor)
	if err != nil {
		return err
	}
	count := math.MaxInt
	if v := os.Getenv(envCount); v != "" {
		if count, err = strconv.Atoi(v); err != nil {
			return fmt.Errorf("%s: %w", envCount, err)
		}
	}
	opts := clientOptions()
	opts.HeartbeatInterval, opts.HeartbeatTimeout = iv, to
	opts.OnStateChange = func(s reliable.State, cause error) {
		line := fmt.Sprintf("state %d %s", time.Now().UnixNano(), s)
		if cause != nil {
			line += " " + strconv.Quote(cause.Error())
		}
		_, _ = os.Stdout.WriteString(line + "\n")
	}
	c, err := reliable.NewClient(os.Getenv(envURL), os.Getenv(envStore), opts)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	start := time.Now()
	sent := 0
send:
	for sent < count && (sendFor == 0 || time.Since(start) < sendFor) {
		select {
		case <-stop:
			break send
		default:
		}
		// Send's context is never cancelled by stop: every message that
		// reaches the queue is one the parent is told about.
		if _, err := c.Send(ctx, []byte(strconv.Itoa(sent))); err != nil {
			return fmt.Errorf("send %d: %w", sent, err)
		}
		if _, err := fmt.Fprintf(os.Stdout, "sent %d\n", sent); err != nil {
			return err
		}
		sent++
		if pace > 0 {
			t := time.NewTimer(pace)
			select {
			case <-t.C:
			case <-stop:
				t.Stop()
				break send
			}
		}
	}
	sending := time.Since(start)
	if err := c.Drain(ctx); err != nil {
		return fmt.Errorf("drain: %w (stats %+v)", err, c.Stats())
	}
	st := c.Stats()
	fmt.Fprintf(os.Stdout, "stats sent=%d send_ms=%d total_ms=%d acked=%d reconnects=%d redelivered=%d\n",
		sent, sending.Milliseconds(), time.Since(start).Milliseconds(), st.Acked, st.Reconnects, st.Redelivered)
	if err := c.Close(); err != nil {
		return err
	}
	_, err = os.Stdout.WriteString("drained\n")
	return err
}

// stateEvent is one "state" line of a net-sender child.
type stateEvent struct {
	at    int64 // time.Now().UnixNano() in the child
	state string
	cause string
}

// proc is a net-server or net-sender child, possibly inside a network
// namespace. A goroutine parses its stdout into the fields below (guarded
// by mu) until the child exits.
type proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // stdout ended

	waitOnce sync.Once
	waitErr  error

	notify chan struct{} // a line arrived (capacity 1)

	mu      sync.Mutex
	addr    string       // from "listening"
	states  []stateEvent // from "state"
	sent    int          // "sent" lines, each checked to be the next payload
	next    int          // next payload expected in a "deliver" line
	ends    []int64      // times of "session ended" server log records
	stats   string       // from "stats"
	drained bool
	bad     []string // protocol violations and unknown lines
}

// startProc starts this test binary in the given child role, inside
// namespace ns unless ns is empty. The child is killed at cleanup.
func startProc(tb testing.TB, name, ns string, env ...string) *proc {
	tb.Helper()
	args := []string{os.Args[0], "-test.run=^$"}
	if ns != "" {
		// ip netns exec execs the command, so the child keeps ip's PID and
		// signals reach it directly.
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	p := &proc{
		name: name, cmd: cmd, stdin: stdin,
		done: make(chan struct{}), notify: make(chan struct{}, 1),
	}
	go p.read(out)
	tb.Cleanup(func() {
		if err := p.kill(); err != nil {
			tb.Errorf("%s: %v", name, err)
		}
	})
	return p
}

func (p *proc) read(r io.Reader) {
	defer close(p.done)
	defer p.wake()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.parse(sc.Text())
	}
}

func (p *proc) wake() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

func (p *proc) parse(line string) {
	defer p.wake()
	kind, rest, _ := strings.Cut(line, " ")
	p.mu.Lock()
	defer p.mu.Unlock()
	switch kind {
	case "listening":
		p.addr = rest
	case "state":
		at, st, _ := strings.Cut(rest, " ")
		state, cause, _ := strings.Cut(st, " ")
		ns, err := strconv.ParseInt(at, 10, 64)
		if err != nil {
			p.bad = append(p.bad, "bad line: "+line)
			return
		}
		p.states = append(p.states, stateEvent{at: ns, state: state, cause: cause})
	case "sent":
		if n, err := strconv.Atoi(rest); err != nil || n != p.sent {
			p.bad = append(p.bad, fmt.Sprintf("sender confirmed %q, want %d", rest, p.sent))
		}
		p.sent++
	case "deliver":
		f := strings.Fields(rest)
		n := -1
		if len(f) == 3 {
			n, _ = strconv.Atoi(f[2])
		}
		switch {
		case n < 0:
			p.bad = append(p.bad, "bad line: "+line)
		case n < p.next:
			p.bad = append(p.bad, fmt.Sprintf("duplicate delivery of %d (seq %s) after %d", n, f[1], p.next-1))
		case n > p.next:
			p.bad = append(p.bad, fmt.Sprintf("gap: delivered %d (seq %s), want %d", n, f[1], p.next))
			p.next = n + 1
		default:
			p.next++
		}
	case "log":
		at, rec, _ := strings.Cut(rest, " ")
		ns, err := strconv.ParseInt(at, 10, 64)
		if err != nil {
			p.bad = append(p.bad, "bad line: "+line)
			return
		}
		if strings.Contains(rec, `msg="session ended"`) {
			p.ends = append(p.ends, ns)
		}
	case "stats":
		p.stats = rest
	case "drained":
		p.drained = true
	default:
		p.bad = append(p.bad, "unknown line: "+line)
	}
}

// waitFor waits until cond (called with p.mu held) is true. It fails the
// test if d passes first or the child exits without cond becoming true.
func (p *proc) waitFor(tb testing.TB, what string, d time.Duration, cond func() bool) {
	tb.Helper()
	check := func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return cond()
	}
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for !check() {
		select {
		case <-p.notify:
		case <-p.done:
			if check() {
				return
			}
			tb.Fatalf("%s exited while waiting for %s: %v (%s)", p.name, what, p.exit(10*time.Second), p.summary())
		case <-deadline.C:
			if check() {
				return
			}
			tb.Fatalf("%s: no %s within %v (%s)", p.name, what, d, p.summary())
		}
	}
}

// stateAfter returns the first state event s at or after time at. Call it
// with p.mu held.
func (p *proc) stateAfter(s string, at int64) (stateEvent, bool) {
	for _, e := range p.states {
		if e.state == s && e.at >= at {
			return e, true
		}
	}
	return stateEvent{}, false
}

// endAfter returns the first "session ended" time at or after at. Call it
// with p.mu held.
func (p *proc) endAfter(at int64) (int64, bool) {
	for _, e := range p.ends {
		if e >= at {
			return e, true
		}
	}
	return 0, false
}

func (p *proc) snapshot() (sent, delivered int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent, p.next
}

func (p *proc) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last []stateEvent
	if n := len(p.states); n > 5 {
		last = p.states[n-5:]
	} else {
		last = p.states
	}
	return fmt.Sprintf("sent %d, delivered %d, last states %+v, problems %d: %.5q", p.sent, p.next, last, len(p.bad), p.bad)
}

func (p *proc) signal(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("%s: %v: %v", p.name, sig, err)
	}
}

// exit waits up to d for the child to end on its own and returns its exit
// error; if it does not end in time it is killed.
func (p *proc) exit(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.kill()
		return fmt.Errorf("%s did not exit within %v", p.name, d)
	}
	p.waitOnce.Do(func() { p.waitErr = p.cmd.Wait() })
	return p.waitErr
}

// kill SIGKILLs the child (stopped or not) and waits for it and for the
// goroutine reading its output.
func (p *proc) kill() error {
	_ = p.cmd.Process.Kill()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	var err error
	select {
	case <-p.done:
	case <-t.C:
		err = errors.New("output did not end 10s after SIGKILL")
	}
	p.waitOnce.Do(func() { p.waitErr = p.cmd.Wait() }) // closes stdout: the reader ends
	<-p.done
	return err
}

// netNS is a pair of network namespaces, srv and cli, joined by a veth
// pair with the /30 addresses srvIP and cliIP, and the iptables command
// that works inside them.
type netNS struct {
	srv, cli     string
	srvIf, cliIf string
	srvIP, cliIP string
	iptables     string
}

var netNSCount atomic.Int32

// unavailable skips the test loudly, or fails it when CI=true: CI must run
// the namespace tests.
func unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		tb.Fatalf("needs root and iptables, and CI=true requires this test to run: %s", msg)
	}
	tb.Skipf("SKIPPED: needs root and iptables: %s", msg)
}

// run runs a command and fails the test with its output if it fails.
func runCmd(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newNetNS creates two namespaces and a veth pair between them, brings up
// lo and the veth ends, and picks a working iptables. Cleanup deletes the
// namespaces, which destroys the veth pair and the rules with them; test
// children must be registered after it so they die first.
func newNetNS(tb testing.TB) *netNS {
	tb.Helper()
	if os.Geteuid() != 0 {
		unavailable(tb, "not root (euid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		unavailable(tb, "no ip command (install iproute2): %v", err)
	}
	i := netNSCount.Add(1)
	pid := os.Getpid()
	n := &netNS{
		srv:   fmt.Sprintf("wsr-%d-%d-s", pid, i),
		cli:   fmt.Sprintf("wsr-%d-%d-c", pid, i),
		srvIf: fmt.Sprintf("wsr%d-%ds", pid%1000000, i%100), // at most 15 bytes
		cliIf: fmt.Sprintf("wsr%d-%dc", pid%1000000, i%100),
		srvIP: fmt.Sprintf("10.213.%d.1", i%256),
		cliIP: fmt.Sprintf("10.213.%d.2", i%256),
	}
	for _, ns := range []string{n.srv, n.cli} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			unavailable(tb, "ip netns add %s: %v: %s", ns, err, out)
		}
		tb.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				tb.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
	}
	runCmd(tb, "ip", "link", "add", n.srvIf, "netns", n.srv, "type", "veth", "peer", "name", n.cliIf, "netns", n.cli)
	runCmd(tb, "ip", "-n", n.srv, "addr", "add", n.srvIP+"/30", "dev", n.srvIf)
	runCmd(tb, "ip", "-n", n.cli, "addr", "add", n.cliIP+"/30", "dev", n.cliIf)
	for _, l := range [][2]string{{n.srv, "lo"}, {n.srv, n.srvIf}, {n.cli, "lo"}, {n.cli, n.cliIf}} {
		runCmd(tb, "ip", "-n", l[0], "link", "set", l[1], "up")
	}

	// Debian 12's iptables is the nft variant; older systems or kernels
	// without nf_tables need iptables-legacy. Use the first that can add
	// a statistic-match rule inside the namespace.
	var failures []string
	for _, cand := range []string{"iptables", "iptables-legacy", "iptables-nft"} {
		if _, err := exec.LookPath(cand); err != nil {
			failures = append(failures, fmt.Sprintf("%s: not found", cand))
			continue
		}
		rule := []string{"INPUT", "-i", "lo", "-m", "statistic", "--mode", "random", "--probability", "0.01", "-j", "ACCEPT"}
		add := append([]string{"netns", "exec", n.srv, cand, "-w", "5", "-A"}, rule...)
		if out, err := exec.Command("ip", add...).CombinedOutput(); err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v: %s", cand, err, strings.TrimSpace(string(out))))
			continue
		}
		del := append([]string{"netns", "exec", n.srv, cand, "-w", "5", "-D"}, rule...)
		runCmd(tb, "ip", del...)
		n.iptables = cand
		break
	}
	if n.iptables == "" {
		unavailable(tb, "no iptables works in a network namespace: %s", strings.Join(failures, "; "))
	}
	version, _ := exec.Command(n.iptables, "--version").CombinedOutput()
	tb.Logf("namespaces %s (%s %s) and %s (%s %s); iptables variant: %s (%s)",
		n.srv, n.srvIf, n.srvIP, n.cli, n.cliIf, n.cliIP, n.iptables, strings.TrimSpace(string(version)))
	return n
}

// ipt runs iptables inside namespace ns.
func (n *netNS) ipt(tb testing.TB, ns string, args ...string) string {
	tb.Helper()
	return runCmd(tb, "ip", append([]string{"netns", "exec", ns, n.iptables, "-w", "5"}, args...)...)
}

// dropRules drops every packet on the veth, in and out, in both
// namespaces: the link goes silent, nobody sees a FIN or an RST. The
// client's side comes first, so the client stops hearing the server as
// soon as the first rule is in.
func (n *netNS) dropRules() [][]string {
	return [][]string{
		{n.cli, "INPUT", "-i", n.cliIf, "-j", "DROP"},
		{n.cli, "OUTPUT", "-o", n.cliIf, "-j", "DROP"},
		{n.srv, "INPUT", "-i", n.srvIf, "-j", "DROP"},
		{n.srv, "OUTPUT", "-o", n.srvIf, "-j", "DROP"},
	}
}

// lossRules drop packets at random with probability p as they arrive in
// either namespace: each direction crosses exactly one INPUT chain, so
// each loses p of its packets.
func (n *netNS) lossRules(p float64) [][]string {
	prob := strconv.FormatFloat(p, 'f', -1, 64)
	return [][]string{
		{n.cli, "INPUT", "-i", n.cliIf, "-m", "statistic", "--mode", "random", "--probability", prob, "-j", "DROP"},
		{n.srv, "INPUT", "-i", n.srvIf, "-m", "statistic", "--mode", "random", "--probability", prob, "-j", "DROP"},
	}
}

// apply adds ("-A") or deletes ("-D") rules given as namespace, chain, spec.
func (n *netNS) apply(tb testing.TB, op string, rules [][]string) {
	tb.Helper()
	for _, r := range rules {
		n.ipt(tb, r[0], append([]string{op, r[1]}, r[2:]...)...)
	}
}

// dropped sums the packet counters of the DROP rules in ns's INPUT chain.
func (n *netNS) dropped(tb testing.TB, ns string) int64 {
	tb.Helper()
	var sum int64
	for line := range strings.Lines(n.ipt(tb, ns, "-nvxL", "INPUT")) {
		f := strings.Fields(line)
		if len(f) > 2 && f[2] == "DROP" {
			v, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				tb.Fatalf("iptables counters: %q: %v", line, err)
			}
			sum += v
		}
	}
	return sum
}

// rxPackets is the number of packets received on interface dev in ns.
func (n *netNS) rxPackets(tb testing.TB, ns, dev string) int64 {
	tb.Helper()
	out := runCmd(tb, "ip", "netns", "exec", ns, "cat", "/sys/class/net/"+dev+"/statistics/rx_packets")
	v, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		tb.Fatalf("rx_packets of %s in %s: %q: %v", dev, ns, out, err)
	}
	return v
}

// startPair starts a net-server (in namespace srvNS, listening on
// listenAddr) and a net-sender (in cliNS) that connects to it by host
// connectHost. Extra environment goes to the sender.
func startPair(t *testing.T, srvNS, listenAddr, cliNS, connectHost string, senderEnv ...string) (srv, cli *proc) {
	t.Helper()
	dir := t.TempDir()
	srv = startProc(t, "server", srvNS, envChild+"=net-server", envAddr+"="+listenAddr,
		envStore+"="+filepath.Join(dir, "server.db"), heartbeatEnv())
	srv.waitFor(t, "listening line", 30*time.Second, func() bool { return srv.addr != "" })
	_, port, err := net.SplitHostPort(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	env := append([]string{envChild + "=net-sender", envURL + "=ws://" + net.JoinHostPort(connectHost, port) + "/",
		envStore + "=" + filepath.Join(dir, "client.db"), heartbeatEnv()}, senderEnv...)
	cli = startProc(t, "sender", cliNS, env...)
	return srv, cli
}

// waitFlowing waits until the sender is connected and the server has
// delivered at least n messages.
func waitFlowing(t *testing.T, srv, cli *proc, n int) {
	t.Helper()
	cli.waitFor(t, "first connection", 30*time.Second, func() bool {
		_, ok := cli.stateAfter("connected", 0)
		return ok
	})
	srv.waitFor(t, fmt.Sprintf("%d deliveries", n), 30*time.Second, func() bool { return srv.next >= n })
}

// waitResumed waits for the server to deliver n more messages.
func waitResumed(t *testing.T, srv *proc, n int) {
	t.Helper()
	_, from := srv.snapshot()
	srv.waitFor(t, "deliveries after the fault", 30*time.Second, func() bool { return srv.next >= from+n })
}

// holdUntil keeps a fault in place until the given time: the fault itself
// lasts that long; no ordering depends on it.
func holdUntil(at time.Time) {
	if d := time.Until(at); d > 0 {
		time.Sleep(d)
	}
}

// finish stops the sender (stdin closed), waits for it to drain and exit,
// then for the server to have delivered every confirmed payload, kills the
// server and checks that each confirmed payload was delivered exactly
// once, in order, and nothing else was. It returns the sender's stats line.
func finish(t *testing.T, srv, cli *proc) string {
	t.Helper()
	if err := cli.stdin.Close(); err != nil {
		t.Fatal(err)
	}
	cli.waitFor(t, "drained", 2*time.Minute, func() bool { return cli.drained })
	if err := cli.exit(30 * time.Second); err != nil {
		t.Fatalf("sender: %v", err)
	}
	sent, _ := cli.snapshot()
	srv.waitFor(t, fmt.Sprintf("all %d deliveries", sent), 30*time.Second, func() bool { return srv.next >= sent })
	if err := srv.kill(); err != nil { // every line it wrote is read now
		t.Fatalf("server: %v", err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	cli.mu.Lock()
	defer cli.mu.Unlock()
	for _, p := range [...]*proc{cli, srv} {
		if len(p.bad) > 0 {
			t.Errorf("%s: %d problems, first: %.20q", p.name, len(p.bad), p.bad)
		}
	}
	if srv.next != cli.sent {
		t.Errorf("server delivered payloads up to %d, sender confirmed %d", srv.next, cli.sent)
	}
	if !t.Failed() {
		t.Logf("%d confirmed messages delivered exactly once, in order", cli.sent)
	}
	return cli.stats
}

// TestNetNSHalfOpen makes the link between a sender and a server silently
// drop everything (no FIN, no RST) while messages flow, three times. The
// sender must notice within heartbeat interval + timeout, reconnect once
// the link is back, and everything it confirmed must be delivered exactly
// once, in order.
func TestNetNSHalfOpen(t *testing.T) {
	n := newNetNS(t)
	srv, cli := startPair(t, n.srv, n.srvIP+":0", n.cli, n.srvIP, envPace+"=2ms")
	waitFlowing(t, srv, cli, 50)

	bound := netHBInterval + netHBTimeout
	var worst time.Duration
	for cycle := 1; cycle <= faultCycles; cycle++ {
		t0 := time.Now()
		n.apply(t, "-A", n.dropRules())
		applied := time.Since(t0)
		var ev stateEvent
		cli.waitFor(t, "disconnected state on the silent link", bound+detectMargin+10*time.Second, func() bool {
			var ok bool
			ev, ok = cli.stateAfter("disconnected", t0.UnixNano())
			return ok
		})
		detect := time.Duration(ev.at - t0.UnixNano())
		worst = max(worst, detect)
		// Keep the link dead until both sides have certainly given up on
		// it, then report when the server did.
		holdUntil(t0.Add(bound + detectMargin))
		var end int64
		srv.waitFor(t, "session end on the silent link", 10*time.Second, func() bool {
			var ok bool
			end, ok = srv.endAfter(t0.UnixNano())
			return ok
		})
		t.Logf("cycle %d: half-open detected after %dms (bound %dms+margin %dms); server side after %dms; rules took %dms to apply; cause %s",
			cycle, detect.Milliseconds(), bound.Milliseconds(), detectMargin.Milliseconds(),
			time.Duration(end-t0.UnixNano()).Milliseconds(), applied.Milliseconds(), ev.cause)
		if detect > bound+detectMargin {
			t.Errorf("cycle %d: half-open link detected after %v, bound %v + margin %v", cycle, detect, bound, detectMargin)
		}

		t1 := time.Now()
		n.apply(t, "-D", n.dropRules())
		var up stateEvent
		cli.waitFor(t, "reconnection after the link came back", 30*time.Second, func() bool {
			var ok bool
			up, ok = cli.stateAfter("connected", t1.UnixNano())
			return ok
		})
		t.Logf("cycle %d: reconnected %dms after the link came back", cycle, time.Duration(up.at-t1.UnixNano()).Milliseconds())
		waitResumed(t, srv, 20)
	}
	stats := finish(t, srv, cli)
	t.Logf("worst half-open detection %dms (bound %dms+margin %dms); sender %s",
		worst.Milliseconds(), bound.Milliseconds(), detectMargin.Milliseconds(), stats)
}

// TestNetNSPacketLoss sends up to 5,000 messages (for at most 20 s) over a
// link that drops 5% of the packets in each direction, then drains over
// the same link: everything confirmed arrives once, in order.
func TestNetNSPacketLoss(t *testing.T) {
	const (
		loss     = 0.05
		messages = 5000
		sendFor  = 20 * time.Second
	)
	n := newNetNS(t)
	rx0 := n.rxPackets(t, n.srv, n.srvIf) + n.rxPackets(t, n.cli, n.cliIf)
	n.apply(t, "-A", n.lossRules(loss))
	start := time.Now()
	srv, cli := startPair(t, n.srv, n.srvIP+":0", n.cli, n.srvIP,
		envCount+"="+strconv.Itoa(messages), envSendFor+"="+sendFor.String())
	cli.waitFor(t, "drained", sendFor+2*time.Minute, func() bool { return cli.drained })
	elapsed := time.Since(start)
	dropped := n.dropped(t, n.srv) + n.dropped(t, n.cli)
	rx := n.rxPackets(t, n.srv, n.srvIf) + n.rxPackets(t, n.cli, n.cliIf) - rx0
	n.apply(t, "-D", n.lossRules(loss))

	cli.mu.Lock()
	var connects int
	for _, e := range cli.states {
		if e.state == "connected" {
			connects++
		}
	}
	sent := cli.sent
	cli.mu.Unlock()
	stats := finish(t, srv, cli)
	t.Logf("%.0f%% loss each way: %d messages confirmed and delivered in %v (%.0f msg/s); %d reconnects; %d of %d packets dropped (%.1f%%); sender %s",
		loss*100, sent, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds(), max(connects-1, 0),
		dropped, rx, 100*float64(dropped)/float64(max(rx, 1)), stats)
	if dropped == 0 {
		t.Errorf("no packet was dropped: the loss rules did not work")
	}
}

// TestPauseServer freezes the server process with SIGSTOP for longer than
// heartbeat interval + timeout, three times: its sockets stay open, so the
// sender sees no FIN or RST and must find the dead link by heartbeat,
// then reconnect once the server runs again (SIGCONT). Nothing confirmed
// is lost or doubled.
func TestPauseServer(t *testing.T) {
	srv, cli := startPair(t, "", "127.0.0.1:0", "", "127.0.0.1", envPace+"=2ms")
	waitFlowing(t, srv, cli, 50)
	bound := netHBInterval + netHBTimeout
	for cycle := 1; cycle <= faultCycles; cycle++ {
		t0 := time.Now()
		srv.signal(t, syscall.SIGSTOP)
		var ev stateEvent
		cli.waitFor(t, "disconnected state while the server is stopped", bound+detectMargin+10*time.Second, func() bool {
			var ok bool
			ev, ok = cli.stateAfter("disconnected", t0.UnixNano())
			return ok
		})
		detect := time.Duration(ev.at - t0.UnixNano())
		t.Logf("cycle %d: stopped server detected after %dms (bound %dms+margin %dms); cause %s",
			cycle, detect.Milliseconds(), bound.Milliseconds(), detectMargin.Milliseconds(), ev.cause)
		if detect > bound+detectMargin {
			t.Errorf("cycle %d: stopped server detected after %v, bound %v + margin %v", cycle, detect, bound, detectMargin)
		}
		holdUntil(t0.Add(bound + detectMargin))
		t1 := time.Now()
		srv.signal(t, syscall.SIGCONT)
		var up stateEvent
		cli.waitFor(t, "reconnection after SIGCONT", 30*time.Second, func() bool {
			var ok bool
			up, ok = cli.stateAfter("connected", t1.UnixNano())
			return ok
		})
		t.Logf("cycle %d: reconnected %dms after SIGCONT", cycle, time.Duration(up.at-t1.UnixNano()).Milliseconds())
		waitResumed(t, srv, 20)
	}
	t.Logf("sender %s", finish(t, srv, cli))
}

// TestPauseSender freezes the sending process with SIGSTOP for longer than
// heartbeat interval + timeout, three times. The server must end the dead
// session by heartbeat; the sender, once resumed, must find its connection
// gone, reconnect and carry on. Nothing confirmed is lost or doubled.
func TestPauseSender(t *testing.T) {
	srv, cli := startPair(t, "", "127.0.0.1:0", "", "127.0.0.1", envPace+"=2ms")
	waitFlowing(t, srv, cli, 50)
	bound := netHBInterval + netHBTimeout
	for cycle := 1; cycle <= faultCycles; cycle++ {
		t0 := time.Now()
		cli.signal(t, syscall.SIGSTOP)
		var end int64
		srv.waitFor(t, "session end while the sender is stopped", bound+detectMargin+10*time.Second, func() bool {
			var ok bool
			end, ok = srv.endAfter(t0.UnixNano())
			return ok
		})
		detect := time.Duration(end - t0.UnixNano())
		if detect > bound+detectMargin {
			t.Errorf("cycle %d: server ended the stopped sender's session after %v, bound %v + margin %v", cycle, detect, bound, detectMargin)
		}
		holdUntil(t0.Add(bound + detectMargin))
		t1 := time.Now()
		cli.signal(t, syscall.SIGCONT)
		var down, up stateEvent
		cli.waitFor(t, "disconnected state after SIGCONT", 30*time.Second, func() bool {
			var ok bool
			down, ok = cli.stateAfter("disconnected", t0.UnixNano())
			return ok
		})
		cli.waitFor(t, "reconnection after SIGCONT", 30*time.Second, func() bool {
			var ok bool
			up, ok = cli.stateAfter("connected", down.at)
			return ok
		})
		t.Logf("cycle %d: server ended the stopped sender's session after %dms (bound %dms+margin %dms); sender saw it %dms and reconnected %dms after SIGCONT; cause %s",
			cycle, detect.Milliseconds(), bound.Milliseconds(), detectMargin.Milliseconds(),
			time.Duration(down.at-t1.UnixNano()).Milliseconds(), time.Duration(up.at-t1.UnixNano()).Milliseconds(), down.cause)
		waitResumed(t, srv, 20)
	}
	t.Logf("sender %s", finish(t, srv, cli))
}
