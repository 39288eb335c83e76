package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

const (
	// maxLineBytes is the longest stdin line: the client's default
	// message size limit.
	maxLineBytes = 1 << 20
	// maxBatchLines and maxBatchBytes bound the lines queued by one
	// SendBatch (one commit): enough to amortise an fsync, small enough
	// that the store's group commit limit is never the one that splits.
	maxBatchLines = 1024
	maxBatchBytes = 1 << 20
	// failDrainTimeout bounds the attempt to deliver what was queued
	// before send exits on an error, unless -wait is given.
	failDrainTimeout = 10 * time.Second
)

// receiptLine is what send -receipts prints: a "queued" line once Send
// returned, then "acked" or "rejected" when the server settles it.
type receiptLine struct {
	Event      string  `json:"event"`
	ID         string  `json:"id"`
	Seq        uint64  `json:"seq"`
	Payload    *string `json:"payload,omitempty"`
	PayloadB64 string  `json:"payload_b64,omitempty"`
	Reason     string  `json:"reason,omitempty"`
}

func runSend(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("send", "-url URL -data DIR [flags] < lines", stderr)
	cf := addClientFlags(fs, "client ID sent to the server; empty uses the ID kept in the store")
	receipts := fs.Bool("receipts", false, "print a JSON line on stdout per message when queued, acknowledged or rejected")
	wait := fs.Duration("wait", 0, "at end of input, give up waiting for acknowledgements after this long and exit 1; 0 waits forever")
	showProgress := fs.Bool("progress", false, "draw a progress line on stderr, rewritten every 500ms: messages queued, acknowledged, the rate, the backlog and reconnects (default: only when stderr is a terminal)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if code, ok := cf.check(fs, false); !ok {
		return code
	}
	if *wait < 0 {
		return usageError(fs, "-wait must not be negative")
	}
	forceProgress := false
	fs.Visit(func(f *flag.Flag) { forceProgress = forceProgress || f.Name == "progress" })
	var status *statusWriter
	if (forceProgress && *showProgress) || (!forceProgress && isTerminal(stderr)) {
		// Log lines and the progress line share stderr.
		status = &statusWriter{w: stderr}
		stderr = status
	}
	log := cf.logger(stderr)
	cl := cf.log.cliLog(stderr, "send", log)
	logf := cl.errorf
	c, storePath, stopped, err := cf.open(reliable.ClientOptions{Logger: log})
	if err != nil {
		logf("%v", err)
		return exitFail
	}
	defer c.Close()
	var queued atomic.Int64 // messages queued by this run
	stopProgress := func() {}
	if status != nil {
		prog := startProgress(status, c.Stats, &queued, forceProgress)
		// Stopped on every path before send returns (Stats stays valid
		// after the client is closed, as interrupted does).
		defer prog.stop()
		stopProgress = prog.stop
	}

	out := &lineWriter{w: stdout}
	var rw *receiptWatcher
	if *receipts {
		rw = newReceiptWatcher(out)
		defer rw.finish()
	}

	// drain waits for the acknowledgements, up to d (0: no limit) or
	// until the client stops, and reports what is left.
	drain := func(d time.Duration) error {
		dctx, cancel := context.WithCancel(ctx)
		defer cancel()
		if d > 0 {
			var cancelTimeout context.CancelFunc
			dctx, cancelTimeout = context.WithTimeout(dctx, d)
			defer cancelTimeout()
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			select {
			case <-stopped:
				cancel()
			case <-dctx.Done():
			}
		})
		err := c.Drain(dctx)
		cancel()
		wg.Wait()
		if err != nil && ctx.Err() == nil {
			select {
			case <-stopped:
				return fmt.Errorf("%v; %d messages still unacknowledged stay queued in %s and are sent by the next run on this -data",
					cf.stopReason(c), c.Stats().Queued, storePath)
			default:
			}
		}
		if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			why := ""
			if last := cf.lastError(); last != nil {
				why = fmt.Sprintf(" (last connection error: %v)", last)
			}
			return fmt.Errorf("gave up after %v: %d messages still unacknowledged%s; they stay queued in %s and are sent by the next run on this -data",
				d, c.Stats().Queued, why, storePath)
		}
		return err
	}
	// failAfterDrain reports msg, tries for a bounded time to deliver
	// what was already queued, and returns exitFail.
	failAfterDrain := func(format string, a ...any) int {
		logf(format, a...)
		d := *wait
		if d == 0 {
			d = failDrainTimeout
		}
		if err := drain(d); err != nil {
			if ctx.Err() != nil {
				return interrupted(ctx, c, storePath, logf)
			}
			logf("%v", err)
		}
		return exitFail
	}

	lines := make(chan lineItem, maxBatchLines)
	readerDone := make(chan struct{})
	defer close(readerDone)
	go readLines(stdin, maxLineBytes, lines, readerDone)

	// Each round queues every line already read, up to maxBatchLines and
	// maxBatchBytes, with one SendBatch: one fsync for all of them. A line
	// typed alone is queued alone, as soon as it arrives.
	var (
		batch   []lineItem
		msgs    []reliable.OutgoingMessage
		pending *lineItem // a read error met while filling a batch
		eof     bool
	)
	for !eof {
		var first lineItem
		if pending != nil {
			first, pending = *pending, nil
		} else {
			select {
			case it, ok := <-lines:
				if !ok {
					eof = true
					continue
				}
				first = it
			case <-stopped:
				logf("%v", cf.stopReason(c))
				return exitFail
			case <-ctx.Done():
				return interrupted(ctx, c, storePath, logf)
			}
		}
		if first.err != nil {
			return failAfterDrain("reading stdin: %v", first.err)
		}
		batch = append(batch[:0], first)
		size := len(first.line)
	fill:
		for len(batch) < maxBatchLines && size < maxBatchBytes {
			select {
			case it, ok := <-lines:
				switch {
				case !ok:
					eof = true
					break fill
				case it.err != nil:
					pending = &it
					break fill
				}
				batch = append(batch, it)
				size += len(it.line)
			default:
				break fill
			}
		}
		msgs = msgs[:0]
		for _, it := range batch {
			msgs = append(msgs, reliable.OutgoingMessage{Payload: it.line})
		}
		what := fmt.Sprintf("line %d", batch[0].n)
		if len(batch) > 1 {
			what = fmt.Sprintf("lines %d-%d", batch[0].n, batch[len(batch)-1].n)
		}
		rs, err := c.SendBatch(ctx, msgs)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return interrupted(ctx, c, storePath, logf)
		case errors.Is(err, reliable.ErrDiskFull):
			return failAfterDrain("disk full: %s not queued: %v", what, err)
		case errors.Is(err, reliable.ErrStopped):
			logf("client stopped, %s not queued: %v", what, err)
			return exitFail
		default:
			return failAfterDrain("%s not queued: %v", what, err)
		}
		queued.Add(int64(len(rs)))
		if rw == nil {
			continue
		}
		for i, r := range rs {
			text, b64 := payloadFields(batch[i].line)
			line := encodeLine(receiptLine{Event: "queued", ID: r.ID().String(), Seq: r.Seq(), Payload: text, PayloadB64: b64})
			if err := out.writeLine(line); err != nil {
				return failAfterDrain("writing receipts to stdout: %v", err)
			}
			rw.add(r)
		}
	}

	if err := drain(*wait); err != nil {
		if ctx.Err() != nil {
			return interrupted(ctx, c, storePath, logf)
		}
		logf("%v", err)
		return exitFail
	}
	if rw != nil {
		rw.finish()
	}
	stopProgress()
	st := c.Stats()
	if err := c.Close(); err != nil {
		logf("closing the store: %v", err)
		return exitFail
	}
	if st.Rejected > 0 {
		logf("%d of the messages were rejected by the server", st.Rejected)
		return exitFail
	}
	cl.infof("%d lines queued, %d messages acknowledged", queued.Load(), st.Acked)
	return exitOK
}

