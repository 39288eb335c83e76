package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/reliable"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestGateway posts a notification for a device that is offline, then
// connects as the device: the push arrives once, and the callback hears
// it was acked.
func TestGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	outcomes := make(chan settlement, 16)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s settlement
		if err := json.NewDecoder(r.Body).Decode(&s); err != nil {
			t.Errorf("callback body: %v", err)
		}
		outcomes <- s
	}))
	defer cb.Close()
	addr := startGateway(t, "-listen", "127.0.0.1:0", "-data", t.TempDir(), "-callback", cb.URL)

	status, body := post(t, ctx, addr, `{"device":"phone-1","text":"hello"}`)
	if status != http.StatusOK {
		t.Fatalf("POST /notify: %d %s", status, body)
	}
	var resp struct{ ID string }
	if err := json.Unmarshal(body, &resp); err != nil || resp.ID == "" {
		t.Fatalf("POST /notify answered %s (%v), want an id", body, err)
	}

	got := make(chan *reliable.Message, 16)
	device, err := reliable.NewClient("ws://"+addr+"/ws", filepath.Join(t.TempDir(), "device.db"), &reliable.ClientOptions{
		ClientID: "phone-1",
		Handler: func(ctx context.Context, m *reliable.Message) error {
			got <- m
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer device.Close()

	select {
	case m := <-got:
		if string(m.Payload) != "hello" || m.ID.String() != resp.ID {
			t.Fatalf("device got %q with ID %s, want \"hello\" with ID %s", m.Payload, m.ID, resp.ID)
		}
	case <-ctx.Done():
		t.Fatal("the device received nothing")
	}
	select {
	case s := <-outcomes:
		if s.ID != resp.ID || s.Device != "phone-1" || s.Status != "acked" {
			t.Fatalf("callback got %+v, want %s acked for phone-1", s, resp.ID)
		}
	case <-ctx.Done():
		t.Fatal("the callback heard nothing")
	}
}

func TestNotifyBadRequests(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	addr := startGateway(t, "-listen", "127.0.0.1:0", "-data", t.TempDir())
	cases := []struct {
		name, body string
		status     int
	}{
		{"not JSON", `hello`, http.StatusBadRequest},
		{"no device", `{"text":"hi"}`, http.StatusBadRequest},
		{"bad ttl", `{"device":"a","text":"hi","ttl":"soon"}`, http.StatusBadRequest},
		{"device twice", `{"devices":["a","a"],"text":"hi"}`, http.StatusBadRequest},
		{"many", `{"devices":["a","b"],"text":"hi","ttl":"1h"}`, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if status, body := post(t, ctx, addr, tc.body); status != tc.status {
				t.Errorf("status %d (%s), want %d", status, body, tc.status)
			}
		})
	}
}

// startGateway runs the gateway in-process until the test ends and
// returns its address.
func startGateway(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	addrs := make(chan net.Addr, 1)
	code := make(chan int, 1)
	go func() { code <- run(ctx, args, logs, func(a net.Addr) { addrs <- a }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case c := <-code:
			if c != 0 {
				t.Errorf("gateway exited with %d; log:\n%s", c, logs)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("gateway did not stop within 15s")
		}
	})
	select {
	case a := <-addrs:
		return a.String()
	case c := <-code:
		code <- c
		t.Fatalf("gateway exited with %d; log:\n%s", c, logs)
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not listen within 10s")
	}
	return ""
}

func post(t *testing.T, ctx context.Context, addr, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/notify", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
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
