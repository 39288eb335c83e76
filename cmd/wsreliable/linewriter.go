package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/wsreliable/wsreliable/reliable"
)

// lineWriter writes whole lines to w, one Write call per line, from any
// goroutine.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lineWriter) writeLine(line []byte) error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	_, err := lw.w.Write(line)
	return err
}

// bufferedLines holds each client's lines until that client's flush,
// which writes them with one Write call: a burst costs one write per
// flush instead of one per line, and a failed write loses only the lines
// of the client whose messages are then delivered again. A client whose
// lines pass maxBuffered is written out early. serve keeps one buffer per
// sending client; recv one, under its own client ID.
type bufferedLines struct {
	mu     sync.Mutex
	w      io.Writer
	bufs   map[string][]byte // client → lines not yet written
	failed map[string]error  // client → an early write that failed
	pool   sync.Pool         // of *[]byte, for bufs
}

// maxBuffered is the most bytes of one client's lines held until flush.
const maxBuffered = 64 << 10

func newBufferedLines(w io.Writer) *bufferedLines {
	return &bufferedLines{w: w, bufs: map[string][]byte{}, failed: map[string]error{}}
}

// write buffers line for client. It fails only if an early write fails;
// then the client's next flush fails too.
func (b *bufferedLines) write(client string, line []byte) error {
	return b.writeMessage(client, func(dst []byte) []byte { return append(dst, line...) })
}

// writeMessage buffers the line that build appends to its argument, like
// write, without a copy of the line.
func (b *bufferedLines) writeMessage(client string, build func([]byte) []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	buf, ok := b.bufs[client]
	if !ok {
		if p, _ := b.pool.Get().(*[]byte); p != nil {
			buf = (*p)[:0]
		}
	}
	buf = build(buf)
	b.bufs[client] = buf
	if len(buf) < maxBuffered {
		return nil
	}
	if err := b.writeOutLocked(client); err != nil {
		b.failed[client] = err
		return err
	}
	return nil
}

// flush writes out client's buffered lines. It fails if they, or any of
// the client's lines since its last flush, did not reach w; the caller
// must then have those messages delivered again.
func (b *bufferedLines) flush(client string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.failed[client]; err != nil {
		// Delivered again in full: writing the rest would print it twice.
		delete(b.failed, client)
		b.dropLocked(client)
		return err
	}
	return b.writeOutLocked(client)
}

// writeOutLocked writes client's buffer and releases it. b.mu is held,
// which also keeps lines of different clients from interleaving.
func (b *bufferedLines) writeOutLocked(client string) error {
	buf := b.bufs[client]
	var err error
	if len(buf) > 0 {
		_, err = b.w.Write(buf)
	}
	b.dropLocked(client)
	return err
}

func (b *bufferedLines) dropLocked(client string) {
	if buf, ok := b.bufs[client]; ok {
		delete(b.bufs, client)
		if cap(buf) <= 2*maxBuffered {
			b.pool.Put(&buf)
		}
	}
}

// hooks returns the Handler and the Flush hook with which serve and recv
// print messages: the handler buffers the line build appends for each
// message under the message's address (its client ID without
// authentication), and flush writes a client's
// lines out before the library commits their watermark, so a message is
// acknowledged only once its line has left the process.
func (b *bufferedLines) hooks(build func([]byte, *reliable.Message) []byte, log *slog.Logger) (reliable.Handler, func(context.Context, string) error) {
	handler := func(_ context.Context, m *reliable.Message) error {
		if err := b.writeMessage(m.Address, func(dst []byte) []byte { return build(dst, m) }); err != nil {
			log.Warn("writing a message to stdout failed; it will be retried", "client", m.Address, "seq", m.Seq, "error", err)
			return fmt.Errorf("write stdout: %w", err)
		}
		return nil
	}
	flush := func(_ context.Context, client string) error {
		if err := b.flush(client); err != nil {
			log.Warn("writing messages to stdout failed; they will be delivered again", "client", client, "error", err)
			return fmt.Errorf("write stdout: %w", err)
		}
		return nil
	}
	return handler, flush
}