// interrupted closes c, keeping its messages queued, and returns the exit
// code for the signal that cancelled ctx.
func interrupted(ctx context.Context, c *reliable.Client, storePath string, logf func(string, ...any)) int {
	left := c.Stats().Queued
	if err := c.Close(); err != nil {
		logf("closing the store: %v", err)
	}
	logf("interrupted (%v); %d unacknowledged messages stay queued in %s", context.Cause(ctx), left, storePath)
	return interruptCode(ctx)
}

// lineItem is one stdin line (numbered from 1) or the error that ended
// the input.
type lineItem struct {
	line []byte
	n    int
	err  error
}

// readLines sends each line of r on out, then closes out. It stops early
// when done is closed.
func readLines(r io.Reader, max int, out chan<- lineItem, done <-chan struct{}) {
	defer close(out)
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := readLine(br, max)
		it := lineItem{line: line, n: n}
		switch {
		case err == io.EOF:
			return
		case errors.Is(err, errLineTooLong):
			it = lineItem{n: n, err: fmt.Errorf("line %d: %w (the limit is %d bytes)", n, err, max)}
		case err != nil:
			it = lineItem{n: n, err: err}
		}
		select {
		case out <- it:
		case <-done:
			return
		}
		if it.err != nil {
			return
		}
	}
}

