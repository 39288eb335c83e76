package main

import (
	"encoding/base64"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
)

// TestRecvEndToEnd pushes through the API to two clients running recv,
// singly and fanned out: each prints every push addressed to it once, in
// order, and a restart on the same -data prints nothing again.
func TestRecvEndToEnd(t *testing.T) {
	srv, c := startServeAPI(t)
	dataA, dataB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	ra := startRecv(t, srv.url, dataA, "a")
	rb := startRecv(t, srv.url, dataB, "b")

	const n = 300
	var (
		wantA, wantB         []pushed
		payloadsA, payloadsB []string
	)
	for i := range n {
		payload := fmt.Sprintf("push %d", i)
		body := map[string]any{"payload": payload}
		switch i {
		case 10:
			payload = ""
			body["payload"] = payload
		case 20:
			payload = "bad \xff\xfe utf-8"
			body = map[string]any{"payload_b64": base64.StdEncoding.EncodeToString([]byte(payload))}
		case 30:
			payload = "quotes \" and \\ and <html> & tabs\tand ünïcödé\nnewline \u2028"
			body["payload"] = payload
		}
		switch i % 3 {
		case 0:
			body["client"] = "a"
		case 1:
			body["client"] = "b"
		default:
			body["clients"] = []string{"b", "a"}
		}
		for _, m := range c.pushOK(t, pushBody(body)) {
			switch m.Client {
			case "a":
				wantA, payloadsA = append(wantA, m), append(payloadsA, payload)
			case "b":
				wantB, payloadsB = append(wantB, m), append(payloadsB, payload)
			default:
				t.Fatalf("push answered for client %q", m.Client)
			}
		}
	}
	gotA := waitReceived(t, ra.stdout, len(wantA))
	checkReceived(t, gotA, wantA, payloadsA)
	checkReceived(t, waitReceived(t, rb.stdout, len(wantB)), wantB, payloadsB)
	for i, g := range gotA {
		if g.Seq != uint64(i+1) {
			t.Fatalf("a's line %d has seq %d", i+1, g.Seq)
		}
	}
	for i, p := range payloadsA {
		if p == "bad \xff\xfe utf-8" && gotA[i].PayloadB64 == nil {
			t.Errorf("invalid UTF-8 payload not printed as payload_b64: %+v", gotA[i])
		}
	}
	c.waitStatus(t, wantA[len(wantA)-1].ID, "acked")

	// A clean stop exits 0; a restart on the same -data prints only what
	// is new.
	if code := ra.stop(); code != exitOK {
		t.Fatalf("recv exited with %d; stderr:\n%s", code, ra.stderr)
	}
	if s := ra.stderr.String(); s != "" {
		t.Errorf("recv wrote to stderr:\n%s", s)
	}
	later := c.pushText(t, "a", "while away")
	ra2 := startRecv(t, srv.url, dataA, "a")
	last := c.pushText(t, "a", "after restart")
	checkReceived(t, waitReceived(t, ra2.stdout, 2), []pushed{later, last}, []string{"while away", "after restart"})
	c.waitStatus(t, last.ID, "acked")
	if n := len(ra2.stdout.lines()); n != 2 {
		t.Errorf("restarted recv printed %d lines, want 2:\n%s", n, ra2.stdout)
	}
	if code := ra2.stop(); code != exitOK {
		t.Fatalf("restarted recv exited with %d; stderr:\n%s", code, ra2.stderr)
	}

	// The store was closed cleanly: inspect can open it.
	var out, errb syncBuffer
	if code := runInspect(t.Context(), []string{"-data", dataA}, nil, &out, &errb); code != exitOK {
		t.Errorf("inspect after recv exited with %d: %s", code, errb.String())
	}
}

