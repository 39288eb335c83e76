package main

import (
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/protocol"
)

// TestServeHandshakeRate: serve -max-handshake-rate-per-identity reaches
// the library: an identity's connection attempts beyond it are answered
// 429 with Retry-After, before the upgrade, while another identity still
// connects.
func TestServeHandshakeRate(t *testing.T) {
	dir := t.TempDir()
	tokens := writeFile(t, dir, "tokens", "alice tok-alice\nbob tok-bob\n")
	srv := startServe(t, filepath.Join(dir, "srv"), "-tokens-file", tokens,
		"-max-handshake-rate-per-identity", "0.5", "-max-byte-rate", "1048576")
	dial := func(token string) (*websocket.Conn, *http.Response, error) {
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: []string{protocol.Subprotocol}}
		ws, resp, err := d.Dial(srv.url, http.Header{"Authorization": {"Bearer " + token}})
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if ws != nil {
			t.Cleanup(func() { ws.Close() })
		}
		return ws, resp, err
	}
	if _, resp, err := dial("tok-alice"); err != nil {
		t.Fatalf("alice's first connection: %v (%v)", err, resp)
	}
	_, resp, err := dial("tok-alice")
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("alice's second connection at once: %v, %+v; want 429", err, resp)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q, want whole seconds, at least 1", resp.Header.Get("Retry-After"))
	}
	if _, resp, err := dial("tok-bob"); err != nil {
		t.Fatalf("bob's connection: %v (%v)", err, resp)
	}
}
