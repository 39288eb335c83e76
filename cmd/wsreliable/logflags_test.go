package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

func TestLogAndBackoffFlagsUsage(t *testing.T) {
	dead := "ws://127.0.0.1:1/ws"
	cases := []struct {
		name string
		args []string
		out  string // expected on stderr
	}{
		{"send bad log format", []string{"send", "-url", dead, "-data", t.TempDir(), "-log-format", "xml"}, `invalid value "xml" for flag -log-format`},
		{"send bad log level", []string{"send", "-url", dead, "-data", t.TempDir(), "-log-level", "verbose"}, `invalid value "verbose" for flag -log-level`},
		{"recv bad log format", []string{"recv", "-url", dead, "-data", t.TempDir(), "-client-id", "a", "-log-format", "JSON"}, "flag -log-format"},
		{"serve bad log level", []string{"serve", "-data", t.TempDir(), "-log-level", "warning"}, "flag -log-level"},
		{"serve -v against -log-level", []string{"serve", "-data", t.TempDir(), "-v", "-log-level", "error"}, "conflicts with -log-level error"},
		{"send -v against -log-level", []string{"send", "-url", dead, "-data", t.TempDir(), "-log-level", "info", "-v"}, "conflicts with -log-level info"},
		{"send backoff max below min", []string{"send", "-url", dead, "-data", t.TempDir(), "-backoff-max", "50ms"}, "-backoff-max must be at least 100ms"},
		{"recv backoff max negative", []string{"recv", "-url", dead, "-data", t.TempDir(), "-client-id", "a", "-backoff-max", "-1s"}, "-backoff-max must be at least"},
		{"send healthy after zero", []string{"send", "-url", dead, "-data", t.TempDir(), "-healthy-after", "0s"}, "-healthy-after must be positive"},
		{"recv healthy after negative", []string{"recv", "-url", dead, "-data", t.TempDir(), "-client-id", "a", "-healthy-after", "-1s"}, "-healthy-after must be positive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(t.Context(), tc.args, strings.NewReader(""), &out, &errb)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, exitUsage, errb.String())
			}
			if !strings.Contains(errb.String(), tc.out) {
				t.Errorf("stderr does not contain %q:\n%s", tc.out, errb.String())
			}
		})
	}
}

func TestHelpListsLogAndBackoffFlags(t *testing.T) {
	for _, cmd := range []string{"send", "recv", "serve"} {
		var out bytes.Buffer
		run(t.Context(), []string{cmd, "-h"}, strings.NewReader(""), &out, &out)
		want := []string{"-log-format", "-log-level", "-v"}
		if cmd != "serve" {
			want = append(want, "-backoff-max", "-healthy-after")
		}
		if cmd == "send" {
			want = append(want, "-progress")
		}
		for _, w := range want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s -h does not list %s:\n%s", cmd, w, out.String())
			}
		}
	}
}

// checkJSONLines fails unless every line of s is a JSON object with
// "level" and "msg".
func checkJSONLines(t *testing.T, what, s string) {
	t.Helper()
	if s == "" {
		t.Errorf("%s: no output", what)
		return
	}
	if !strings.HasSuffix(s, "\n") {
		t.Errorf("%s: output does not end with a newline: %q", what, s)
	}
	for i, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("%s line %d is not JSON (%v): %q", what, i+1, err, line)
			continue
		}
		if _, ok := rec["level"].(string); !ok {
			t.Errorf("%s line %d has no level: %q", what, i+1, line)
		}
		if _, ok := rec["msg"].(string); !ok {
			t.Errorf("%s line %d has no msg: %q", what, i+1, line)
		}
	}
}

func TestLogFormatJSON(t *testing.T) {
	srv := startServe(t, filepath.Join(t.TempDir(), "srv"), "-log-format", "json", "-log-level", "debug")

	// A successful run, with its summary at info.
	code, _, errOut := sendRun(t, "a\nb\nc\n", "-url", srv.url, "-data", filepath.Join(t.TempDir(), "ok"),
		"-log-format", "json", "-log-level", "debug", "-wait", "30s")
	if code != exitOK {
		t.Fatalf("send exited with %d; stderr:\n%s", code, errOut)
	}
	checkJSONLines(t, "send stderr", errOut)
	if !strings.Contains(errOut, `"msg":"3 lines queued, 3 messages acknowledged"`) {
		t.Errorf("send's summary is not a JSON record:\n%s", errOut)
	}

	// A failing run: the command's own error is a JSON record too.
	code, _, errOut = sendRun(t, "x\n", "-url", deadURL(t), "-data", filepath.Join(t.TempDir(), "dead"),
		"-log-format", "json", "-wait", "500ms")
	if code != exitFail {
		t.Fatalf("send to a dead URL exited with %d, want %d; stderr:\n%s", code, exitFail, errOut)
	}
	checkJSONLines(t, "failing send stderr", errOut)
	if !strings.Contains(errOut, `"level":"ERROR"`) || !strings.Contains(errOut, "gave up after") {
		t.Errorf("send's failure is not an ERROR record:\n%s", errOut)
	}

	if code := srv.stop(); code != exitOK {
		t.Fatalf("serve exited with %d", code)
	}
	checkJSONLines(t, "serve stderr", srv.stderr.String())
	if !strings.Contains(srv.stderr.String(), `"msg":"listening"`) {
		t.Errorf("serve's stderr has no listening record:\n%s", srv.stderr)
	}
}

