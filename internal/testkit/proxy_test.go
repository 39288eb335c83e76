package testkit_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
)

// prompt bounds how long a fault may take to reach the client.
const prompt = 2 * time.Second

// echoServer echoes every connection until EOF and counts what it sees.
type echoServer struct {
	ln       net.Listener
	wg       sync.WaitGroup
	accepted atomic.Int64
	open     atomic.Int64
	received atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startEcho(tb testing.TB) *echoServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	s := &echoServer{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.open.Add(1)
			s.mu.Lock()
			s.conns[conn] = struct{}{}
			s.mu.Unlock()
			s.wg.Go(func() {
				defer func() {
					s.mu.Lock()
					delete(s.conns, conn)
					s.mu.Unlock()
					conn.Close()
					s.open.Add(-1)
				}()
				buf := make([]byte, 32<<10)
				for {
					n, err := conn.Read(buf)
					s.received.Add(int64(n))
					if n > 0 {
						if _, err := conn.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			})
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) Addr() string { return s.ln.Addr().String() }

func dial(tb testing.TB, addr string) net.Conn {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", addr, prompt)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// roundTrip writes msg and expects it echoed back.
func roundTrip(tb testing.TB, conn net.Conn, msg string) {
	tb.Helper()
	conn.SetDeadline(time.Now().Add(prompt))
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write([]byte(msg)); err != nil {
		tb.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		tb.Fatalf("read echo: %v", err)
	}
	if string(got) != msg {
		tb.Fatalf("echo = %q, want %q", got, msg)
	}
}

// expectDropped reads from conn and expects a reset or EOF within prompt,
// not a timeout and not data.
func expectDropped(tb testing.TB, conn net.Conn) {
	tb.Helper()
	conn.SetReadDeadline(time.Now().Add(prompt))
	n, err := conn.Read(make([]byte, 1))
	switch {
	case n > 0:
		tb.Fatalf("read %d bytes, want the connection dropped", n)
	case errors.Is(err, os.ErrDeadlineExceeded):
		tb.Fatalf("read timed out after %v, want reset or EOF", prompt)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF):
	default:
		tb.Fatalf("read error %v, want ECONNRESET or EOF", err)
	}
}

// expectDialDropped dials addr and expects the connection to be dropped at
// once: the reset may already fail the dial, or arrive at the first read.
func expectDialDropped(tb testing.TB, addr string) {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", addr, prompt)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			tb.Fatalf("dial %s: %v; want success or ECONNRESET", addr, err)
		}
		return
	}
	defer conn.Close()
	expectDropped(tb, conn)
}

// expectSilent expects a read on conn to time out: the connection is open
// and nothing arrives.
func expectSilent(tb testing.TB, conn net.Conn) {
	tb.Helper()
	conn.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	n, err := conn.Read(make([]byte, 1))
	if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		tb.Fatalf("read = %d, %v; want a timeout", n, err)
	}
}

func TestProxyEcho(t *testing.T) {
	echo := startEcho(t)
	p := testkit.NewProxy(t, echo.Addr())
	if host, _, err := net.SplitHostPort(p.Addr()); err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr() = %q, want 127.0.0.1:port", p.Addr())
	}

	conn := dial(t, p.Addr())
	roundTrip(t, conn, "hello")
	big := string(bytes.Repeat([]byte("0123456789"), 100_000))
	conn.SetDeadline(time.Now().Add(prompt))
	var wg sync.WaitGroup
	wg.Go(func() { // the echo writes back while we write
		if _, err := conn.Write([]byte(big)); err != nil {
			t.Errorf("write 1MB: %v", err)
		}
	})
	got := make([]byte, len(big))
	_, err := io.ReadFull(conn, got)
	wg.Wait()
	if err != nil || string(got) != big {
		t.Fatalf("1MB echo: %v", err)
	}
	conn.SetDeadline(time.Time{})

	if got := p.Accepted(); got != 1 {
		t.Errorf("Accepted() = %d, want 1", got)
	}
	if got := p.Conns(); got != 1 {
		t.Errorf("Conns() = %d, want 1", got)
	}

	// A half-close travels through: the echo server sees EOF and closes,
	// and the client sees EOF.
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(prompt))
	if n, err := conn.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read after CloseWrite = %d, %v; want EOF", n, err)
	}
	testkit.Eventually(t, prompt, func() bool { return p.Conns() == 0 }, "Conns() = %d after close, want 0", p.Conns())
}

