package faultnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// dialTimeout bounds the proxy's dial to its target.
const dialTimeout = 5 * time.Second

// Proxy is a TCP proxy on 127.0.0.1 that forwards every accepted connection
// to a target address and can inject faults: reset, stall (half-open) and
// refusal. Create it with [Listen]. Its methods are safe for concurrent
// use.
//
// Fault modes apply to the proxy as a whole. [Proxy.Stall] and
// [Proxy.Refuse] stay in force until turned off; [Proxy.Reset] acts once on
// the connections open at the time and leaves the modes alone.
type Proxy struct {
	target string
	ln     net.Listener
	ctx    context.Context // cancelled by Close; aborts dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the proxy started

	closeOnce sync.Once
	closeErr  error

	mu       sync.Mutex
	conns    map[*proxyConn]struct{}
	stalled  bool
	refusing bool
	closed   bool
	accepted int
}

// proxyConn is one proxied connection: the accepted client side and the
// dialled upstream side.
type proxyConn struct {
	client net.Conn
	dead   chan struct{} // closed by kill; parked forwarders return
	kill   func(rst bool)

	// stalled is set by Stall (or at accept during a stall) and never
	// cleared: a stalled connection forwards nothing again and is dropped
	// by Resume, Reset or Close.
	stalled atomic.Bool

	mu       sync.Mutex
	upstream net.Conn // nil until dialled
	killed   bool
}

// Listen starts a proxy listening on 127.0.0.1 on a free port that
// forwards to target. The proxy dials target once per accepted connection;
// if that dial fails, the client's connection is reset. Close stops it and
// waits for all its goroutines.
func Listen(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultnet: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		target: target,
		ln:     ln,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[*proxyConn]struct{}),
	}
	p.wg.Go(p.acceptLoop)
	return p, nil
}

// Addr returns the proxy's listening address, "127.0.0.1:port".
func (p *Proxy) Addr() string {
	return p.ln.Addr().String()
}

// Reset aborts every open proxied connection on both sides with a TCP RST
// (SO_LINGER 0, then close). Stall and refusal modes are unchanged.
func (p *Proxy) Reset() {
	for _, c := range p.snapshot(false) {
		c.kill(true)
	}
}

// Stall silently stops forwarding in both directions, on the open
// connections and on those accepted until [Proxy.Resume]. The sockets stay
// open and the proxy reads nothing from them, so kernel buffers fill and
// writers eventually block, as with a peer that vanished without FIN or RST.
// Connections accepted during a stall are not forwarded to the target at
// all.
func (p *Proxy) Stall() {
	p.mu.Lock()
	p.stalled = true
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.stall()
	}
}

// Resume ends a stall. Connections accepted from now on are forwarded
// again; the connections that were stalled are considered dead and are
// aborted with a TCP RST on both sides. Without a stall Resume does nothing.
func (p *Proxy) Resume() {
	p.mu.Lock()
	p.stalled = false
	p.mu.Unlock()
	for _, c := range p.snapshot(true) {
		c.kill(true)
	}
}

// Refuse turns refusal on or off. While on, every new connection is
// aborted with a TCP RST right after it is accepted, as if the server were
// down; open connections are not affected. The client sees ECONNRESET,
// either from its dial or from its first read, depending on timing. Refused connections count in
// [Proxy.Accepted] but never in [Proxy.Conns].
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refusing = on
	p.mu.Unlock()
}

// Conns returns the number of proxied connections currently open. A
// connection stays counted until both its sides are closed, including
// while stalled.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Accepted returns the number of connections the proxy has accepted since
// it started, including refused ones.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Close stops the listener, aborts every proxied connection with a TCP RST
// and waits for all of the proxy's goroutines to exit. It is idempotent and
// safe to call concurrently; every call returns the first call's error.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.cancel()
		if err := p.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			p.closeErr = err
		}
		for _, c := range p.snapshot(false) {
			c.kill(true)
		}
	})
	p.wg.Wait()
	return p.closeErr
}

// snapshot returns the open connections, only the stalled ones if
// onlyStalled.
func (p *Proxy) snapshot(onlyStalled bool) []*proxyConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		if !onlyStalled || c.stalled.Load() {
			conns = append(conns, c)
		}
	}
	return conns
}

func (p *Proxy) acceptLoop() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// A transient error such as EMFILE: back off briefly, unless
			// the proxy is closing.
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}

		p.mu.Lock()
		p.accepted++
		if p.closed || p.refusing {
			p.mu.Unlock()
			abort(client)
			continue
		}
		c := newProxyConn(client)
		if p.stalled {
			c.stalled.Store(true)
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()

		p.wg.Go(func() {
			p.serve(c)
			p.mu.Lock()
			delete(p.conns, c)
			p.mu.Unlock()
		})
	}
}

func newProxyConn(client net.Conn) *proxyConn {
	c := &proxyConn{client: client, dead: make(chan struct{})}
	var once sync.Once
	c.kill = func(rst bool) {
		once.Do(func() {
			c.mu.Lock()
			c.killed = true
			up := c.upstream
			c.mu.Unlock()
			close(c.dead)
			if rst {
				abort(c.client)
				if up != nil {
					abort(up)
				}
				return
			}
			c.client.Close()
			if up != nil {
				up.Close()
			}
		})
	}
	return c
}

// stall marks c stalled and interrupts any read or write in progress, so
// its forwarders park without touching the sockets again. The deadline in
// the past is never cleared: any later Read or Write fails at once too.
func (c *proxyConn) stall() {
	c.stalled.Store(true)
	past := time.Unix(1, 0)
	c.client.SetDeadline(past)
	c.mu.Lock()
	if c.upstream != nil {
		c.upstream.SetDeadline(past)
	}
	c.mu.Unlock()
}

// serve dials the target for c and forwards both directions until the
// connection ends, then closes both sides.
func (p *Proxy) serve(c *proxyConn) {
	defer c.kill(false) // no-op if already killed

	if c.stalled.Load() {
		// Accepted during a stall: never reaches the target.
		<-c.dead
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
	up, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.target)
	cancel()
	if err != nil {
		c.kill(true) // the target is down: the client sees a reset
		return
	}
	c.mu.Lock()
	if c.killed {
		c.mu.Unlock()
		abort(up)
		return
	}
	c.upstream = up
	if c.stalled.Load() {
		// Stall raced with the dial; stall() may have missed upstream.
		past := time.Unix(1, 0)
		c.client.SetDeadline(past)
		up.SetDeadline(past)
	}
	c.mu.Unlock()

	var wg sync.WaitGroup
	wg.Go(func() { c.forward(up, c.client) })
	wg.Go(func() { c.forward(c.client, up) })
	wg.Wait()
}

// forward copies src to dst until EOF, an error, a stall or a kill. On EOF
// it half-closes dst so the FIN travels on; on any other error it aborts
// the whole connection with RST, passing the failure on to the other side.
func (c *proxyConn) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		if c.stalled.Load() {
			<-c.dead
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			if c.stalled.Load() {
				<-c.dead // drop what was read: it is never forwarded
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err == nil {
			continue
		}
		select {
		case <-c.dead:
			return
		default:
		}
		if c.stalled.Load() {
			<-c.dead
			return
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			return
		}
		c.kill(true)
		return
	}
}

// abort closes conn with a TCP RST instead of a FIN.
func abort(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}
