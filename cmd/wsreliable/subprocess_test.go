package main

import (
	"errors"
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
