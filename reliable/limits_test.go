package reliable_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/reliable"
)

// TestConnectionCap: connections beyond MaxConnections are refused before
// the upgrade with 503 and a retry hint, the server stays up, and a slot
// freed is usable again.
func TestConnectionCap(t *testing.T) {
	var s sink
	srv, url := startServer(t, s.handle, &reliable.ServerOptions{MaxConnections: 5})
	held := make([]*websocket.Conn, 5)
	for i := range held {
		ws, _, err := dialRaw(t, url, []string{protocol.Subprotocol}, nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		held[i] = ws
	}
	_, resp, err := dialRaw(t, url, []string{protocol.Subprotocol}, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("sixth connection: %v, response %+v; want 503 with Retry-After", err, resp)
	}
	if n := srv.Stats().Refused["connections"]; n != 1 {
		t.Errorf("Refused[connections] = %d, want 1", n)
	}
	closeRawConn(held[0])
	testkit.Eventually(t, 10*time.Second, func() bool {
		ws, _, err := dialRaw(t, url, []string{protocol.Subprotocol}, nil)
		if err != nil {
			return false
		}
		ws.Close()
		return true
	}, "a freed slot was never usable again")
}

// TestConnectionSharePerIdentity: one identity cannot take every slot;
// another identity still connects and delivers.
func TestConnectionSharePerIdentity(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	var s sink
	srv, url := startServer(t, s.handle, &reliable.ServerOptions{
		MaxConnections: 100, MaxConnectionsPerIdentity: 3,
		Authenticate: func(r *http.Request) (string, error) { return r.Header.Get("X-Who"), nil },
	})
	hdr := http.Header{"X-Who": {"mallory"}}
	for i := range 3 {
		if _, _, err := dialRaw(t, url, []string{protocol.Subprotocol}, hdr); err != nil {
			t.Fatalf("mallory's connection %d: %v", i, err)
		}
	}
	if _, resp, err := dialRaw(t, url, []string{protocol.Subprotocol}, hdr); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("mallory's fourth connection: %v, %+v; want 503", err, resp)
	}
	c := newClient(t, url, &reliable.ClientOptions{Header: func(context.Context) (http.Header, error) {
		return http.Header{"X-Who": {"alice"}}, nil
	}})
	r, err := c.Send(ctx, []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if n := srv.Stats().Refused["connections per identity"]; n != 1 {
		t.Errorf("Refused = %v", srv.Stats().Refused)
	}
}

// TestInFlightBytesBounded: a client that sends 256 KiB messages as fast as
// it can to a handler that is stuck holds at most MaxInFlightBytes (plus
// the message being read) in the server: the server stops reading until
// the handler catches up, and then everything is delivered.
func TestInFlightBytesBounded(t *testing.T) {
	ctx := testkit.Deadline(t, testTimeout)
	gate := make(chan struct{})
	delivered := make(chan int, 128)
	const limit, size = 1 << 20, 256 << 10
	srv, url := startServer(t, func(ctx context.Context, m *reliable.Message) error {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		n, _ := strconv.Atoi(string(m.Payload[:8]))
		delivered <- n
		return nil
	}, &reliable.ServerOptions{MaxInFlightBytes: limit, MaxMessageSize: 512 << 10})
	stream := newStream()
	ws, _ := handshake(t, url, "flooder", stream)
	const messages = 64
	writeErr := make(chan error, 1)
	go func() {
		for i := range messages {
			payload := make([]byte, size)
			copy(payload, []byte(strconv.Itoa(10000000+i)))
			_ = ws.SetWriteDeadline(time.Now().Add(testTimeout))
			if err := ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Data{Stream: stream, Seq: uint64(i + 1), Payload: payload})); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	}()
	start := time.Now()
	defer func() { t.Logf("took %v", time.Since(start)) }()
	// The server reads until its budget is spent, then stops.
	testkit.Eventually(t, 20*time.Second, func() bool { return srv.Stats().InFlightBytes >= limit-size },
		"the server never filled its in-flight budget: %d bytes", srv.Stats().InFlightBytes)
	for range 20 {
		if got := srv.Stats().InFlightBytes; got > limit+size+4096 {
			t.Fatalf("server holds %d bytes in flight, limit %d", got, limit)
		}
		select {
		case err := <-writeErr:
			t.Fatalf("the client wrote all %d messages while the handler was stuck (%v): nothing pushed back", messages, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Logf("budget filled after %v", time.Since(start))
	close(gate)
	for i := range messages {
		select {
		case n := <-delivered:
			if n != 10000000+i {
				t.Fatalf("delivery %d is message %d", i, n-10000000)
			}
		case <-ctx.Done():
			t.Fatalf("only %d of %d delivered", i, messages)
		}
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	closeRawConn(ws)
}
