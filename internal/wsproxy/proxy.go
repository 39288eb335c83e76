package wsproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/protocol"
)

// Direction is one way through the proxy.
type Direction int

// Directions.
const (
	ClientToServer Direction = iota
	ServerToClient
)

// String returns "client→server" or "server→client".
func (d Direction) String() string {
	if d == ClientToServer {
		return "client→server"
	}
	return "server→client"
}

// Proxy is a WebSocket proxy on 127.0.0.1 that forwards each accepted
// WebSocket to a target server and faults the messages it carries. Create
// it with [Listen]. Its methods are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	srv    *http.Server
	ctx    context.Context // cancelled by Close: aborts dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // Serve and every ServeHTTP

	cfg atomic.Pointer[Config]
	dir [2]dirCounters

	closeOnce sync.Once
	closeErr  error

	mu          sync.Mutex
	conns       map[*pipe]struct{}
	closed      bool
	accepted    int
	dialFailure int
}

// dirCounters are the counters of one direction.
type dirCounters struct {
	messages, forwarded                           atomic.Uint64
	dropped, duplicated, reordered, truncated, gb atomic.Uint64

	mu     sync.Mutex
	closes map[protocol.CloseCode]int
}

// Listen starts a proxy on a free port of 127.0.0.1 that forwards
// WebSocket connections to target ("host:port", dialled as ws://). It
// returns an error for an invalid cfg (naming the field) or if it cannot
// listen. Close stops it and waits for all its goroutines.
func Listen(target string, cfg Config) (*Proxy, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("wsproxy: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		target: target,
		ln:     ln,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[*pipe]struct{}),
	}
	for i := range p.dir {
		p.dir[i].closes = make(map[protocol.CloseCode]int)
	}
	p.cfg.Store(&c)
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: c.DialTimeout,
	}
	p.wg.Go(func() { _ = p.srv.Serve(ln) })
	return p, nil
}

// URL returns the proxy's WebSocket URL, "ws://127.0.0.1:port". Append the
// path the target expects.
func (p *Proxy) URL() string { return "ws://" + p.ln.Addr().String() }

// Addr returns the proxy's listening address, "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetConfig replaces the configuration. New fault probabilities apply from
// the next message of every open connection; Seed applies to connections
// accepted afterwards. An invalid cfg is an error and changes nothing.
func (p *Proxy) SetConfig(cfg Config) error {
	c, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	p.cfg.Store(&c)
	return nil
}

// Config returns the configuration in force, with defaults filled in.
func (p *Proxy) Config() Config { return *p.cfg.Load() }

// Stats is a snapshot of a proxy's counters.
type Stats struct {
	Accepted     int // WebSocket connections proxied since Listen
	Open         int // of those, still open
	DialFailures int // upgrades refused because the target failed or refused

	ClientToServer DirStats // messages from the proxied client to the target
	ServerToClient DirStats // messages from the target to the client
}

// DirStats are the counters of one direction.
type DirStats struct {
	Messages   uint64 // data messages read from the sender
	Forwarded  uint64 // data messages written to the receiver, a duplicate twice (garbage not counted)
	Dropped    uint64 // messages not forwarded
	Duplicated uint64 // messages forwarded twice
	Reordered  uint64 // messages forwarded after the message that followed them
	Truncated  uint64 // messages cut short
	Garbage    uint64 // garbage messages injected

	// Closes counts, by code, the close frames with which the sender
	// started a closing handshake. Answers to the other side's close
	// frame are not counted, nor connections that ended without one.
	Closes map[protocol.CloseCode]int
}

// Faults returns the number of faults applied.
func (s DirStats) Faults() uint64 {
	return s.Dropped + s.Duplicated + s.Reordered + s.Truncated + s.Garbage
}

// Stats returns a snapshot of the proxy's counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	s := Stats{Accepted: p.accepted, Open: len(p.conns), DialFailures: p.dialFailure}
	p.mu.Unlock()
	s.ClientToServer = p.dir[ClientToServer].snapshot()
	s.ServerToClient = p.dir[ServerToClient].snapshot()
	return s
}

func (d *dirCounters) snapshot() DirStats {
	s := DirStats{
		Messages:   d.messages.Load(),
		Forwarded:  d.forwarded.Load(),
		Dropped:    d.dropped.Load(),
		Duplicated: d.duplicated.Load(),
		Reordered:  d.reordered.Load(),
		Truncated:  d.truncated.Load(),
		Garbage:    d.gb.Load(),
	}
	d.mu.Lock()
	s.Closes = maps.Clone(d.closes)
	d.mu.Unlock()
	return s
}

