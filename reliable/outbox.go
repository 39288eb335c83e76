package reliable

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsreliable/wsreliable/ack"
	"github.com/wsreliable/wsreliable/internal/wsconn"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// outStore holds one outgoing stream's entries: the client's own queue, or
// one client's push outbox on the server. AckWith deletes what the peer
// acknowledged and records how each entry settled.
type outStore interface {
	Read(from uint64, max int, maxBytes int) ([]queue.Entry, error)
	AckWith(ctx context.Context, upTo uint64, outcomes []queue.Outcome) error
}

// settlement is how one message ended, or will end once acknowledged: a
// sent message in flight carries code 0 (acked) unless the peer rejected
// it or the sender skipped it (expired, too large, evicted).
type settlement struct {
	seq    uint64
	id     protocol.MessageID
	code   protocol.RejectCode
	reason string
}

// of returns st as OnSettled and receipts see it, for client's stream.
func (st settlement) of(client string) Settlement {
	return Settlement{ClientID: client, ID: st.id, Seq: st.seq, Status: statusOf(st.code), Code: st.code, Reason: st.reason}
}

// Limits of one outgoing WebSocket message built by a sender.
const (
	maxFramesPerMessage = 256
	maxBatchBytes       = 256 << 10
)

// outbox owns one outgoing stream across connections: what was sent and
// not acknowledged, the window of the current connection, and settlement.
// The connection's reader applies acks and rejects; one sender at a time
// reads the store and writes. It is safe for concurrent use.
type outbox struct {
	stream    protocol.StreamID
	store     outStore
	settle    func([]settlement) // in process (receipts, counters): without o.mu, in ack order; see settleOnAck
	onDeleted func()             // after each AckWith: settlement records were written; may be nil
	// settleOnAck settles what an ack covers when it arrives: for a
	// client, whose receipts are registered when made. Without it they
	// settle after the AckWith that deletes them, so that a receipt
	// first watched later (a server's push) finds its settlement in the
	// store or still to come.
	settleOnAck bool
	log         *slog.Logger

	wake chan struct{} // capacity 1: appended, acked, or the window opened

	mu       sync.Mutex
	acked    uint64        // highest sequence the peer acknowledged
	deleted  uint64        // acked sequences deleted from the store
	sentMax  uint64        // highest sequence sent by this process
	inflight []settlement  // sent and not acked, ascending
	win      *ack.Window   // the current connection's; nil between
	progress time.Time     // last ack progress, or when the window last filled from empty
	acking   []settlement  // acked, not yet deleted: settled by the AckWith that deletes them, ascending
	ackedCh  chan struct{} // closed and replaced when reported advances
	reported uint64        // acked sequences whose settlements were reported
	total    uint64        // sequences acknowledged since the outbox was made
	// unhandled holds the reported settlements with a code (rejected,
	// expired, …) of the sequences above unhandledFloor; at most
	// maxUnhandled, then it starts again, the floor raised. A sequence in
	// (unhandledFloor, reported] that it lacks was acknowledged.
	unhandled      map[uint64]settlement
	unhandledFloor uint64
}

// maxUnhandled bounds outbox.unhandled: a few KiB per loaded outbox.
const maxUnhandled = 64

// settledAs returns how seq settled, if this outbox reported it and
// knows: a receipt watched late learns it without a store read.
func (o *outbox) settledAs(seq uint64) (settlement, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if seq == 0 || seq > o.reported || seq <= o.unhandledFloor {
		return settlement{}, false
	}
	if st, ok := o.unhandled[seq]; ok {
		return st, true
	}
	return settlement{seq: seq}, true
}

func newOutbox(stream protocol.StreamID, store outStore, acked uint64, settle func([]settlement), log *slog.Logger) *outbox {
	return &outbox{
		stream:   stream,
		store:    store,
		settle:   settle,
		log:      log,
		wake:     make(chan struct{}, 1),
		acked:    acked,
		deleted:  acked,
		reported: acked,
		ackedCh:  make(chan struct{}),
		// What settled before this outbox was made is not known here.
		unhandledFloor: acked,
	}
}