var errLineTooLong = errors.New("line longer than the maximum message size")

// readLine returns the next line of br without its "\n" or "\r\n" (a
// final line without a newline counts too) and io.EOF when the input is
// exhausted. A line longer than max bytes yields errLineTooLong; it is not
// held in memory beyond max bytes.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	line := []byte{}
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > max+2 { // room for "\r\n"
			return nil, errLineTooLong
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			line = line[:len(line)-1]
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF:
			if len(line) == 0 {
				return nil, io.EOF
			}
		default:
			return nil, err
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) > max {
			return nil, errLineTooLong
		}
		return line, nil
	}
}

// receiptWatcher prints an "acked" or "rejected" line for each receipt, in
// the order they were added (the order they settle in).
type receiptWatcher struct {
	out  *lineWriter
	wake chan struct{}
	quit chan struct{}
	done chan struct{}
	once sync.Once

	mu      sync.Mutex
	pending []*reliable.Receipt
}

func newReceiptWatcher(out *lineWriter) *receiptWatcher {
	rw := &receiptWatcher{
		out:  out,
		wake: make(chan struct{}, 1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	go rw.run()
	return rw
}

func (rw *receiptWatcher) add(r *reliable.Receipt) {
	rw.mu.Lock()
	rw.pending = append(rw.pending, r)
	rw.mu.Unlock()
	select {
	case rw.wake <- struct{}{}:
	default:
	}
}

// finish prints the receipts settled so far and stops the watcher.
func (rw *receiptWatcher) finish() {
	rw.once.Do(func() { close(rw.quit) })
	<-rw.done
}

func (rw *receiptWatcher) run() {
	defer close(rw.done)
	for {
		rw.mu.Lock()
		var head *reliable.Receipt
		if len(rw.pending) > 0 {
			head = rw.pending[0]
		}
		rw.mu.Unlock()
		var settled <-chan struct{}
		if head != nil {
			settled = head.Done()
		}
		select {
		case <-settled:
			rw.print(head)
			rw.mu.Lock()
			rw.pending[0] = nil
			rw.pending = rw.pending[1:]
			rw.mu.Unlock()
			continue
		case <-rw.wake:
			continue
		case <-rw.quit:
		}
		// Print what has settled, in order, and stop.
		rw.mu.Lock()
		rest := rw.pending
		rw.pending = nil
		rw.mu.Unlock()
		for _, r := range rest {
			select {
			case <-r.Done():
				rw.print(r)
			default:
				return
			}
		}
		return
	}
}

func (rw *receiptWatcher) print(r *reliable.Receipt) {
	l := receiptLine{ID: r.ID().String(), Seq: r.Seq()}
	err := r.Err()
	var rej *reliable.RejectError
	switch {
	case err == nil:
		l.Event = "acked"
	case errors.As(err, &rej):
		l.Event, l.Reason = "rejected", rej.Reason
	default:
		return // closed or stopped: the message stays queued
	}
	_ = rw.out.writeLine(encodeLine(l))
}
