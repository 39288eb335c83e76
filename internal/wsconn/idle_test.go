package wsconn_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/internal/wsconn"
	"github.com/wsreliable/wsreliable/protocol"
)

var ours = []string{"wsconn.(*Conn).writeLoop", "wsconn.(*Conn).sendPing"}

// TestIdleHoldsNoGoroutine checks that a connection with nothing to write
// holds no goroutine of its own, yet keeps pinging on schedule, and that
// a later Write starts the writer again.
func TestIdleHoldsNoGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const latency = 10 * time.Millisecond
		l := newLink(t)
		l.clientNet.latency = latency
		l.serverNet.latency = latency
		c, s := open(t, l.client, cfg), open(t, l.server, cfg)
		cr, sr := startReader(c), startReader(s)

		for _, m := range []string{"one", "two", "three"} {
			if err := c.Write([]byte(m)); err != nil {
				t.Fatal(err)
			}
		}
		for _, want := range []string{"one", "two", "three"} {
			if got := string(<-sr.msgs); got != want {
				t.Fatalf("server got %q, want %q", got, want)
			}
		}
		// The writer lingers a moment for more messages, then exits.
		synctest.Wait()
		if n := testkit.GoroutinesIn(ours...); n != 1 {
			t.Fatalf("%d goroutines of ours right after the queue emptied, want the lingering writer", n)
		}
		time.Sleep(wsconn.WriterLinger)
		synctest.Wait()
		if n := testkit.GoroutinesIn(ours...); n != 0 {
			t.Fatalf("%d goroutines of ours after the queue stayed empty, want 0", n)
		}

		// Only pings travel now; the read deadlines hold because they do.
		time.Sleep(10 * interval)
		synctest.Wait()
		if !cr.running() || !sr.running() {
			t.Fatalf("reader failed while idle: client %v, server %v", cr.err, sr.err)
		}
		for name, conn := range map[string]*wsconn.Conn{"client": c, "server": s} {
			if rtt := conn.RTT(); rtt < 2*latency {
				t.Errorf("%s RTT = %v, want at least %v: no ping answered", name, rtt, 2*latency)
			}
		}
		if n := testkit.GoroutinesIn(ours...); n != 0 {
			t.Fatalf("%d goroutines of ours between pings, want 0", n)
		}

		if err := s.Write([]byte("again")); err != nil {
			t.Fatal(err)
		}
		if got := string(<-cr.msgs); got != "again" {
			t.Fatalf("client got %q", got)
		}
		s.Close(protocol.CloseNormal, "")
		<-cr.done
		<-sr.done
	})
}