// begin starts a connection: the peer has everything up to peerAcked, and
// at most window messages may be in flight. It reports how many sent
// messages will be sent again.
func (o *outbox) begin(peerAcked uint64, window int) (replay int) {
	o.mu.Lock()
	newly := o.applyAckLocked(peerAcked)
	acked := o.acked
	o.win = ack.NewWindow(window, o.acked)
	replay = int(o.sentMax - min(o.sentMax, o.acked))
	o.mu.Unlock()
	if o.settleOnAck {
		o.report(acked, newly)
	}
	notify(o.wake)
	return replay
}

// adopt records entries as sent by this process: the peer reports having
// them (sent by an earlier incarnation of this outbox), and the ack that
// follows must settle them.
func (o *outbox) adopt(entries []queue.Entry) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range entries {
		if e := &entries[i]; e.Seq > o.sentMax && e.Seq > o.acked {
			o.inflight = append(o.inflight, settlement{seq: e.Seq, id: e.ID})
			o.sentMax = e.Seq
		}
	}
}

// end ends the current connection's window.
func (o *outbox) end() {
	o.mu.Lock()
	o.win = nil
	o.mu.Unlock()
}

// ackedUpTo returns the highest acknowledged sequence whose receipts have
// settled and a channel closed when it next advances.
func (o *outbox) ackedUpTo() (uint64, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.reported, o.ackedCh
}

// sentHigh returns the highest sequence this process has sent.
func (o *outbox) sentHigh() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sentMax
}

// ackedTotal returns the sequences acknowledged since o was made,
// including those of earlier runs that the peer's first ack covered.
func (o *outbox) ackedTotal() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.total
}

// inFlight returns the messages sent on the current connection and not
// yet acknowledged.
func (o *outbox) inFlight() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.win == nil {
		return 0
	}
	return o.win.InFlight()
}

// onAck applies a cumulative ack from the peer. What it acknowledges
// settles now with settleOnAck, else once the sender has deleted it from
// the store (deleteAcked).
func (o *outbox) onAck(a *protocol.Ack) error {
	if a.Stream != o.stream {
		return fmt.Errorf("%w: ack for stream %s, sending %s", protocol.ErrMalformed, a.Stream, o.stream)
	}
	o.mu.Lock()
	var err error
	if o.win != nil {
		_, err = o.win.Ack(a.Seq)
	}
	var newly []settlement
	if err == nil {
		newly = o.applyAckLocked(a.Seq)
	}
	acked := o.acked
	o.mu.Unlock()
	if err != nil {
		return err
	}
	if o.settleOnAck {
		o.report(acked, newly)
	}
	notify(o.wake)
	return nil
}

