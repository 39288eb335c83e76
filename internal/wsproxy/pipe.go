package wsproxy

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/protocol"
)

// Sides of a pipe, indexing pipe.ws. Direction d reads side d and writes
// side 1-d.
const (
	sideClient = 0
	sideServer = 1
)

// pipe is one proxied connection: the accepted client WebSocket and the
// dialled server WebSocket. Its goroutines: a reader and a writer per
// direction; the reader owns the source's reads, the writer the
// destination's data writes (control frames go through WriteControl, which
// gorilla allows concurrently).
type pipe struct {
	p    *Proxy
	id   uint64
	ws   [2]*websocket.Conn
	dead chan struct{} // closed by kill
	once sync.Once

	mu        sync.Mutex
	closeSent [2]bool // a close frame was forwarded to side i
}

func newPipe(p *Proxy, client, server *websocket.Conn) *pipe {
	return &pipe{p: p, ws: [2]*websocket.Conn{client, server}, dead: make(chan struct{})}
}

// kill closes both sockets at once, without close frames. Idempotent.
func (c *pipe) kill() {
	c.once.Do(func() {
		close(c.dead)
		c.ws[sideClient].Close()
		c.ws[sideServer].Close()
	})
}

type opKind int

const (
	opMessage opKind = iota
	opClose          // forward a close frame, then stop writing
	opAbort          // the source failed: tear the connection down
)

// op is one instruction from a direction's reader to its writer.
type op struct {
	kind opKind
	typ  int    // websocket.BinaryMessage or TextMessage
	data []byte // the message, or the close frame's payload
	dup  bool   // write twice
	hold bool   // write after the next message
	junk bool   // injected garbage: not counted as forwarded
	code protocol.CloseCode
}

// run proxies until both directions end, then closes both sockets.
func (c *pipe) run(cfg *Config) {
	var wg sync.WaitGroup
	var lingerOnce sync.Once
	var linger *time.Timer
	var lingerMu sync.Mutex
	startLinger := func() {
		lingerOnce.Do(func() {
			lingerMu.Lock()
			linger = time.AfterFunc(c.p.cfg.Load().CloseTimeout, c.kill)
			lingerMu.Unlock()
		})
	}
	for _, d := range []Direction{ClientToServer, ServerToClient} {
		ops := make(chan op, 64)
		rng := rand.New(rand.NewPCG(cfg.Seed, c.id<<1|uint64(d)))
		wg.Go(func() {
			c.read(d, rng, ops)
			startLinger()
		})
		wg.Go(func() { c.write(d, ops) })
	}
	wg.Wait()
	lingerMu.Lock()
	if linger != nil {
		linger.Stop()
	}
	lingerMu.Unlock()
	c.kill()
}

// send hands o to the writer; false if the pipe is dead.
func (c *pipe) send(ops chan<- op, o op) bool {
	select {
	case ops <- o:
		return true
	case <-c.dead:
		return false
	}
}

