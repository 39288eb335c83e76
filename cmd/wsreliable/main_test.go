package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/internal/testkit"
)

// binPath is the wsreliable binary built by TestMain for the subprocess
// tests; buildErr says why it is missing.
var (
	binPath  string
	buildErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsreliable-bin-")
	if err != nil {
		buildErr = err
	} else {
		binPath = filepath.Join(dir, "wsreliable")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	code := m.Run()
	if dir != "" {
		os.RemoveAll(dir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: leaked goroutines: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines returns the complete lines written so far.
func (s *syncBuffer) lines() []string {
	str := s.String()
	if i := strings.LastIndexByte(str, '\n'); i >= 0 {
		str = str[:i]
	} else {
		return nil
	}
	return strings.Split(str, "\n")
}

// serveProc is a serve command running in-process.
type serveProc struct {
	addr   string // host:port
	url    string // its WebSocket endpoint
	stdout *syncBuffer
	stderr *syncBuffer
	stop   func() int
}

// startServe runs serve on 127.0.0.1:0 with its store in dataDir and the
// extra flags until the returned stop is called (or the test ends).
func startServe(t *testing.T, dataDir string, extra ...string) *serveProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &serveProc{stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	addrs := make(chan net.Addr, 1)
	codes := make(chan int, 1)
	args := append([]string{"-listen", "127.0.0.1:0", "-data", dataDir, "-heartbeat", "500ms", "-heartbeat-timeout", "1s"}, extra...)
	go func() { codes <- serve(ctx, args, p.stdout, p.stderr, func(a net.Addr) { addrs <- a }) }()
	select {
	case a := <-addrs:
		p.addr = a.String()
		p.url = "ws://" + p.addr + "/ws"
	case code := <-codes:
		cancel()
		t.Fatalf("serve exited with %d before listening; stderr:\n%s", code, p.stderr)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatalf("serve did not listen within 10s; stderr:\n%s", p.stderr)
	}
	var once sync.Once
	code := -1
	p.stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-codes:
			case <-time.After(20 * time.Second):
				t.Errorf("serve did not stop within 20s after cancellation")
			}
		})
		return code
	}
	t.Cleanup(func() { p.stop() })
	return p
}

// waitLines polls until buf holds at least n complete lines.
func waitLines(t *testing.T, buf *syncBuffer, n int, timeout time.Duration) []string {
	t.Helper()
	testkit.Eventually(t, timeout, func() bool { return len(buf.lines()) >= n },
		"got %d lines, want %d:\n%s", len(buf.lines()), n, buf)
	return buf.lines()
}

func TestUsage(t *testing.T) {
	cases := []struct {
		name string
		args []string
		code int
		out  string // expected in stdout+stderr
	}{
		{"no command", nil, exitUsage, "Commands:"},
		{"unknown command", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"help", []string{"-h"}, exitOK, "inspect"},
		{"send without url", []string{"send", "-data", t.TempDir()}, exitUsage, "-url is required"},
		{"serve without data", []string{"serve"}, exitUsage, "-data (or -store) is required"},
		{"serve with data and store", []string{"serve", "-data", t.TempDir(), "-store", "postgres://h/db"}, exitUsage, "-data and -store exclude each other"},
		{"serve with a store that is not postgres", []string{"serve", "-store", "mysql://h/db"}, exitUsage, "-store must be a postgres://"},
		{"send bad flag", []string{"send", "-bogus"}, exitUsage, "flag provided but not defined"},
		{"send help", []string{"send", "-h"}, exitOK, "-receipts"},
		{"recv help", []string{"recv", "-h"}, exitOK, "-client-id"},
		{"recv without url", []string{"recv", "-data", t.TempDir(), "-client-id", "a"}, exitUsage, "-url is required"},
		{"recv without data", []string{"recv", "-url", "ws://127.0.0.1:1/ws", "-client-id", "a"}, exitUsage, "-data is required"},
		{"recv without client id", []string{"recv", "-url", "ws://127.0.0.1:1/ws", "-data", t.TempDir()}, exitUsage, "-client-id is required"},
		{"recv bad heartbeat", []string{"recv", "-url", "ws://127.0.0.1:1/ws", "-data", t.TempDir(), "-client-id", "a", "-heartbeat", "-1s"}, exitUsage, "-heartbeat must not be negative"},
		{"help lists recv", []string{"-h"}, exitOK, "recv      connect to -url"},
		{"serve help lists the API", []string{"serve", "-h"}, exitOK, "-outbox-max-messages"},
		{"extra argument", []string{"inspect", "-data", "x", "y"}, exitUsage, `unexpected argument "y"`},
		{"version", []string{"version"}, exitOK, "wsreliable "},
		{"demo bad clients", []string{"demo", "-clients", "0"}, exitUsage, "-clients"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(t.Context(), tc.args, strings.NewReader(""), &out, &errb)
			if code != tc.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.code, errb.String())
			}
			if all := out.String() + errb.String(); !strings.Contains(all, tc.out) {
				t.Errorf("output does not contain %q:\n%s", tc.out, all)
			}
		})
	}
}

func TestReadLine(t *testing.T) {
	cases := []struct {
		name string
		in   string
		max  int
		want []string
		err  bool
	}{
		{"empty input", "", 10, nil, false},
		{"one newline", "\n", 10, []string{""}, false},
		{"no final newline", "a\nb", 10, []string{"a", "b"}, false},
		{"crlf", "a\r\n\r\nb\r", 10, []string{"a", "", "b"}, false},
		{"only cr kept inside", "a\rb\n", 10, []string{"a\rb"}, false},
		{"exactly max", "abcd\r\n", 4, []string{"abcd"}, false},
		{"too long", "abcde\n", 4, nil, true},
		{"too long last", "ab\nabcde", 4, []string{"ab"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lines := make(chan lineItem, 16)
			done := make(chan struct{})
			defer close(done)
			readLines(strings.NewReader(tc.in), tc.max, lines, done)
			var got []string
			var gotErr error
			for it := range lines {
				if it.err != nil {
					gotErr = it.err
					continue
				}
				got = append(got, string(it.line))
			}
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
				t.Errorf("lines %q, want %q", got, tc.want)
			}
			if (gotErr != nil) != tc.err {
				t.Errorf("error %v, want error: %v", gotErr, tc.err)
			}
		})
	}
}

func TestReadLineLong(t *testing.T) {
	// Lines longer than bufio's buffer are reassembled.
	long := strings.Repeat("x", 200<<10)
	lines := make(chan lineItem, 4)
	done := make(chan struct{})
	defer close(done)
	readLines(strings.NewReader(long+"\r\n"+long), maxLineBytes, lines, done)
	n := 0
	for it := range lines {
		if it.err != nil || string(it.line) != long {
			t.Fatalf("line %d: err %v, %d bytes", it.n, it.err, len(it.line))
		}
		n++
	}
	if n != 2 {
		t.Fatalf("%d lines, want 2", n)
	}
}
