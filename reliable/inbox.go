package reliable

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsreliable/wsreliable/ack"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// streamState is a receiver's position in one peer stream. It outlives
// connections: the server keeps one per client (guarded by the peer's turn
// token), the client one for the server's stream to it. Only the
// goroutine that owns delivery touches it.
type streamState struct {
	stream  protocol.StreamID
	wm      ack.Watermark // delivered (or skipped) contiguously
	durable uint64        // committed to the store; the only value ever acked
}

// resume sets s to stream, loading its committed watermark with load when
// the stream changes, and raises it to low-1: the sender no longer holds
// anything below low (acked, expired or evicted), so a receiver without
// state for the stream (a lost store) resumes there instead of waiting for
// sequences that will never come. Only the committed watermark is kept:
// what was delivered after the last commit is delivered again.
func (s *streamState) resume(stream protocol.StreamID, low uint64, load func() (uint64, error)) error {
	if s.stream != stream || s.durable == 0 {
		wm, err := load()
		if err != nil {
			return err
		}
		s.stream, s.durable = stream, wm
	}
	if low > 0 && low-1 > s.durable {
		s.durable = low - 1
	}
	s.wm = ack.NewWatermark(s.durable)
	return nil
}

// inboxConfig is what an inbox needs from the endpoint that owns it.
type inboxConfig struct {
	handler     Handler
	flush       func(ctx context.Context, clientID string) error // nil: none
	store       queue.Inbox                                      // keeps the watermark
	peer        string                                           // the sender's name in store
	write       func(frames ...protocol.Frame) error
	fail        func(code protocol.CloseCode, reason string) // closes the connection
	message     func(d *protocol.Data) *Message              // fills in the endpoint's fields
	clientID    string                                       // passed to flush
	ackBatch    int
	maxAttempts int           // 0: retry without limit
	repeat      time.Duration // idle interval between ack repeats and heartbeats
	heartbeat   bool          // send a Heartbeat frame with every idle repeat
	log         *slog.Logger
	onDeliver   func(d *protocol.Data, outcome protocol.RejectCode) // counters; may be nil
	release     func(n int64)                                       // gives back a data frame's budget; may be nil
	onDuplicate func()                                              // counters; may be nil
	onCommit    func(seq uint64)                                    // after each watermark commit; may be nil
	observer    Observer                                            // timings; may be nil
}

// inbox receives one peer stream over one connection. The connection's
// reader pushes data and skip frames; a delivery worker hands them to the
// handler in order, once, commits the watermark every AckBatch messages
// and whenever input pauses, and acknowledges only what is committed.
//
// The worker starts when input arrives and exits when the queue is empty,
// after lingering briefly for more, so an idle connection holds no
// delivery goroutine. While nothing is delivered, the worker is also what
// repeats the latest ack (and, on the server, a heartbeat) every repeat
// interval: a timer only starts it.
type inbox struct {
	cfg   inboxConfig
	state *streamState // owned by the worker while it runs
	ctx   context.Context

	// pending counts data frames read and not yet handled; the reader
	// bounds it by the in-flight window.
	pending atomic.Int64
	// seen is the highest sequence received on this connection (worker
	// only): acks never go beyond it.
	seen uint64

	mu      sync.Mutex
	q       [][]protocol.Frame
	running bool          // a worker goroutine runs
	repeat  bool          // the worker was started by the idle timer
	closed  bool          // the reader is done: what is queued is still delivered
	stopped bool          // delivery failed: input is dropped
	ready   chan struct{} // capacity 1: input or the end of it, for a lingering worker
	idle    *time.Timer   // starts the worker to repeat the ack while idle
	wg      sync.WaitGroup
}

// inboxLinger is how long a worker that ran out of input waits for more
// before it exits (at most half the repeat interval).
const inboxLinger = 100 * time.Millisecond

// newInbox returns an inbox delivering from state; ctx ends the handler
// calls. Its idle timer starts at once, so even a peer that never sends
// gets heartbeats.
func newInbox(ctx context.Context, state *streamState, cfg inboxConfig) *inbox {
	in := &inbox{cfg: cfg, state: state, ctx: ctx, ready: make(chan struct{}, 1)}
	in.mu.Lock()
	in.idle = time.AfterFunc(cfg.repeat, in.wakeIdle)
	in.mu.Unlock()
	return in
}

// push queues frames (Data and Skip) from the reader and starts the worker
// unless it runs. It never blocks.
func (in *inbox) push(frames []protocol.Frame) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stopped || in.closed {
		in.releaseFrames(frames)
		return
	}
	in.q = append(in.q, frames)
	in.startLocked(false)
}

// releaseFrames gives back the budget of data frames that will not be
// delivered.
func (in *inbox) releaseFrames(frames []protocol.Frame) {
	if in.cfg.release == nil {
		return
	}
	for _, f := range frames {
		if d, ok := f.(*protocol.Data); ok {
			in.cfg.release(dataBytes(d))
		}
	}
}

