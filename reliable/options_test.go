package reliable_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/reliable"
)

// TestOptionsValidated: bad configuration is an error naming the field,
// never a panic, and nothing is opened.
func TestOptionsValidated(t *testing.T) {
	dir := t.TempDir()
	clientCases := []struct {
		name  string
		url   string
		opts  reliable.ClientOptions
		field string
	}{
		{"negative heartbeat", "ws://127.0.0.1:1/", reliable.ClientOptions{HeartbeatInterval: -time.Second}, "HeartbeatInterval"},
		{"negative ack timeout", "ws://127.0.0.1:1/", reliable.ClientOptions{AckTimeout: -1}, "AckTimeout"},
		{"negative in flight", "ws://127.0.0.1:1/", reliable.ClientOptions{MaxInFlight: -1}, "MaxInFlight"},
		{"backoff max below min", "ws://127.0.0.1:1/", reliable.ClientOptions{BackoffMin: time.Second, BackoffMax: time.Millisecond}, "BackoffMax"},
		{"http scheme", "http://127.0.0.1:1/", reliable.ClientOptions{}, "scheme"},
	}
	for _, tc := range clientCases {
		t.Run("client/"+tc.name, func(t *testing.T) {
			c, err := reliable.NewClient(tc.url, filepath.Join(dir, "c.db"), &tc.opts)
			if err == nil {
				c.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not name %s", err, tc.field)
			}
		})
	}
	serverCases := []struct {
		name  string
		opts  reliable.ServerOptions
		field string
	}{
		{"negative hello timeout", reliable.ServerOptions{HelloTimeout: -1}, "HelloTimeout"},
		{"negative ack batch", reliable.ServerOptions{AckBatch: -1}, "AckBatch"},
		{"negative message size", reliable.ServerOptions{MaxMessageSize: -1}, "MaxMessageSize"},
	}
	handler := func(context.Context, *reliable.Message) error { return nil }
	for _, tc := range serverCases {
		t.Run("server/"+tc.name, func(t *testing.T) {
			s, err := reliable.NewServer(filepath.Join(dir, "s.db"), handler, &tc.opts)
			if err == nil {
				s.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not name %s", err, tc.field)
			}
		})
	}
}

// TestClientAdoptsServerHeartbeat: a client that leaves its heartbeat
// settings zero uses the ones the server's welcome announces (within
// sane bounds); settings it chose are its own.
func TestClientAdoptsServerHeartbeat(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name             string
		own              reliable.ClientOptions
		wInt, wTimeout   time.Duration
		wantInt, wantOut time.Duration
	}{
		{"defaults take the server's", reliable.ClientOptions{}, 30 * s, 20 * s, 30 * s, 20 * s},
		{"own interval kept", reliable.ClientOptions{HeartbeatInterval: 2 * s}, 30 * s, 20 * s, 2 * s, 20 * s},
		{"own timeout kept", reliable.ClientOptions{HeartbeatTimeout: 3 * s}, 30 * s, 20 * s, 30 * s, 3 * s},
		{"none announced", reliable.ClientOptions{}, 0, 0, 5 * s, 5 * s},
		{"too short ignored", reliable.ClientOptions{}, time.Millisecond, time.Millisecond, 5 * s, 5 * s},
		{"too long ignored", reliable.ClientOptions{}, 2 * time.Hour, 2 * time.Hour, 5 * s, 5 * s},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := reliable.NewClient("ws://"+testkit.FreeAddr(t)+"/ws", filepath.Join(t.TempDir(), "c.db"), &tt.own)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			gotInt, gotOut := reliable.ConnHeartbeat(c, tt.wInt, tt.wTimeout)
			if gotInt != tt.wantInt || gotOut != tt.wantOut {
				t.Fatalf("heartbeat %v/%v, want %v/%v", gotInt, gotOut, tt.wantInt, tt.wantOut)
			}
		})
	}
}
