package main

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

const (
	// progressEvery is how often send redraws its progress line.
	progressEvery = 500 * time.Millisecond
	// rateWindow is the span over which the progress line's rate is
	// measured.
	rateWindow = 5 * time.Second
)

// statusWriter is stderr shared by log lines and a status line rewritten
// in place (carriage return, no newline) at its end. A log line written
// while the status shows replaces it, and the status is drawn again
// below. Writes must be whole lines, as slog's handlers and fmt.Fprintf
// with "\n" make them. It is safe for concurrent use.
type statusWriter struct {
	mu     sync.Mutex
	w      io.Writer
	status string // shown at the end of w without its newline; "" none
}

func (s *statusWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status == "" {
		return s.w.Write(p)
	}
	io.WriteString(s.w, "\r\x1b[K")
	n, err := s.w.Write(p)
	io.WriteString(s.w, s.status)
	return n, err
}

// draw shows status in place of the previous one.
func (s *statusWriter) draw(status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.w, "\r%s\x1b[K", status)
	s.status = status
}

// end shows status for the last time and ends its line.
func (s *statusWriter) end(status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.w, "\r%s\x1b[K\n", status)
	s.status = ""
}

// progress draws send's progress line on a statusWriter every
// progressEvery, from one goroutine, until stop.
type progress struct {
	out    *statusWriter
	stats  func() reliable.Stats
	queued *atomic.Int64 // messages queued by this run
	always bool          // write the final line even if the run ended before the first draw
	quit   chan struct{}
	done   chan struct{}
	once   sync.Once

	// Owned by the goroutine.
	samples []ackSample // within rateWindow, oldest first, plus one older
}

// ackSample is the acknowledged count at one moment.
type ackSample struct {
	at    time.Time
	acked uint64
}

// startProgress starts drawing on out the progress of a run that has
// queued the messages counted by queued, with stats the client's. The
// first line is drawn after progressEvery, so a short run shows nothing
// unless always is set; then one final line is written at stop.
func startProgress(out *statusWriter, stats func() reliable.Stats, queued *atomic.Int64, always bool) *progress {
	p := &progress{
		out:     out,
		stats:   stats,
		queued:  queued,
		always:  always,
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
		samples: []ackSample{{time.Now(), stats().Acked}},
	}
	go p.run()
	return p
}

// stop writes the final line (ending it with a newline) and returns once
// the goroutine has exited. It is idempotent.
func (p *progress) stop() {
	p.once.Do(func() { close(p.quit) })
	<-p.done
}

func (p *progress) run() {
	defer close(p.done)
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	drawn := false
	for {
		select {
		case now := <-t.C:
			p.out.draw(p.line(now))
			drawn = true
		case <-p.quit:
			if drawn || p.always {
				p.out.end(p.line(time.Now()))
			}
			return
		}
	}
}

// line samples the counters at now and formats them. The backlog is the
// client's count of unacknowledged messages (Stats.Queued): this run's
// queued minus acknowledged, plus any a previous run left in the store.
func (p *progress) line(now time.Time) string {
	st := p.stats()
	p.samples = append(p.samples, ackSample{now, st.Acked})
	// Keep one sample at or before the window's start as the base.
	for len(p.samples) > 2 && !p.samples[1].at.After(now.Add(-rateWindow)) {
		p.samples = p.samples[1:]
	}
	base := p.samples[0]
	rate := 0.0
	if d := now.Sub(base.at); d > 0 {
		rate = float64(st.Acked-base.acked) / d.Seconds()
	}
	return fmt.Sprintf("queued %d, acked %d, %.0f msg/s, backlog %d, reconnects %d",
		p.queued.Load(), st.Acked, rate, st.Queued, st.Reconnects)
}
