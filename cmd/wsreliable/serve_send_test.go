package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
)

// delivered is one line of serve's stdout.
type delivered struct {
	Client     string  `json:"client"`
	Identity   *string `json:"identity"`
	Address    string  `json:"address"`
	ID         string  `json:"id"`
	Seq        uint64  `json:"seq"`
	Payload    *string `json:"payload"`
	PayloadB64 *string `json:"payload_b64"`
}

// receipt is one line of send -receipts.
type receipt struct {
	Event      string  `json:"event"`
	ID         string  `json:"id"`
	Seq        uint64  `json:"seq"`
	Payload    *string `json:"payload"`
	PayloadB64 *string `json:"payload_b64"`
}

func decodeLines[T any](t *testing.T, lines []string) []T {
	t.Helper()
	out := make([]T, len(lines))
	for i, l := range lines {
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&out[i]); err != nil {
			t.Fatalf("line %d %q: %v", i+1, l, err)
		}
	}
	return out
}

// payloadOf returns the payload a line carries, checking that exactly one
// of payload and payload_b64 is set and that b64 is used only when needed.
func payloadOf(t *testing.T, text, b64 *string) string {
	t.Helper()
	switch {
	case text != nil && b64 == nil:
		return *text
	case text == nil && b64 != nil:
		p, err := base64.StdEncoding.DecodeString(*b64)
		if err != nil {
			t.Fatalf("payload_b64 %q: %v", *b64, err)
		}
		if bytes.Equal(p, bytes.ToValidUTF8(p, nil)) {
			t.Errorf("valid UTF-8 payload %q sent as payload_b64", p)
		}
		return string(p)
	}
	t.Fatalf("want exactly one of payload and payload_b64, got %v and %v", text, b64)
	return ""
}