func TestProxyReset(t *testing.T) {
	echo := startEcho(t)
	p := testkit.NewProxy(t, echo.Addr())
	a, b := dial(t, p.Addr()), dial(t, p.Addr())
	roundTrip(t, a, "a")
	roundTrip(t, b, "b")

	p.Reset()
	expectDropped(t, a)
	expectDropped(t, b)
	testkit.Eventually(t, prompt, func() bool { return p.Conns() == 0 }, "proxy still has %d connections", p.Conns())
	testkit.Eventually(t, prompt, func() bool { return echo.open.Load() == 0 }, "server still has %d connections", echo.open.Load())

	// The proxy keeps working for new connections.
	roundTrip(t, dial(t, p.Addr()), "again")
}

func TestProxyStall(t *testing.T) {
	echo := startEcho(t)
	p := testkit.NewProxy(t, echo.Addr())
	conn := dial(t, p.Addr())
	roundTrip(t, conn, "before")
	received := echo.received.Load()

	p.Stall()
	if _, err := conn.Write([]byte("during")); err != nil {
		t.Fatalf("write during stall: %v", err)
	}
	expectSilent(t, conn)
	if got := p.Conns(); got != 1 {
		t.Errorf("Conns() = %d during stall, want 1", got)
	}
	if got := echo.open.Load(); got != 1 {
		t.Errorf("server has %d open connections during stall, want 1", got)
	}

	// Nothing is read from the client, so its writes eventually block.
	chunk := make([]byte, 64<<10)
	var written int
	conn.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	for written < 512<<20 {
		n, err := conn.Write(chunk)
		written += n
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("write during stall: %v", err)
			}
			break
		}
	}
	if written >= 512<<20 {
		t.Fatalf("wrote %d bytes into a stalled connection without blocking", written)
	}
	t.Logf("stalled connection absorbed %d bytes", written)

	// A connection made during the stall is accepted and stalls too; it
	// never reaches the server.
	late := dial(t, p.Addr())
	if _, err := late.Write([]byte("late")); err != nil {
		t.Fatalf("write on new connection during stall: %v", err)
	}
	expectSilent(t, late)
	testkit.Eventually(t, prompt, func() bool { return p.Accepted() == 2 && p.Conns() == 2 },
		"Accepted() = %d, Conns() = %d; want 2, 2", p.Accepted(), p.Conns())
	if got := echo.accepted.Load(); got != 1 {
		t.Errorf("server accepted %d connections, want 1", got)
	}
	if got := echo.received.Load(); got != received {
		t.Errorf("server received %d bytes during stall", got-received)
	}
}

func TestProxyResume(t *testing.T) {
	echo := startEcho(t)
	p := testkit.NewProxy(t, echo.Addr())
	old := dial(t, p.Addr())
	roundTrip(t, old, "before")

	p.Stall()
	late := dial(t, p.Addr())
	expectSilent(t, old)

	p.Resume()
	expectDropped(t, old)
	expectDropped(t, late)
	testkit.Eventually(t, prompt, func() bool { return p.Conns() == 0 }, "Conns() = %d after Resume, want 0", p.Conns())
	testkit.Eventually(t, prompt, func() bool { return echo.open.Load() == 0 }, "server still has %d connections", echo.open.Load())

	roundTrip(t, dial(t, p.Addr()), "after")
}

func TestProxyRefuse(t *testing.T) {
	echo := startEcho(t)
	p := testkit.NewProxy(t, echo.Addr())
	open := dial(t, p.Addr())
	roundTrip(t, open, "open")

	p.Refuse(true)
	expectDialDropped(t, p.Addr())
	if got := p.Accepted(); got != 2 {
		t.Errorf("Accepted() = %d, want 2", got)
	}
	if got := echo.accepted.Load(); got != 1 {
		t.Errorf("server accepted %d connections, want 1", got)
	}
	roundTrip(t, open, "still open") // refusal leaves open connections alone

	p.Refuse(false)
	roundTrip(t, dial(t, p.Addr()), "back")
}

func TestProxyTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	ln.Close()

	p := testkit.NewProxy(t, target)
	expectDialDropped(t, p.Addr())
	testkit.Eventually(t, prompt, func() bool { return p.Conns() == 0 }, "Conns() = %d, want 0", p.Conns())
}

func TestProxyClose(t *testing.T) {
	echo := startEcho(t)
	p := testkit.NewProxy(t, echo.Addr())
	conn := dial(t, p.Addr())
	roundTrip(t, conn, "x")
	stalled := dial(t, p.Addr())
	p.Stall()
	expectSilent(t, stalled)

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := p.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	expectDropped(t, conn)
	expectDropped(t, stalled)
	if got := p.Conns(); got != 0 {
		t.Errorf("Conns() = %d after Close, want 0", got)
	}
	if c, err := net.DialTimeout("tcp", p.Addr(), prompt); err == nil {
		c.Close()
		t.Errorf("dial after Close succeeded")
	}
}
