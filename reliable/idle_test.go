package reliable_test

import (
	"strings"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/reliable"
)

// TestIdleSession checks what an idle server session keeps and still
// does. Once its input is handled, committed and acknowledged it holds its
// reader goroutine and nothing else; it repeats its ack every heartbeat
// interval (a lost ack would otherwise strand the client); and new input
// starts delivery again, in order.
func TestIdleSession(t *testing.T) {
	const interval = 50 * time.Millisecond
	var s sink
	srv, url := startServer(t, s.handle, &reliable.ServerOptions{HeartbeatInterval: interval})
	stream := newStream()
	ws, _ := handshake(t, url, "idle", stream)

	busy := []string{
		"reliable.(*session).deliverLoop",
		"reliable.(*session).repeatAck",
		"wsconn.(*Conn).writeLoop",
		"wsconn.(*Conn).sendPing",
	}
	idle := func() bool {
		return testkit.GoroutinesIn("reliable.(*session).readLoop") == 1 && testkit.GoroutinesIn(busy...) == 0
	}

	sendFrames(t, ws, dataFrame(stream, 1, "a"), dataFrame(stream, 2, "b"))
	waitAck(t, ws, stream, 2)
	testkit.Eventually(t, ioTimeout, idle, "session never went idle: want its reader and no other goroutine")

	// The next ack on the wire can only be the repetition.
	waitAck(t, ws, stream, 2)
	testkit.Eventually(t, ioTimeout, idle, "session not idle again after repeating its ack")

	sendFrames(t, ws, dataFrame(stream, 3, "c"))
	waitAck(t, ws, stream, 3)
	if got := strings.Join(s.got("idle"), ","); got != "a,b,c" {
		t.Errorf("handler saw %s, want a,b,c", got)
	}
	if n := srv.Stats().Sessions; n != 1 {
		t.Errorf("Stats().Sessions = %d, want 1", n)
	}
	closeRawConn(ws)
}