func (d *dirCounters) closed(code protocol.CloseCode) {
	d.mu.Lock()
	d.closes[code]++
	d.mu.Unlock()
}

// Close stops accepting, aborts every proxied connection and waits for all
// of the proxy's goroutines. It is idempotent and safe to call
// concurrently; every call returns the first call's error.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		conns := make([]*pipe, 0, len(p.conns))
		for c := range p.conns {
			conns = append(conns, c)
		}
		p.mu.Unlock()
		p.cancel()
		// Closes the listener and every connection not yet upgraded;
		// upgraded ones are hijacked and killed below.
		if err := p.srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			p.closeErr = fmt.Errorf("wsproxy: close: %w", err)
		}
		for _, c := range conns {
			c.kill()
		}
	})
	p.wg.Wait()
	return p.closeErr
}

// handshakeHeaders are set by the WebSocket handshake itself or are
// hop-by-hop; the proxy does not copy them to the target.
var handshakeHeaders = map[string]bool{
	"Host":                     true,
	"Upgrade":                  true,
	"Connection":               true,
	"Keep-Alive":               true,
	"Proxy-Connection":         true,
	"Proxy-Authorization":      true,
	"Te":                       true,
	"Trailer":                  true,
	"Transfer-Encoding":        true,
	"Sec-Websocket-Key":        true,
	"Sec-Websocket-Version":    true,
	"Sec-Websocket-Extensions": true,
	"Sec-Websocket-Protocol":   true,
}

// ServeHTTP dials the target, upgrades the client and proxies until either
// side ends.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		http.Error(w, "wsproxy: closed", http.StatusServiceUnavailable)
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	defer p.wg.Done()

	cfg := p.cfg.Load()
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "wsproxy: WebSocket upgrade required", http.StatusBadRequest)
		return
	}
	hdr := http.Header{}
	for k, vs := range r.Header {
		if !handshakeHeaders[http.CanonicalHeaderKey(k)] {
			hdr[k] = vs
		}
	}
	d := websocket.Dialer{
		HandshakeTimeout: cfg.DialTimeout,
		Subprotocols:     websocket.Subprotocols(r),
		NetDialContext:   (&net.Dialer{}).DialContext,
	}
	ctx, cancel := context.WithTimeout(p.ctx, cfg.DialTimeout)
	server, resp, err := d.DialContext(ctx, "ws://"+p.target+r.URL.RequestURI(), hdr)
	cancel()
	if err != nil {
		p.mu.Lock()
		p.dialFailure++
		p.mu.Unlock()
		cfg.Logger.Debug("wsproxy: dial failed", "target", p.target, "error", err)
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			// Pass the target's refusal on: status, retry hint, body.
			for _, k := range []string{"Retry-After", "Www-Authenticate", "Content-Type"} {
				if v := resp.Header.Get(k); v != "" {
					w.Header().Set(k, v)
				}
			}
			w.WriteHeader(resp.StatusCode)
			if resp.Body != nil {
				_, _ = io.Copy(w, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
			}
			return
		}
		http.Error(w, "wsproxy: target unreachable", http.StatusBadGateway)
		return
	}
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	var sub []string
	if s := server.Subprotocol(); s != "" {
		sub = []string{s} // the target's choice, which the client offered
	}
	up := websocket.Upgrader{
		HandshakeTimeout: cfg.DialTimeout,
		Subprotocols:     sub,
		CheckOrigin:      func(*http.Request) bool { return true }, // the target checks Origin
	}
	client, err := up.Upgrade(w, r, nil)
	if err != nil {
		server.Close()
		return // the upgrader answered with an HTTP error
	}

	c := newPipe(p, client, server)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.kill()
		return
	}
	p.accepted++
	c.id = uint64(p.accepted)
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	cfg.Logger.Debug("wsproxy: connection open", "conn", c.id, "subprotocol", server.Subprotocol())
	c.run(cfg)
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	cfg.Logger.Debug("wsproxy: connection closed", "conn", c.id)
}

// deadline returns the write deadline for a write starting now.
func (p *Proxy) deadline() time.Time {
	return time.Now().Add(p.cfg.Load().WriteTimeout)
}
