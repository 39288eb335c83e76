package reliable_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/reliable"
)

// ioTimeout bounds every single read or write a raw test connection does.
const ioTimeout = 5 * time.Second

// sink records what a server's handler saw, per client address (the
// client ID without Authenticate).
type sink struct {
	mu   sync.Mutex
	seen map[string][]string
}

func (s *sink) handle(_ context.Context, m *reliable.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string][]string{}
	}
	s.seen[m.Address] = append(s.seen[m.Address], string(m.Payload))
	return nil
}

func (s *sink) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen[id])
}

// got returns a copy of the payloads the handler saw from client id.
func (s *sink) got(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen[id]...)
}

func startServer(tb testing.TB, h reliable.Handler, opts *reliable.ServerOptions) (*reliable.Server, string) {
	tb.Helper()
	return startServerAt(tb, filepath.Join(tb.TempDir(), "server.db"), h, opts)
}

// startServerAt starts a server on the store at path behind an httptest
// server; the test's cleanup closes both.
func startServerAt(tb testing.TB, path string, h reliable.Handler, opts *reliable.ServerOptions) (*reliable.Server, string) {
	tb.Helper()
	srv, err := reliable.NewServer(path, h, opts)
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	tb.Cleanup(func() {
		hs.Close()
		if err := srv.Close(); err != nil {
			tb.Error(err)
		}
	})
	return srv, "ws" + strings.TrimPrefix(hs.URL, "http")
}