func TestLogLevelErrorSilencesInfo(t *testing.T) {
	srv := startServe(t, filepath.Join(t.TempDir(), "srv"), "-log-level", "error")
	code, _, errOut := sendRun(t, "a\nb\n", "-url", srv.url, "-data", filepath.Join(t.TempDir(), "cli"), "-log-level", "error", "-wait", "30s")
	if code != exitOK {
		t.Fatalf("send exited with %d; stderr:\n%s", code, errOut)
	}
	if errOut != "" {
		t.Errorf("send -log-level error wrote to stderr:\n%s", errOut)
	}
	if code := srv.stop(); code != exitOK {
		t.Fatalf("serve exited with %d", code)
	}
	if s := srv.stderr.String(); s != "" {
		t.Errorf("serve -log-level error wrote info lines:\n%s", s)
	}

	// The default levels: serve logs at info, send's summary needs info.
	srv = startServe(t, filepath.Join(t.TempDir(), "srv2"))
	code, _, errOut = sendRun(t, "a\n", "-url", srv.url, "-data", filepath.Join(t.TempDir(), "cli2"), "-log-level", "info", "-wait", "30s")
	if code != exitOK {
		t.Fatalf("send exited with %d; stderr:\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "wsreliable send: 1 lines queued, 1 messages acknowledged") {
		t.Errorf("send -log-level info printed no summary:\n%s", errOut)
	}
	srv.stop()
	if !strings.Contains(srv.stderr.String(), "level=INFO msg=listening") {
		t.Errorf("serve at its default level did not log listening at info:\n%s", srv.stderr)
	}
}

func TestSendProgress(t *testing.T) {
	srv := startServe(t, filepath.Join(t.TempDir(), "srv"))
	fields := []string{"queued 3,", "acked 3,", "msg/s", "backlog 0,", "reconnects 0"}

	code, _, errOut := sendRun(t, "a\nb\nc\n", "-url", srv.url, "-data", filepath.Join(t.TempDir(), "on"), "-progress", "-wait", "30s")
	if code != exitOK {
		t.Fatalf("send -progress exited with %d; stderr:\n%s", code, errOut)
	}
	for _, f := range fields {
		if !strings.Contains(errOut, f) {
			t.Errorf("progress output lacks %q: %q", f, errOut)
		}
	}
	if !strings.HasPrefix(errOut, "\r") || !strings.HasSuffix(errOut, "\n") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("progress output is not one line rewritten in place and ended once: %q", errOut)
	}

	for _, args := range [][]string{nil, {"-progress=false"}} {
		args = append(args, "-url", srv.url, "-data", filepath.Join(t.TempDir(), "off"), "-wait", "30s")
		code, _, errOut := sendRun(t, "a\nb\nc\n", args...)
		if code != exitOK || errOut != "" {
			t.Errorf("send %q into a buffer: exit %d, stderr %q; want 0 and nothing", args, code, errOut)
		}
	}
}

func TestStatusWriter(t *testing.T) {
	var b bytes.Buffer
	s := &statusWriter{w: &b}
	s.Write([]byte("before\n"))
	s.draw("one")
	s.draw("two")
	s.Write([]byte("log line\n"))
	s.end("three")
	s.Write([]byte("after\n"))
	want := "before\n\rone\x1b[K\rtwo\x1b[K\r\x1b[Klog line\ntwo\rthree\x1b[K\nafter\n"
	if b.String() != want {
		t.Errorf("got  %q\nwant %q", b.String(), want)
	}
}

func TestProgressRate(t *testing.T) {
	// line is driven with explicit times; no goroutine runs.
	var queued atomic.Int64
	acked := uint64(0)
	start := time.Now()
	p := &progress{
		stats:   func() (st reliable.Stats) { st.Acked = acked; st.Queued = int(queued.Load()) - int(acked); return st },
		queued:  &queued,
		samples: []ackSample{{start, 0}},
	}
	queued.Store(1000)
	for i := 1; i <= 20; i++ {
		acked = uint64(i * 50) // 100 msg/s at 500 ms ticks
		p.line(start.Add(time.Duration(i) * progressEvery))
	}
	got := p.line(start.Add(21 * progressEvery))
	if want := "queued 1000, acked 1000, 90 msg/s, backlog 0, reconnects 0"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if len(p.samples) > int(rateWindow/progressEvery)+2 {
		t.Errorf("%d samples kept for a %v window", len(p.samples), rateWindow)
	}
}