// onReject records the peer's rejection of one sent message; it settles
// with the ack that covers it.
func (o *outbox) onReject(j *protocol.Reject) error {
	if j.Stream != o.stream {
		return fmt.Errorf("%w: reject for stream %s, sending %s", protocol.ErrMalformed, j.Stream, o.stream)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range o.inflight {
		if e := &o.inflight[i]; e.seq == j.Seq {
			e.code = j.Code
			if e.code == 0 {
				e.code = protocol.RejectHandler
			}
			e.reason = j.Reason
			break
		}
	}
	return nil
}

// applyAckLocked records that the peer has everything up to seq: what it
// covers moves from in flight to acking, to be deleted (and, without
// settleOnAck, settled then). It returns a copy of what it moved, for
// settleOnAck. o.mu must be held.
func (o *outbox) applyAckLocked(seq uint64) []settlement {
	if seq <= o.acked {
		return nil
	}
	o.total += seq - o.acked
	o.acked = seq
	o.progress = time.Now()
	n := 0
	for n < len(o.inflight) && o.inflight[n].seq <= seq {
		n++
	}
	newly := slices.Clone(o.inflight[:n])
	o.acking = append(o.acking, newly...)
	o.inflight = append(o.inflight[:0], o.inflight[n:]...)
	return newly
}

// sendConfig is one connection's sending limits.
type sendConfig struct {
	peerMaxMessage int            // the peer's read limit; 0: none announced
	ackTimeout     time.Duration  // no ack progress this long on a live link: reconnect
	exitWhenIdle   bool           // return nil once nothing is in flight or queued
	linger         time.Duration  // with exitWhenIdle: wait this long for more first
	redelivered    *atomic.Uint64 // counts messages sent again; may be nil
}

// errAckTimeout: sent messages saw no acknowledgement on a live link.
var errAckTimeout = errors.New("reliable: no acknowledgement progress")

// send writes the stream's queued messages on conn, within the window, and
// deletes acknowledged ones from the store, until conn ends (nil), stop is
// closed (nil), the peer stops acknowledging (errAckTimeout, having closed
// conn) or the store fails. With exitWhenIdle it also returns nil once
// nothing is in flight and nothing is queued.
func (o *outbox) send(conn *wsconn.Conn, cfg sendConfig, stop <-chan struct{}) error {
	batchBytes := maxBatchBytes
	if cfg.peerMaxMessage > 0 {
		batchBytes = min(batchBytes, cfg.peerMaxMessage/2)
	}
	stall := time.NewTicker(max(cfg.ackTimeout/4, 10*time.Millisecond))
	defer stall.Stop()
	var idle *time.Timer
	defer func() {
		if idle != nil {
			idle.Stop()
		}
	}()
	var buf []byte
	for {
		o.mu.Lock()
		room, next, inFlight := 0, uint64(0), 0
		if o.win != nil {
			room, next, inFlight = o.win.Room(), o.win.Next(), o.win.InFlight()
		}
		o.mu.Unlock()
		if room > 0 {
			entries, err := o.store.Read(next, min(room, maxFramesPerMessage), batchBytes)
			if err != nil {
				conn.Close(protocol.CloseInternal, "store unavailable")
				return fmt.Errorf("reliable: read queue: %w", err)
			}
			if len(entries) > 0 {
				msg, err := o.frame(buf[:0], next, entries, cfg)
				if err != nil {
					conn.Close(protocol.CloseInternal, "")
					return err
				}
				buf = msg
				out := make([]byte, len(msg))
				copy(out, msg)
				if err := conn.Write(out); err != nil {
					return nil
				}
				continue
			}
		}
		// Nothing to send now (the window is full, or the queue empty):
		// delete what was acknowledged meanwhile. Sending comes first,
		// so a delete's commit never holds back the stream.
		if err := o.deleteAcked(); err != nil {
			conn.Close(protocol.CloseInternal, "store unavailable")
			return err
		}
		var idleC <-chan time.Time
		if cfg.exitWhenIdle && inFlight == 0 {
			if idle == nil {
				idle = time.NewTimer(cfg.linger)
			} else {
				idle.Reset(cfg.linger)
			}
			idleC = idle.C
		}
		select {
		case <-o.wake:
		case <-idleC:
			return nil
		case <-stall.C:
			o.mu.Lock()
			stuck := o.win != nil && o.win.InFlight() > 0 && time.Since(o.progress) > cfg.ackTimeout
			o.mu.Unlock()
			if stuck {
				conn.Close(protocol.CloseNormal, "no acknowledgement within the ack timeout")
				return fmt.Errorf("%w (%v)", errAckTimeout, cfg.ackTimeout)
			}
		case <-conn.Done():
			return nil
		case <-stop:
			return nil
		}
		if idle != nil && idleC == nil {
			idle.Stop()
		}
	}
}

// frame appends one WebSocket message carrying entries, which start at or
// after next, and records them as sent. Sequences the store no longer
// holds (evicted) become a skip; so do expired messages and messages too
// large for the peer, which settle with that code once acknowledged.
func (o *outbox) frame(buf []byte, next uint64, entries []queue.Entry, cfg sendConfig) ([]byte, error) {
	now := time.Now().UnixMilli()
	buf = protocol.AppendMessageStart(buf)
	sent := make([]settlement, 0, len(entries)+1)
	if first := entries[0].Seq; first > next {
		buf = protocol.AppendFrame(buf, &protocol.Skip{Stream: o.stream, Seq: first - 1, Code: protocol.RejectEvicted})
	} else if first < next {
		return nil, fmt.Errorf("%w: queue has seq %d where %d was expected", queue.ErrCorrupt, first, next)
	}
	for i := range entries {
		e := &entries[i]
		d := protocol.Data{Stream: o.stream, Seq: e.Seq, ID: e.ID, Expires: e.Expires, Headers: e.Headers, Payload: e.Payload}
		s := settlement{seq: e.Seq, id: e.ID}
		switch {
		case e.Expires > 0 && now >= e.Expires:
			s.code, s.reason = protocol.RejectExpired, "expired before delivery"
		case cfg.peerMaxMessage > 0 && 1+protocol.FrameSize(&d) > cfg.peerMaxMessage:
			s.code, s.reason = protocol.RejectTooLarge, fmt.Sprintf("message of %d bytes exceeds the receiver's limit of %d", len(e.Payload), cfg.peerMaxMessage)
		}
		if s.code != 0 {
			buf = protocol.AppendFrame(buf, &protocol.Skip{Stream: o.stream, Seq: e.Seq, Code: s.code, Reason: s.reason})
		} else {
			buf = protocol.AppendFrame(buf, &d)
		}
		sent = append(sent, s)
	}
	last := entries[len(entries)-1].Seq
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.win == nil {
		return nil, errors.New("reliable: connection ended")
	}
	redelivered := 0
	for _, s := range sent {
		if s.seq > o.sentMax {
			o.inflight = append(o.inflight, s)
			o.sentMax = s.seq
		} else {
			redelivered++
			// A code decided now (expired since) replaces the old one.
			if s.code != 0 {
				if i, ok := slices.BinarySearchFunc(o.inflight, s.seq, func(e settlement, seq uint64) int { return cmp.Compare(e.seq, seq) }); ok {
					o.inflight[i].code, o.inflight[i].reason = s.code, s.reason
				}
			}
		}
	}
	if cfg.redelivered != nil {
		cfg.redelivered.Add(uint64(redelivered))
	}
	if o.win.InFlight() == 0 {
		o.progress = time.Now()
	}
	if entries[0].Seq > next {
		o.win.Skip(entries[0].Seq - 1)
	}
	if err := o.win.MarkSent(last); err != nil {
		o.win.Skip(last)
	}
	return buf, nil
}

// deleteAcked deletes acknowledged entries from the store, recording how
// those that were not handled settled; once that is committed, and
// unless settleOnAck reported them already, their settlements are
// reported (receipts, counters) and ackedUpTo's waiters wake. Settling
// only after the commit means that a receipt someone starts waiting on
// finds its settlement either in the store or still to come from here.
// One caller at a time: the sender, or its owner once no sender runs.
func (o *outbox) deleteAcked() error {
	o.mu.Lock()
	acked, deleted := o.acked, o.deleted
	n := len(o.acking)
	settled := o.acking[:n:n] // later acks append beyond n
	o.mu.Unlock()
	if acked <= deleted {
		return nil
	}
	var outcomes []queue.Outcome
	for _, st := range settled {
		if st.code != 0 {
			outcomes = append(outcomes, queue.Outcome{Seq: st.seq, Code: uint16(st.code), Reason: st.reason})
		}
	}
	if err := o.store.AckWith(context.Background(), acked, outcomes); err != nil {
		return fmt.Errorf("reliable: delete acknowledged messages: %w", err)
	}
	o.mu.Lock()
	o.deleted = max(o.deleted, acked)
	if o.acking = o.acking[n:]; len(o.acking) == 0 {
		o.acking = nil
	}
	o.mu.Unlock()
	if !o.settleOnAck {
		o.report(acked, settled)
	}
	if o.onDeleted != nil {
		o.onDeleted()
	}
	return nil
}

// report settles settled in process (receipts, counters), keeps the
// rejections among them for settledAs, and then wakes ackedUpTo's
// waiters up to acked. One caller at a time: the connection's reader
// with settleOnAck (settled being what the ack newly covered), else the
// deleter.
func (o *outbox) report(acked uint64, settled []settlement) {
	if len(settled) > 0 && o.settle != nil {
		o.settle(settled)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, st := range settled {
		if st.code == 0 {
			continue
		}
		if len(o.unhandled) >= maxUnhandled {
			// Start again: what settled below st is no longer known.
			o.unhandled, o.unhandledFloor = nil, st.seq-1
		}
		if o.unhandled == nil {
			o.unhandled = make(map[uint64]settlement)
		}
		o.unhandled[st.seq] = st
	}
	if acked > o.reported {
		o.reported = acked
		close(o.ackedCh)
		o.ackedCh = make(chan struct{})
	}
}