// newClient starts a client on a fresh store; the test's cleanup closes it.
func newClient(tb testing.TB, url string, opts *reliable.ClientOptions) *reliable.Client {
	tb.Helper()
	c, err := reliable.NewClient(url, filepath.Join(tb.TempDir(), "client.db"), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// numbered returns n messages whose payloads are the decimal numbers
// from, from+1, …, and those payloads.
func numbered(from, n int) ([]reliable.OutgoingMessage, []string) {
	msgs := make([]reliable.OutgoingMessage, n)
	payloads := make([]string, n)
	for i := range msgs {
		payloads[i] = strconv.Itoa(from + i)
		msgs[i].Payload = []byte(payloads[i])
	}
	return msgs, payloads
}

// newStream returns a random stream ID.
func newStream() protocol.StreamID { return protocol.StreamID(uuid.New()) }

// dataFrame builds a data frame with a fresh message ID.
func dataFrame(stream protocol.StreamID, seq uint64, payload string) *protocol.Data {
	return &protocol.Data{Stream: stream, Seq: seq, ID: protocol.MessageID(uuid.New()), Payload: []byte(payload)}
}

// dialRaw opens a WebSocket to url offering subprotocols, as a hostile or
// broken client would, without any wsreliable logic. The connection is
// closed by the test's cleanup.
func dialRaw(tb testing.TB, url string, subprotocols []string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	tb.Helper()
	d := websocket.Dialer{HandshakeTimeout: ioTimeout, Subprotocols: subprotocols}
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	ws, resp, err := d.DialContext(ctx, url, hdr)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if ws != nil {
		tb.Cleanup(func() { ws.Close() })
	}
	return ws, resp, err
}

// writeRaw writes one WebSocket message of type typ.
func writeRaw(tb testing.TB, ws *websocket.Conn, typ int, msg []byte) {
	tb.Helper()
	_ = ws.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := ws.WriteMessage(typ, msg); err != nil {
		tb.Fatalf("write: %v", err)
	}
}

// sendFrames writes frames as one binary message.
func sendFrames(tb testing.TB, ws *websocket.Conn, frames ...protocol.Frame) {
	tb.Helper()
	writeRaw(tb, ws, websocket.BinaryMessage, protocol.Encode(frames...))
}

// readWelcome reads the server's answer to a hello.
func readWelcome(tb testing.TB, ws *websocket.Conn) *protocol.Welcome {
	tb.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(ioTimeout))
	typ, msg, err := ws.ReadMessage()
	if err != nil {
		tb.Fatalf("read welcome: %v", err)
	}
	if typ != websocket.BinaryMessage {
		tb.Fatalf("welcome is message type %d", typ)
	}
	frames, err := protocol.DecodeAll(msg)
	if err != nil {
		tb.Fatalf("decode welcome: %v", err)
	}
	w, ok := frames[0].(*protocol.Welcome)
	if !ok || len(frames) != 1 {
		tb.Fatalf("want one welcome frame, got %d frames, first %s", len(frames), frames[0].Type())
	}
	return w
}

// handshake dials url with the right subprotocol and performs the hello /
// welcome exchange for clientID and stream.
func handshake(tb testing.TB, url, clientID string, stream protocol.StreamID) (*websocket.Conn, *protocol.Welcome) {
	tb.Helper()
	ws, _, err := dialRaw(tb, url, []string{protocol.Subprotocol}, nil)
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	if got := ws.Subprotocol(); got != protocol.Subprotocol {
		tb.Fatalf("subprotocol %q", got)
	}
	sendFrames(tb, ws, &protocol.Hello{ClientID: clientID, Stream: stream})
	return ws, readWelcome(tb, ws)
}

// waitAck reads until the server acknowledges seq of stream, and returns
// the rejects it saw on the way.
func waitAck(tb testing.TB, ws *websocket.Conn, stream protocol.StreamID, seq uint64) []*protocol.Reject {
	tb.Helper()
	var rejects []*protocol.Reject
	deadline := time.Now().Add(ioTimeout)
	for {
		_ = ws.SetReadDeadline(deadline)
		_, msg, err := ws.ReadMessage()
		if err != nil {
			tb.Fatalf("waiting for ack %d: %v", seq, err)
		}
		acked := uint64(0)
		err = protocol.Decode(msg, func(f protocol.Frame) error {
			switch f := f.(type) {
			case *protocol.Ack:
				if f.Stream != stream {
					return errors.New("ack for another stream")
				}
				acked = max(acked, f.Seq)
			case *protocol.Reject:
				r := *f
				rejects = append(rejects, &r)
			case *protocol.Heartbeat:
			default:
				return errors.New("unexpected " + f.Type().String() + " frame")
			}
			return nil
		})
		if err != nil {
			tb.Fatalf("waiting for ack %d: %v", seq, err)
		}
		if acked >= seq {
			return rejects
		}
	}
}

// expectClose reads until the connection ends and checks that the server
// closed it with want.
func expectClose(tb testing.TB, ws *websocket.Conn, want protocol.CloseCode) *websocket.CloseError {
	tb.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(ioTimeout))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue // acks the server sent before it closed
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			tb.Fatalf("connection ended with %v, want close code %d (%s)", err, want, want)
		}
		if protocol.CloseCode(ce.Code) != want {
			tb.Fatalf("close code %d (%q), want %d (%s)", ce.Code, ce.Text, want, want)
		}
		return ce
	}
}

// closeRawConn ends a raw connection with a normal closing handshake.
func closeRawConn(ws *websocket.Conn) {
	_ = ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(ioTimeout))
	_ = ws.SetReadDeadline(time.Now().Add(ioTimeout))
	for {
		if _, _, err := ws.NextReader(); err != nil {
			break
		}
	}
	ws.Close()
}

// assertResumes reconnects as clientID on stream and checks that the server
// still has exactly wantWM messages of it and accepts the next one.
func assertResumes(tb testing.TB, url, clientID string, stream protocol.StreamID, wantWM uint64) {
	tb.Helper()
	ws, w := handshake(tb, url, clientID, stream)
	if w.Watermark != wantWM {
		tb.Fatalf("after reconnect the server's watermark is %d, want %d", w.Watermark, wantWM)
	}
	sendFrames(tb, ws, dataFrame(stream, wantWM+1, "after"))
	waitAck(tb, ws, stream, wantWM+1)
	closeRawConn(ws)
}
