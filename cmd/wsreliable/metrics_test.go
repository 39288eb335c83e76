package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/reliable"
)

// holdWriter is serve's stdout: it keeps what is written, except that a
// write containing "hold" blocks until release is closed, so a handler
// (and with it Shutdown) is held in progress for as long as a test needs.
type holdWriter struct {
	syncBuffer
	once    sync.Once
	held    chan struct{} // closed when a write blocks
	release chan struct{}
}

func (w *holdWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("hold")) {
		w.once.Do(func() { close(w.held) })
		<-w.release
	}
	return w.syncBuffer.Write(p)
}

// get fetches url with a client that keeps no idle connections (goleak).
func get(url string) (int, string, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func mustGet(t *testing.T, url string, want int) string {
	t.Helper()
	code, body, err := get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if code != want {
		t.Fatalf("GET %s: %d, want %d; body:\n%s", url, code, want, body)
	}
	return body
}

var metricsAddrRE = regexp.MustCompile(`msg="metrics listening" metrics_addr=(\S+)`)

// TestServeMetrics: serve -metrics-listen reports on /metrics exactly the
// messages send delivered, answers /healthz, and /readyz turns from 200
// to 503 as soon as shutdown begins, while the sessions still drain.
func TestServeMetrics(t *testing.T) {
	stdout := &holdWriter{held: make(chan struct{}), release: make(chan struct{})}
	released := sync.OnceFunc(func() { close(stdout.release) })
	defer released()
	stderr := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := make(chan net.Addr, 1)
	codes := make(chan int, 1)
	args := []string{"-listen", "127.0.0.1:0", "-data", filepath.Join(t.TempDir(), "srv"), "-metrics-listen", "127.0.0.1:0",
		"-heartbeat", "500ms", "-heartbeat-timeout", "1s", "-shutdown-timeout", "60s"}
	go func() { codes <- serve(ctx, args, stdout, stderr, func(a net.Addr) { addrs <- a }) }()
	var wsURL string
	select {
	case a := <-addrs:
		wsURL = "ws://" + a.String() + "/ws"
	case code := <-codes:
		t.Fatalf("serve exited with %d before listening; stderr:\n%s", code, stderr)
	case <-time.After(10 * time.Second):
		t.Fatalf("serve did not listen within 10s; stderr:\n%s", stderr)
	}
	m := metricsAddrRE.FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no metrics address logged; stderr:\n%s", stderr)
	}
	base := "http://" + m[1]

	mustGet(t, base+"/healthz", http.StatusOK)
	mustGet(t, base+"/readyz", http.StatusOK)

	const n = 25
	var in strings.Builder
	for i := range n {
		fmt.Fprintf(&in, "message %d\n", i)
	}
	if code, _, errOut := sendRun(t, in.String(), "-url", wsURL, "-data", filepath.Join(t.TempDir(), "cli"), "-wait", "30s"); code != exitOK {
		t.Fatalf("send exited with %d; stderr:\n%s", code, errOut)
	}
	scrape := mustGet(t, base+"/metrics", http.StatusOK)
	if want := fmt.Sprintf("\nwsreliable_messages_received_total %d\n", n); !strings.Contains(scrape, want) {
		t.Errorf("scrape lacks %q:\n%s", strings.TrimSpace(want), scrape)
	}
	if want := fmt.Sprintf("\nwsreliable_handler_duration_seconds_count{result=\"ok\"} %d\n", n); !strings.Contains(scrape, want) {
		t.Errorf("scrape lacks %q:\n%s", strings.TrimSpace(want), scrape)
	}

	// Hold a handler in progress, so that shutdown drains for as long as
	// the test needs.
	c, err := reliable.NewClient(wsURL, filepath.Join(t.TempDir(), "held.db"), &reliable.ClientOptions{ClientID: "held"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Send(ctx, []byte("hold")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stdout.held:
	case <-time.After(30 * time.Second):
		t.Fatal("the held message did not reach serve's output within 30s")
	}

	cancel() // as SIGTERM does
	testkit.Eventually(t, 10*time.Second, func() bool {
		code, _, _ := get(base + "/readyz")
		return code == http.StatusServiceUnavailable
	}, "/readyz did not answer 503 after shutdown began")
	mustGet(t, base+"/healthz", http.StatusOK)
	select {
	case code := <-codes:
		t.Fatalf("serve exited (%d) while a handler was held", code)
	default:
	}

	released()
	select {
	case code := <-codes:
		if code != exitOK {
			t.Errorf("serve exited with %d; stderr:\n%s", code, stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30s of the handler's release")
	}
	if _, _, err := get(base + "/healthz"); err == nil {
		t.Error("metrics listener still answers after serve returned")
	}
}