// dataBytes is what a data frame counts against the in-flight budgets.
func dataBytes(d *protocol.Data) int64 { return int64(protocol.FrameSize(d)) }

// wakeIdle is the idle timer's function: it starts the worker to repeat
// the ack unless one runs.
func (in *inbox) wakeIdle() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stopped || in.closed {
		return
	}
	in.startLocked(true)
}

func (in *inbox) startLocked(repeat bool) {
	if in.running {
		notify(in.ready)
		return
	}
	in.running = true
	in.repeat = repeat
	in.idle.Stop()
	in.wg.Go(in.run)
}

// close tells the worker that input has ended and waits until what was
// queued is delivered (or abandoned) and committed.
func (in *inbox) close() {
	in.mu.Lock()
	in.closed = true
	in.idle.Stop()
	in.mu.Unlock()
	notify(in.ready)
	in.wg.Wait()
}

// take returns the oldest queued batch, false if there is none.
func (in *inbox) take() ([]protocol.Frame, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.q) == 0 {
		return nil, false
	}
	b := in.q[0]
	in.q[0] = nil
	in.q = in.q[1:]
	return b, true
}

// exit ends the worker if nothing is queued, arming the idle timer unless
// input has ended, and reports whether it did.
func (in *inbox) exit() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.q) > 0 {
		return false
	}
	in.q = nil // give back a burst's memory
	in.running = false
	if !in.closed && !in.stopped {
		in.idle.Reset(in.cfg.repeat)
	}
	return true
}

// stop ends delivery for the rest of the connection after a failure.
func (in *inbox) stop() {
	in.mu.Lock()
	in.stopped = true
	in.running = false
	for _, b := range in.q {
		in.releaseFrames(b)
	}
	in.q = nil
	in.idle.Stop()
	in.mu.Unlock()
}

// run is the worker. It delivers in order, commits and acks; when the
// queue is empty it lingers for more, then exits.
func (in *inbox) run() {
	d := delivery{in: in, co: ack.NewCoalescer(in.cfg.ackBatch)}
	in.mu.Lock()
	repeat := in.repeat
	in.mu.Unlock()
	if repeat {
		d.repeatAck()
	}
	linger := time.NewTimer(time.Hour)
	defer linger.Stop()
	for {
		batch, ok := in.take()
		if !ok {
			if !d.flush() {
				d.fail()
				return
			}
			in.mu.Lock()
			closed := in.closed
			in.mu.Unlock()
			if !closed {
				linger.Reset(min(inboxLinger, in.cfg.repeat/2))
				select {
				case <-in.ready:
					linger.Stop()
					continue
				case <-linger.C:
				}
			}
			if in.exit() {
				return
			}
			continue
		}
		if !d.handle(batch) {
			d.fail()
			return
		}
	}
}

// delivery is one run of the worker: what it has handled and not yet
// acknowledged.
type delivery struct {
	in      *inbox
	co      *ack.Coalescer
	replies []protocol.Frame // rejects to send before the next ack
}

// An ack never names more than the connection has carried: the sender's
// window counts what it sent on this connection, and a receiver that had
// more from an earlier one (its ack was lost) acks it when the sender
// sends it again. inbox.seen is that high-water mark.

// handle delivers one batch and reports false if delivery must stop.
func (d *delivery) handle(batch []protocol.Frame) bool {
	for i := range batch {
		// A frame leaves the budget as it is handled; when delivery
		// stops, so does what the batch has left.
		d.in.releaseFrames(batch[i : i+1])
		if !d.handleFrame(batch[i]) {
			d.in.releaseFrames(batch[i+1:])
			return false
		}
	}
	return true
}

// handleFrame delivers one data or skip frame and reports false if
// delivery must stop.
func (d *delivery) handleFrame(f protocol.Frame) bool {
	in, st := d.in, d.in.state
	if stream := streamOf(f); stream != st.stream {
		// A stream the welcome did not announce: the sender's first
		// message since (the reader lets no other stream change in).
		if err := st.resume(stream, 0, func() (uint64, error) { return in.cfg.store.Watermark(in.cfg.peer, stream) }); err != nil {
			in.cfg.log.Error("loading watermark failed", "error", err)
			in.cfg.fail(storeCloseCode(err))
			return false
		}
	}
	in.seen = max(in.seen, seqOf(f))
	switch f := f.(type) {
	case *protocol.Skip:
		st.wm.Skip(f.Seq)
	case *protocol.Data:
		in.pending.Add(-1)
		switch st.wm.Check(f.Seq) {
		case ack.Duplicate:
			if in.cfg.onDuplicate != nil {
				in.cfg.onDuplicate()
			}
			d.co.Add(st.wm.Seq())
			return true
		case ack.Gap:
			in.cfg.log.Warn("sequence gap", "watermark", st.wm.Seq(), "seq", f.Seq)
			in.cfg.fail(protocol.CloseSequenceGap, fmt.Sprintf("seq %d after watermark %d", f.Seq, st.wm.Seq()))
			return false
		}
		rej, ok := d.deliver(f)
		if !ok {
			return false
		}
		if rej != nil {
			d.replies = append(d.replies, rej)
		}
		st.wm.Advance(f.Seq) // Check said Deliver; only the handler ran since
	}
	return !d.co.Add(st.wm.Seq()) || d.flush()
}