// sendRun runs the send command in-process.
func sendRun(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	// The client's logger and runSend both write stderr, from different
	// goroutines, as they may to os.Stderr.
	var out, errb syncBuffer
	code = runSend(ctx, args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// deadURL returns a ws:// URL on a loopback port nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	addr := testkit.FreeAddr(t)
	return "ws://" + addr + "/ws"
}

func TestServeSendEndToEnd(t *testing.T) {
	srv := startServe(t, filepath.Join(t.TempDir(), "srv"))

	const n = 1000
	want := make([]string, n)
	var in strings.Builder
	for i := range n {
		switch i {
		case 10:
			want[i] = ""
			in.WriteString("\n")
		case 20:
			want[i] = "windows line"
			in.WriteString("windows line\r\n")
		case 30:
			want[i] = "bad \xff\xfe utf-8"
			in.WriteString(want[i] + "\n")
		case 40:
			want[i] = `quotes " and \ and <html> & tabs	and ünïcödé`
			in.WriteString(want[i] + "\n")
		case n - 1:
			want[i] = "last line without newline"
			in.WriteString(want[i])
		default:
			want[i] = fmt.Sprintf("line %d", i+1)
			in.WriteString(want[i] + "\n")
		}
	}

	code, out, errOut := sendRun(t, in.String(), "-url", srv.url, "-data", filepath.Join(t.TempDir(), "cli"), "-receipts", "-wait", "30s")
	if code != exitOK {
		t.Fatalf("send exited with %d; stderr:\n%s", code, errOut)
	}

	// serve printed every message once, in order, before acknowledging.
	got := decodeLines[delivered](t, srv.stdout.lines())
	if len(got) != n {
		t.Fatalf("serve printed %d lines, want %d", len(got), n)
	}
	for i, d := range got {
		if d.Seq != uint64(i+1) {
			t.Fatalf("line %d: seq %d", i+1, d.Seq)
		}
		if d.Client == "" || d.Client != got[0].Client {
			t.Fatalf("line %d: client %q, first line's %q", i+1, d.Client, got[0].Client)
		}
		if p := payloadOf(t, d.Payload, d.PayloadB64); p != want[i] {
			t.Fatalf("line %d: payload %q, want %q", i+1, p, want[i])
		}
	}
	if got[30].PayloadB64 == nil {
		t.Error("invalid UTF-8 payload not sent as payload_b64")
	}

	// send -receipts: a queued line per message, then the acks.
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	rs := decodeLines[receipt](t, lines)
	var queued, acked []receipt
	for _, r := range rs {
		switch r.Event {
		case "queued":
			queued = append(queued, r)
		case "acked":
			acked = append(acked, r)
		default:
			t.Fatalf("unexpected receipt %+v", r)
		}
	}
	if len(queued) != n || len(acked) != n {
		t.Fatalf("%d queued and %d acked receipts, want %d each", len(queued), len(acked), n)
	}
	for i := range n {
		q, a := queued[i], acked[i]
		if q.Seq != uint64(i+1) || q.ID != got[i].ID {
			t.Fatalf("queued receipt %d: %+v, delivered %+v", i+1, q, got[i])
		}
		if p := payloadOf(t, q.Payload, q.PayloadB64); p != want[i] {
			t.Fatalf("queued receipt %d: payload %q, want %q", i+1, p, want[i])
		}
		if a.Seq != q.Seq || a.ID != q.ID || a.Payload != nil || a.PayloadB64 != nil {
			t.Fatalf("acked receipt %d: %+v for %+v", i+1, a, q)
		}
	}

	if code := srv.stop(); code != exitOK {
		t.Fatalf("serve exited with %d; stderr:\n%s", code, srv.stderr)
	}
	if !strings.Contains(srv.stderr.String(), "msg=stopped") {
		t.Errorf("serve did not log its stop:\n%s", srv.stderr)
	}
}

func TestSendReplaysAfterServerDown(t *testing.T) {
	cli := filepath.Join(t.TempDir(), "cli")
	in := "one\ntwo\n\nfour\n"

	start := time.Now()
	code, _, errOut := sendRun(t, in, "-url", deadURL(t), "-data", cli, "-wait", "1s")
	if code == exitOK {
		t.Fatal("send to a dead server exited 0")
	}
	if !strings.Contains(errOut, "gave up after 1s: 4 messages still unacknowledged") {
		t.Errorf("unclear message on stderr:\n%s", errOut)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("send with -wait 1s took %v", d)
	}

	var inspectOut, inspectErr bytes.Buffer
	if code := runInspect(t.Context(), []string{"-data", cli}, nil, &inspectOut, &inspectErr); code != exitOK {
		t.Fatalf("inspect exited with %d: %s", code, inspectErr.String())
	}
	if !strings.Contains(inspectOut.String(), "queued:     4 messages") {
		t.Errorf("inspect output:\n%s", inspectOut.String())
	}

	srv := startServe(t, filepath.Join(t.TempDir(), "srv"))
	code, _, errOut = sendRun(t, "", "-url", srv.url, "-data", cli, "-wait", "30s")
	if code != exitOK {
		t.Fatalf("second send exited with %d; stderr:\n%s", code, errOut)
	}
	got := decodeLines[delivered](t, srv.stdout.lines())
	want := []string{"one", "two", "", "four"}
	if len(got) != len(want) {
		t.Fatalf("serve printed %d lines, want %d:\n%s", len(got), len(want), srv.stdout)
	}
	for i, d := range got {
		if p := payloadOf(t, d.Payload, d.PayloadB64); p != want[i] || d.Seq != uint64(i+1) {
			t.Errorf("line %d: seq %d payload %q, want %d %q", i+1, d.Seq, p, i+1, want[i])
		}
	}

	// A third run has nothing left to replay.
	code, _, errOut = sendRun(t, "", "-url", srv.url, "-data", cli, "-wait", "30s")
	if code != exitOK {
		t.Fatalf("third send exited with %d; stderr:\n%s", code, errOut)
	}
	if n := len(srv.stdout.lines()); n != len(want) {
		t.Errorf("serve printed %d lines after the third run, want %d", n, len(want))
	}
}

func TestSendLineTooLong(t *testing.T) {
	srv := startServe(t, filepath.Join(t.TempDir(), "srv"))
	in := "fits\n" + strings.Repeat("x", maxLineBytes+1) + "\nnever read\n"
	code, _, errOut := sendRun(t, in, "-url", srv.url, "-data", filepath.Join(t.TempDir(), "cli"), "-wait", "30s")
	if code == exitOK {
		t.Fatal("send of an oversize line exited 0")
	}
	if !strings.Contains(errOut, "line 2: line longer than the maximum message size") {
		t.Errorf("unclear message on stderr:\n%s", errOut)
	}
	// What was queued before the bad line was still delivered.
	got := decodeLines[delivered](t, srv.stdout.lines())
	if len(got) != 1 || got[0].Payload == nil || *got[0].Payload != "fits" {
		t.Errorf("serve printed %+v, want the line before the oversize one", got)
	}
}

func TestSendInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancelCause(t.Context())
	var out, errb syncBuffer
	codes := make(chan int, 1)
	args := []string{"-url", deadURL(t), "-data", filepath.Join(t.TempDir(), "cli"), "-receipts"}
	go func() {
		codes <- runSend(ctx, args, strings.NewReader("a\nb\n"), &out, &errb)
	}()
	// Wait until both lines are queued, then interrupt the wait for acks.
	waitLines(t, &out, 2, 10*time.Second)
	cancel(signalError{sig: os.Interrupt})
	select {
	case code := <-codes:
		if code != 130 {
			t.Errorf("exit code %d, want 130; stderr:\n%s", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("send did not stop within 20s of the interrupt")
	}
	if !strings.Contains(errb.String(), "2 unacknowledged messages stay queued") {
		t.Errorf("stderr:\n%s", errb.String())
	}
}

func TestSendUnauthorized(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	defer hs.Close()
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
	code, _, errOut := sendRun(t, "a\n", "-url", url, "-data", filepath.Join(t.TempDir(), "cli"), "-wait", "2s")
	if code == exitOK {
		t.Fatal("send to a server answering 401 exited 0")
	}
	t.Logf("stderr: %s", errOut)
	if !strings.Contains(errOut, "unauthorized") && !strings.Contains(errOut, "HTTP 401") {
		t.Errorf("unclear message on stderr:\n%s", errOut)
	}
}
