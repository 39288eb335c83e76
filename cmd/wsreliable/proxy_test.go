//go:build unix

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/fixedport"
	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/reliable"
)

// The reverse-proxy tests run serve behind nginx and HAProxy with the
// configurations in deploy/, the files the README points operators to,
// changed only in the addresses: the proxy listens on a reserved loopback
// port and forwards to serve's. They restart the proxy under a stream of
// messages and check that every message arrives once, in order, and log
// how long the client took to get an acknowledgement through the proxy
// once it was back up.

// proxyRestarts is how many times each test restarts its proxy, each
// time after the client's session through it has lasted sessionAge.
const (
	proxyRestarts = 3
	sessionAge    = 1500 * time.Millisecond
)

// A proxySpec says how to run one kind of proxy from its deploy/ file.
type proxySpec struct {
	name string // binary name
	file string // its configuration, relative to the repository root
	// edits are the replacements that make the file listen on listen and
	// forward to upstream; each old string must occur in the file.
	edits func(listen, upstream string) [][2]string
	// args returns the command line that runs the proxy in the
	// foreground with the rendered configuration conf, keeping every file
	// it writes in dir.
	args func(t *testing.T, conf, dir string) []string
}

var nginxSpec = proxySpec{
	name: "nginx",
	file: "deploy/nginx/wsreliable.conf",
	edits: func(listen, upstream string) [][2]string {
		return [][2]string{
			{"listen 80;", "listen " + listen + ";"},
			{"127.0.0.1:8080", upstream},
		}
	},
	// The deploy file goes in the http context of a main configuration
	// like Debian's, with every path in dir so that no root-owned file
	// is needed.
	args: func(t *testing.T, conf, dir string) []string {
		user := ""
		if os.Geteuid() == 0 {
			user = "user root root;" // workers must reach dir (0700)
		}
		main := fmt.Sprintf(`%s
daemon off;
master_process on;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
worker_shutdown_timeout 30s;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    include %[3]s;
}
`, user, dir, conf)
		path := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(path, []byte(main), 0o644); err != nil {
			t.Fatal(err)
		}
		return []string{"-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path}
	},
}

var haproxySpec = proxySpec{
	name: "haproxy",
	file: "deploy/haproxy/haproxy.cfg",
	edits: func(listen, upstream string) [][2]string {
		return [][2]string{
			{"bind :80", "bind " + listen},
			{"127.0.0.1:8080", upstream},
		}
	},
	// -db: foreground, no daemon; the file logs to stdout.
	args: func(t *testing.T, conf, dir string) []string {
		return []string{"-db", "-f", conf}
	},
}

func TestBehindNginx(t *testing.T)   { testBehindProxy(t, nginxSpec) }
func TestBehindHAProxy(t *testing.T) { testBehindProxy(t, haproxySpec) }

// lookProxy finds the proxy's binary. Without it the test skips, loudly,
// except under CI=true, where .ci/run installs it and its absence is a
// failure.
func lookProxy(t *testing.T, name string) string {
	t.Helper()
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
		path := filepath.Join(dir, name)
		if fi, err := os.Stat(path); err == nil && !fi.IsDir() {
			return path
		}
	}
	msg := fmt.Sprintf("SKIPPED: %s is not installed (not on PATH, /usr/sbin or /usr/local/sbin), so the tested %s configuration in deploy/ was not run; install it (Debian: apt-get install nginx-light haproxy)", name, name)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true requires it")
	}
	t.Skip(msg)
	return ""
}

// proxyProc is one running proxy process.
type proxyProc struct {
	cmd    *exec.Cmd
	output *syncBuffer
	done   chan struct{} // closed when the process has exited
}

