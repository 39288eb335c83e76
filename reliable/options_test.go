package reliable_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