// read reads direction d's source until it closes or fails, choosing a
// fault for each data message.
func (c *pipe) read(d Direction, rng *rand.Rand, ops chan<- op) {
	src, dst := c.ws[d], c.ws[1-d]
	ctr := &c.p.dir[d]
	src.SetReadLimit(c.p.cfg.Load().MaxMessageSize)
	src.SetPingHandler(func(data string) error {
		err := dst.WriteControl(websocket.PingMessage, []byte(data), c.p.deadline())
		if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
			c.kill()
		}
		return nil
	})
	src.SetPongHandler(func(data string) error {
		err := dst.WriteControl(websocket.PongMessage, []byte(data), c.p.deadline())
		if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
			c.kill()
		}
		return nil
	})
	// No automatic answer to a close frame: it is forwarded, and the
	// other side's answer comes back the same way.
	src.SetCloseHandler(func(int, string) error { return nil })

	first := true
	for {
		typ, msg, err := src.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
				code := protocol.CloseCode(ce.Code)
				c.mu.Lock()
				initiated := !c.closeSent[d] // side d is the source of d
				c.mu.Unlock()
				if initiated {
					ctr.closed(code)
				}
				c.send(ops, op{kind: opClose, code: code, data: []byte(ce.Text)})
				return
			}
			c.send(ops, op{kind: opAbort})
			return
		}
		ctr.messages.Add(1)
		cfg := c.p.cfg.Load()
		faults := cfg.ClientToServer
		if d == ServerToClient {
			faults = cfg.ServerToClient
		}
		f := faults.pick(rng) // drawn for every message, even exempt ones
		if first && !cfg.FaultHandshake {
			f = faultNone
		}
		first = false
		o := op{kind: opMessage, typ: typ, data: msg}
		switch f {
		case faultDrop:
			ctr.dropped.Add(1)
			continue
		case faultDuplicate:
			ctr.duplicated.Add(1)
			o.dup = true
		case faultReorder:
			o.hold = true // counted by the writer when it happens
		case faultTruncate:
			ctr.truncated.Add(1)
			o.data = msg[:rng.IntN(max(len(msg), 1))]
		case faultGarbage:
			ctr.gb.Add(1)
			if !c.send(ops, op{kind: opMessage, typ: websocket.BinaryMessage, data: garbage(rng), junk: true}) {
				return
			}
		}
		if !c.send(ops, o) {
			return
		}
	}
}

// garbage returns a message that no wsreliable decoder accepts: random
// bytes not starting with the codec version, or a well-framed frame of an
// unknown type.
func garbage(rng *rand.Rand) []byte {
	body := make([]byte, rng.IntN(24))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	if rng.IntN(2) == 0 {
		b := append([]byte{byte(rng.Uint32())}, body...)
		if b[0] == protocol.Version {
			b[0] ^= 0x80
		}
		return b
	}
	// Known types are 1..5; 64..255 stay unknown however the set grows.
	b := []byte{protocol.Version, byte(64 + rng.IntN(192))}
	b = binary.AppendUvarint(b, uint64(len(body)))
	return append(b, body...)
}

// write writes direction d's messages to its destination in the order the
// reader sent them, applying duplication and reordering.
func (c *pipe) write(d Direction, ops <-chan op) {
	dst := c.ws[1-d]
	ctr := &c.p.dir[d]
	var (
		held   *op
		timer  *time.Timer
		timerC <-chan time.Time
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	put := func(o *op) bool {
		n := 1
		if o.dup {
			n = 2
		}
		for range n {
			_ = dst.SetWriteDeadline(c.p.deadline())
			if err := dst.WriteMessage(o.typ, o.data); err != nil {
				c.kill()
				return false
			}
			if !o.junk {
				ctr.forwarded.Add(1)
			}
		}
		return true
	}
	flushHeld := func() bool {
		if held == nil {
			return true
		}
		h := held
		held, timerC = nil, nil
		timer.Stop()
		return put(h)
	}
	for {
		select {
		case o := <-ops:
			switch o.kind {
			case opMessage:
				if o.hold && held == nil {
					held = &o
					if timer == nil {
						timer = time.NewTimer(c.p.cfg.Load().ReorderTimeout)
					} else {
						timer.Reset(c.p.cfg.Load().ReorderTimeout)
					}
					timerC = timer.C
					continue
				}
				if !put(&o) {
					return
				}
				if held != nil && !o.junk { // garbage does not count as the next message
					ctr.reordered.Add(1)
					if !flushHeld() {
						return
					}
				}
			case opClose:
				if !flushHeld() {
					return
				}
				c.mu.Lock()
				c.closeSent[1-d] = true
				c.mu.Unlock()
				// An error means the destination is gone; the linger
				// timer or its reader ends the pipe.
				_ = dst.WriteControl(websocket.CloseMessage,
					websocket.FormatCloseMessage(int(o.code), string(o.data)), c.p.deadline())
				return
			case opAbort:
				c.kill()
				return
			}
		case <-timerC:
			// No successor came in time: forward it as it is.
			h := held
			held, timerC = nil, nil
			if !put(h) {
				return
			}
		case <-c.dead:
			return
		}
	}
}