// startProxy starts bin with args in a process group of its own.
func startProxy(t *testing.T, bin string, args []string) *proxyProc {
	t.Helper()
	p := &proxyProc{cmd: exec.Command(bin, args...), output: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	return p
}

// kill ends the proxy's whole process group (nginx's workers too) with
// SIGKILL, a crash, and waits up to 10 s for the process to be reaped.
func (p *proxyProc) kill() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// waitAccepting polls addr until a TCP connection to it succeeds and
// returns the time it did, failing if p exits first or 10 s pass.
func (p *proxyProc) waitAccepting(t *testing.T, addr string) time.Time {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			up := time.Now()
			c.Close()
			return up
		}
		select {
		case <-p.done:
			t.Fatalf("proxy exited before accepting on %s: %v\n%s", addr, p.cmd.ProcessState, p.output)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy did not accept on %s within 10s (last: %v)\n%s", addr, err, p.output)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not ordering
	}
}

// renderProxyConf writes the deploy file with its edits into dir.
func renderProxyConf(t *testing.T, spec proxySpec, dir, listen, upstream string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", spec.file))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(src)
	for _, e := range spec.edits(listen, upstream) {
		if !strings.Contains(conf, e[0]) {
			t.Fatalf("%s no longer contains %q, which the test replaces; update the test with the file", spec.file, e[0])
		}
		conf = strings.ReplaceAll(conf, e[0], e[1])
	}
	path := filepath.Join(dir, filepath.Base(spec.file))
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// ackLog records when each message's receipt settled, in send order.
type ackLog struct {
	mu    sync.Mutex
	times []time.Time
	err   error
}

func (a *ackLog) add(at time.Time, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil && a.err == nil {
		a.err = err
	}
	a.times = append(a.times, at)
}

func (a *ackLog) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.times)
}