// TestRecvSIGKILL pushes numbered messages to one client through the API
// while recv, a child process, is SIGKILLed three times and started again
// on the same -data, the first kills while it works through a backlog.
// recv writes its lines out before the watermark commit that precedes
// their ack, so every push is printed, the first copy of each in push
// order, and a push is printed twice only because a kill came between
// its line's write and that commit: at most recv's AckBatch (the library
// default, 256) per kill.
func TestRecvSIGKILL(t *testing.T) {
	const n, kills, ackBatch = 3000, 3, 256
	srv, c := startServeAPI(t)
	data := filepath.Join(t.TempDir(), "recv")
	hb := []string{"-heartbeat", "200ms", "-heartbeat-timeout", "500ms"}
	var outs []*syncBuffer
	printed := func() int {
		total := 0
		for _, o := range outs {
			total += len(o.lines())
		}
		return total
	}
	type proc struct {
		cmd    *exec.Cmd
		stderr *syncBuffer
		wait   func(time.Duration) (int, error)
	}
	startRecvProc := func() proc {
		cmd, stdout, stderr, wait := startBinary(t, "", append([]string{"recv", "-url", srv.url, "-data", data, "-client-id", "k"}, hb...)...)
		outs = append(outs, stdout)
		return proc{cmd, stderr, wait}
	}

	// The pusher queues the messages one request at a time, so their
	// sequence is their number; it stops early if the test ends first.
	// recv starts once half are queued, so it first takes a backlog in
	// full batches and the early kills land in the middle of them.
	var queued atomic.Int64
	pushErr := make(chan error, 1)
	stop, pusherDone := make(chan struct{}), make(chan struct{})
	defer func() {
		close(stop)
		<-pusherDone
	}()
	go func() {
		defer close(pusherDone)
		for i := range n {
			select {
			case <-stop:
				pushErr <- fmt.Errorf("stopped after %d pushes", i)
				return
			default:
			}
			resp, b, err := c.try("POST", "/v1/push", "Bearer "+testAPIKey, fmt.Sprintf(`{"client":"k","payload":"msg-%06d"}`, i))
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("HTTP %d %s", resp.StatusCode, b)
			}
			if err != nil {
				pushErr <- fmt.Errorf("push %d: %w", i, err)
				return
			}
			queued.Add(1)
		}
		pushErr <- nil
	}()

	testkit.Eventually(t, time.Minute, func() bool { return queued.Load() >= n/2 || len(pushErr) > 0 },
		"%d of %d pushes queued", queued.Load(), n/2)
	rp := startRecvProc()
	for k := 1; k <= kills; k++ {
		at := k * n / (kills + 2)
		testkit.Eventually(t, time.Minute, func() bool { return printed() >= at },
			"kill %d: %d lines printed, waiting for %d; recv's stderr:\n%s", k, printed(), at, rp.stderr)
		if err := rp.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		if _, err := rp.wait(20 * time.Second); err != nil {
			t.Fatalf("killed recv: %v", err)
		}
		rp = startRecvProc()
	}
	select {
	case err := <-pushErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the pushes did not finish within 2 minutes")
	}
	lastPayload := fmt.Sprintf(`"msg-%06d"`, n-1)
	cur := outs[len(outs)-1]
	testkit.Eventually(t, time.Minute, func() bool { return strings.Contains(cur.String(), lastPayload) },
		"the last push was not printed; recv's stderr:\n%s", rp.stderr)
	if err := rp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := rp.wait(20 * time.Second); err != nil || code != 0 {
		t.Fatalf("recv after SIGTERM: exit %d, %v; stderr:\n%s", code, err, rp.stderr)
	}

	seq := firstCopies{what: "push"}
	for _, o := range outs {
		for _, r := range decodeLines[received](t, o.lines()) {
			var i int
			if r.Payload == nil {
				t.Fatalf("unexpected line %+v", r)
			}
			if _, err := fmt.Sscanf(*r.Payload, "msg-%06d", &i); err != nil {
				t.Fatalf("line %+v: %v", r, err)
			}
			if r.Seq != uint64(i+1) {
				t.Fatalf("push %d printed with seq %d", i, r.Seq)
			}
			seq.see(t, i)
		}
	}
	t.Logf("%d pushes through %d recv processes (%d SIGKILLed): %d printed twice", n, len(outs), kills, seq.dups)
	seq.check(t, n, kills, ackBatch)
}