// flush makes the handler's effects durable (Flush), commits the
// watermark and sends rejects and the ack. It reports false, having closed
// the connection, if Flush or the commit failed.
func (d *delivery) flush() bool {
	in, st := d.in, d.in.state
	seq, ok := d.co.Take()
	if !ok {
		return true
	}
	if wm := st.wm.Seq(); wm > st.durable {
		if err := in.callFlush(); err != nil {
			in.cfg.log.Error("Flush failed; closing without ack, the messages since the last flush will be delivered again", "error", err)
			in.cfg.fail(protocol.CloseInternal, "handler flush failed")
			return false
		}
		start := time.Now()
		if err := in.cfg.store.SetWatermark(context.Background(), in.cfg.peer, st.stream, wm); err != nil {
			in.cfg.log.Error("committing watermark failed; closing without ack", "error", err)
			in.cfg.fail(storeCloseCode(err))
			return false
		}
		if in.cfg.observer != nil {
			in.cfg.observer.ObserveCommit(time.Since(start), int(wm-st.durable))
		}
		st.durable = wm
		if in.cfg.onCommit != nil {
			in.cfg.onCommit(wm)
		}
	}
	frames := append(d.replies, &protocol.Ack{Stream: st.stream, Seq: min(seq, st.durable, in.seen)})
	d.replies = nil
	_ = in.cfg.write(frames...)
	return true
}

// fail commits what was handled, if it can, and stops delivery.
func (d *delivery) fail() {
	d.flush()
	d.in.stop()
}

// repeatAck repeats the latest ack while idle: an ack lost on the way (a
// faulty middlebox or peer) would otherwise leave the sender waiting on a
// healthy link forever. The server adds a heartbeat frame, which a browser
// can see where it cannot see pings.
func (d *delivery) repeatAck() {
	in, st := d.in, d.in.state
	var frames []protocol.Frame
	if seq := min(st.durable, in.seen); seq > 0 {
		frames = append(frames, &protocol.Ack{Stream: st.stream, Seq: seq})
	}
	if in.cfg.heartbeat {
		frames = append(frames, &protocol.Heartbeat{})
	}
	if len(frames) > 0 {
		_ = in.cfg.write(frames...)
	}
}

// deliver hands f to the handler until it accepts or rejects it, retrying
// other errors with backoff (up to maxAttempts when set). An expired
// message is rejected without calling the handler. It reports false if the
// connection's context ended first.
func (d *delivery) deliver(f *protocol.Data) (*protocol.Reject, bool) {
	in := d.in
	reject := func(code protocol.RejectCode, reason string) *protocol.Reject {
		if in.cfg.onDeliver != nil {
			in.cfg.onDeliver(f, code)
		}
		return &protocol.Reject{Stream: f.Stream, Seq: f.Seq, Code: code, Reason: truncate(reason, protocol.MaxReasonLen)}
	}
	if f.Expires > 0 && time.Now().UnixMilli() >= f.Expires {
		return reject(protocol.RejectExpired, "expired before delivery"), true
	}
	m := in.cfg.message(f)
	delay := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := in.call(m)
		if in.cfg.observer != nil {
			in.cfg.observer.ObserveHandler(time.Since(start), err)
		}
		switch {
		case err == nil:
			if in.cfg.onDeliver != nil {
				in.cfg.onDeliver(f, 0)
			}
			return nil, true
		case errors.Is(err, ErrRejected):
			return reject(protocol.RejectHandler, err.Error()), true
		case errors.Is(err, queue.ErrFenced):
			// A fleet's transactional handler found another server
			// owning the client: retrying here cannot succeed, the
			// client is talking to that server.
			in.cfg.log.Info("handler fenced out: the client moved to another server; closing", "seq", f.Seq)
			in.cfg.fail(storeCloseCode(err))
			return nil, false
		case in.cfg.maxAttempts > 0 && attempt >= in.cfg.maxAttempts:
			in.cfg.log.Warn("handler failed on its last attempt; rejecting", "seq", f.Seq, "attempts", attempt, "error", err)
			return reject(protocol.RejectAttempts, fmt.Sprintf("%d attempts failed, last: %v", attempt, err)), true
		}
		in.cfg.log.Warn("handler failed; will retry", "seq", f.Seq, "error", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-in.ctx.Done():
			t.Stop()
			return nil, false
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// call runs the handler, turning a panic into an error.
func (in *inbox) call(m *Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reliable: handler panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return in.cfg.handler(in.ctx, m)
}

// callFlush runs the Flush hook, if any, turning a panic into an error.
func (in *inbox) callFlush() (err error) {
	if in.cfg.flush == nil {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reliable: Flush panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return in.cfg.flush(in.ctx, in.cfg.clientID)
}