// firstAfter returns the time of the first acknowledgement at or after t.
func (a *ackLog) firstAfter(t time.Time) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, at := range a.times {
		if !at.Before(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

func testBehindProxy(t *testing.T, spec proxySpec) {
	bin := lookProxy(t, spec.name)
	dir := t.TempDir()
	port, err := fixedport.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { port.Close() })

	// serve runs as deploy/ recommends: with tokens, trusting the proxy.
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("device1 proxy-test-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, filepath.Join(dir, "srv"), "-tokens-file", tokens, "-trusted-proxies", "127.0.0.0/8", "-v")
	conf := renderProxyConf(t, spec, dir, port.Addr(), srv.addr)
	args := spec.args(t, conf, dir)
	proxy := startProxy(t, bin, args)
	proxy.waitAccepting(t, port.Addr())
	checkForwardedFor(t, spec.name, port.Addr(), srv)

	// connectedAt is when the client's current session began (0 while
	// it has none).
	var connectedAt atomic.Int64
	client, err := reliable.NewClient("ws://"+port.Addr()+"/ws", filepath.Join(dir, "client.db"), &reliable.ClientOptions{
		HeartbeatInterval: 500 * time.Millisecond,
		HeartbeatTimeout:  time.Second,
		Header: func(context.Context) (http.Header, error) {
			return http.Header{"Authorization": {"Bearer proxy-test-token"}}, nil
		},
		OnStateChange: func(s reliable.State, _ error) {
			if s == reliable.StateConnected {
				connectedAt.Store(time.Now().UnixNano())
			} else {
				connectedAt.Store(0)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })

	// One goroutine sends m000000, m000001, … until stop; another waits
	// for their receipts in order and records when each settled. The
	// channel between them bounds the messages in flight.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	receipts := make(chan *reliable.Receipt, 256)
	acks := &ackLog{}
	var wg sync.WaitGroup
	sent := 0
	var sendErr error
	wg.Go(func() {
		defer close(receipts)
		for ; ; sent++ {
			select {
			case <-stop:
				return
			default:
			}
			r, err := client.Send(ctx, fmt.Appendf(nil, "m%06d", sent))
			if err != nil {
				sendErr = err
				return
			}
			select {
			case receipts <- r:
			case <-ctx.Done():
				sendErr = ctx.Err()
				return
			}
		}
	})
	wg.Go(func() {
		for r := range receipts {
			err := r.Wait(ctx)
			acks.add(time.Now(), err)
		}
	})
	stopSending := sync.OnceFunc(func() { close(stop) })
	defer func() { stopSending(); cancel(); wg.Wait() }()

	waitAcks := func(n int, what string) {
		t.Helper()
		testkit.Eventually(t, 30*time.Second, func() bool { return acks.count() >= n },
			"%s through %s: %d messages acknowledged, want %d\nproxy output:\n%s\nserve stderr:\n%s",
			what, spec.name, acks.count(), n, proxy.output, srv.stderr)
	}
	// Each restart comes after a session that has carried messages for
	// longer than a tenth of the client's HealthyAfter (10 s by default),
	// as a proxy restart meets clients in production: the client then
	// redials once quickly (below BackoffMin) instead of waiting the
	// ceiling its earlier failed dials had reached.
	settled := func(what string) {
		t.Helper()
		waitAcks(acks.count()+300, what)
		testkit.Eventually(t, 30*time.Second, func() bool {
			at := connectedAt.Load()
			return at != 0 && time.Since(time.Unix(0, at)) >= sessionAge
		}, "%s: the client's session through %s did not last %v", what, spec.name, sessionAge)
	}

	var reconnects []time.Duration
	for i := range proxyRestarts {
		settled(fmt.Sprintf("before restart %d", i+1))
		before := acks.count()
		killed := time.Now()
		proxy.kill()
		down := time.Since(killed)
		proxy = startProxy(t, bin, args)
		up := proxy.waitAccepting(t, port.Addr())
		var first time.Time
		testkit.Eventually(t, 30*time.Second, func() bool {
			var ok bool
			first, ok = acks.firstAfter(up)
			return ok
		}, "restart %d: no acknowledgement through %s after it came back (%d acknowledged before the kill, %d now)\nproxy output:\n%s\nserve stderr:\n%s",
			i+1, spec.name, before, acks.count(), proxy.output, srv.stderr)
		reconnects = append(reconnects, first.Sub(up))
		t.Logf("%s restart %d: killed and reaped in %v, accepting again %v after the kill; first acknowledgement through it %v after it accepted (%v after the kill)",
			spec.name, i+1, down.Round(time.Microsecond), up.Sub(killed).Round(time.Microsecond),
			first.Sub(up).Round(time.Microsecond), first.Sub(killed).Round(time.Microsecond))
	}
	stopSending()
	wg.Wait()
	if sendErr != nil && !errors.Is(sendErr, context.Canceled) {
		t.Fatalf("Send: %v", sendErr)
	}
	if acks.err != nil {
		t.Fatalf("a receipt settled with %v", acks.err)
	}
	if acks.count() != sent {
		t.Fatalf("%d receipts settled for %d messages sent", acks.count(), sent)
	}
	t.Logf("%s: %d messages, %d restarts; reconnect (proxy accepting → first ack through it): %v",
		spec.name, sent, proxyRestarts, reconnects)

	// serve writes each line before it acknowledges the message, so every
	// acknowledged message has its line by now.
	lines := srv.stdout.lines()
	if len(lines) != sent {
		t.Errorf("serve printed %d lines for %d messages", len(lines), sent)
	}
	for i, line := range lines {
		var d struct{ Payload string }
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, line)
		}
		if want := fmt.Sprintf("m%06d", i); d.Payload != want {
			t.Fatalf("line %d carries %q, want %q (lost, doubled or reordered)", i+1, d.Payload, want)
		}
	}
}

// checkForwardedFor sends a request through the proxy at addr as if a
// proxy before it had already recorded client 192.0.2.7, and checks that
// serve, trusting loopback proxies, took that for the client's address:
// the proxy passed X-Forwarded-For on, appending its own peer. It also
// checks that the proxy answers 404 for serve's API paths.
func checkForwardedFor(t *testing.T, name, addr string, srv *serveProc) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	get := func(path string) int {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Forwarded-For", "192.0.2.7")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s through %s: %v", path, name, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/ws"); code != http.StatusUnauthorized { // no token
		t.Errorf("GET /ws through %s: %d, want 401 from serve", name, code)
	}
	if code := get("/v1/clients"); code != http.StatusNotFound {
		t.Errorf("GET /v1/clients through %s: %d, want 404 (the deploy file proxies /ws only)", name, code)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return strings.Contains(srv.stderr.String(), "client=192.0.2.7") },
		"serve did not take the client's address from %s's X-Forwarded-For; stderr:\n%s", name, srv.stderr)
}
