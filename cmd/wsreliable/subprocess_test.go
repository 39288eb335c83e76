package main

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
)

// startBinary starts the wsreliable binary built by TestMain.
func startBinary(t *testing.T, stdin string, args ...string) (cmd *exec.Cmd, stdout, stderr *syncBuffer, wait func(time.Duration) (int, error)) {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("the wsreliable binary could not be built, so this test cannot run: %v", buildErr)
	}
	cmd = exec.Command(binPath, args...)
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Stdin = strings.NewReader(stdin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	wait = func(timeout time.Duration) (int, error) {
		select {
		case err := <-done:
			exited = true
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode(), nil
			}
			return cmd.ProcessState.ExitCode(), err
		case <-time.After(timeout):
			return -1, errors.New("timed out")
		}
	}
	t.Cleanup(func() {
		if !exited {
			cmd.Process.Kill()
			<-done
		}
	})
	return cmd, stdout, stderr, wait
}

var listeningRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

func TestServeProcessSIGTERM(t *testing.T) {
	data := filepath.Join(t.TempDir(), "srv")
	cmd, stdout, stderr, wait := startBinary(t, "", "serve", "-listen", "127.0.0.1:0", "-data", data)

	var addr string
	testkit.Eventually(t, 20*time.Second, func() bool {
		m := listeningRE.FindStringSubmatch(stderr.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	}, "serve did not log its address; stderr:\n%s", stderr)

	code, _, errOut := sendRun(t, "alpha\nbeta\n", "-url", "ws://"+addr+"/ws", "-data", filepath.Join(t.TempDir(), "cli"), "-wait", "30s")
	if code != exitOK {
		t.Fatalf("send exited with %d: %s", code, errOut)
	}
	got := decodeLines[delivered](t, stdout.lines())
	if len(got) != 2 || *got[0].Payload != "alpha" || *got[1].Payload != "beta" {
		t.Fatalf("serve printed %+v", got)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := wait(20 * time.Second)
	if err != nil {
		t.Fatalf("serve after SIGTERM: %v; stderr:\n%s", err, stderr)
	}
	if code != 0 {
		t.Fatalf("serve exited with %d after SIGTERM; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"msg=\"shutting down\"", "msg=\"server closed\"", "msg=stopped"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("serve's stderr lacks %s:\n%s", want, stderr)
		}
	}
	if n := len(stdout.lines()); n != 2 {
		t.Errorf("stdout has %d lines after shutdown, want 2 message lines only", n)
	}

	// The store was closed cleanly: inspect can open it.
	var out, errb syncBuffer
	if code := runInspect(t.Context(), []string{"-data", data}, nil, &out, &errb); code != exitOK {
		t.Errorf("inspect after shutdown exited with %d: %s", code, errb.String())
	}
}

func TestSendProcessSIGINT(t *testing.T) {
	cli := filepath.Join(t.TempDir(), "cli")
	cmd, stdout, stderr, wait := startBinary(t, "x\ny\n", "send", "-url", deadURL(t), "-data", cli, "-receipts")
	// Once both lines are queued, send waits for acks that cannot come.
	waitLines(t, stdout, 2, 20*time.Second)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	code, err := wait(20 * time.Second)
	if err != nil {
		t.Fatalf("send after SIGINT: %v; stderr:\n%s", err, stderr)
	}
	if code != 130 {
		t.Fatalf("send exited with %d after SIGINT, want 130; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("stderr:\n%s", stderr)
	}
	var out, errb syncBuffer
	if code := runInspect(t.Context(), []string{"-data", cli}, nil, &out, &errb); code != exitOK {
		t.Fatalf("inspect exited with %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "queued:     2 messages") {
		t.Errorf("inspect after the interrupt:\n%s", out.String())
	}
}

// TestPipeServeSIGKILL pipes lines from one send process into serve and
// SIGKILLs serve three times mid-stream, each time starting it again on
// the same -data and port. serve writes a client's lines only before the
// watermark commit that precedes its ack, so every line comes out, the
// first copy of each in input order, and a line comes out twice only
// because a kill came between its write and that commit: at most
// AckBatch (256) per kill.
func TestPipeServeSIGKILL(t *testing.T) {
	const n, kills, ackBatch = 60_000, 3, 256
	var in strings.Builder
	for i := range n {
		fmt.Fprintf(&in, "line-%06d\n", i)
	}
	addr := testkit.FreeAddr(t)
	data := filepath.Join(t.TempDir(), "srv")
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
		cmd  *exec.Cmd
		wait func(time.Duration) (int, error)
	}
	startServe := func() proc {
		cmd, stdout, stderr, wait := startBinary(t, "", append([]string{"serve", "-listen", addr, "-data", data}, hb...)...)
		testkit.Eventually(t, 20*time.Second, func() bool { return listeningRE.MatchString(stderr.String()) },
			"serve did not listen; stderr:\n%s", stderr)
		outs = append(outs, stdout)
		return proc{cmd, wait}
	}

	srv := startServe()
	_, _, sendErr, sendWait := startBinary(t, in.String(),
		append([]string{"send", "-url", "ws://" + addr + "/ws", "-data", filepath.Join(t.TempDir(), "cli"), "-wait", "2m"}, hb...)...)
	for k := 1; k <= kills; k++ {
		at := k * n / (kills + 2)
		testkit.Eventually(t, time.Minute, func() bool { return printed() >= at },
			"kill %d: %d lines printed, waiting for %d", k, printed(), at)
		if err := srv.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.wait(20 * time.Second); err != nil {
			t.Fatalf("killed serve: %v", err)
		}
		srv = startServe()
	}
	code, err := sendWait(2 * time.Minute)
	if err != nil || code != exitOK {
		t.Fatalf("send: exit %d, %v; stderr:\n%s", code, err, sendErr)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := srv.wait(20 * time.Second); err != nil || code != 0 {
		t.Fatalf("serve after SIGTERM: exit %d, %v", code, err)
	}

	seq := firstCopies{what: "line"}
	for _, o := range outs {
		for _, d := range decodeLines[delivered](t, o.lines()) {
			var i int
			if d.Payload == nil || !strings.HasPrefix(*d.Payload, "line-") {
				t.Fatalf("unexpected line %+v", d)
			}
			if _, err := fmt.Sscanf(*d.Payload, "line-%06d", &i); err != nil {
				t.Fatal(err)
			}
			seq.see(t, i)
		}
	}
	t.Logf("%d lines through %d serve processes (%d SIGKILLed): %d printed twice", n, len(outs), kills, seq.dups)
	seq.check(t, n, kills, ackBatch)
}

// firstCopies follows numbered items coming out of processes that are
// killed and restarted: each must be the next one or repeat an earlier one
// (a duplicate, from a crash before the watermark commit); anything else
// is a loss or a reordering.
type firstCopies struct {
	what       string // "line", "push"
	next, dups int
}

func (f *firstCopies) see(t *testing.T, i int) {
	t.Helper()
	switch {
	case i == f.next:
		f.next++
	case i < f.next:
		f.dups++
	default:
		t.Fatalf("%s %d came out after %s %d: %s %d is missing or out of order", f.what, i, f.what, f.next-1, f.what, f.next)
	}
}

// check fails unless all n came out, with at most ackBatch duplicates per
// kill.
func (f *firstCopies) check(t *testing.T, n, kills, ackBatch int) {
	t.Helper()
	if f.next != n {
		t.Fatalf("only %ss 0..%d came out of %d", f.what, f.next-1, n)
	}
	if f.dups > kills*ackBatch {
		t.Fatalf("%d %ss printed twice, more than AckBatch (%d) per kill", f.dups, f.what, ackBatch)
	}
}
