package reliable

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/protocol"
)

// Observer receives the timings an operator graphs as histograms. Counters
// are in ServerStats; an adapter reads them at scrape time, so they always
// agree with Stats. Observer methods are called synchronously from the
// server's goroutines: they must be fast and must not block. The
// Prometheus and OpenTelemetry adapters in this module's nested modules
// implement it.
type Observer interface {
	// ObserveHandler is called after each handler call with its
	// duration and result (nil, a rejection or an error to retry).
	ObserveHandler(d time.Duration, err error)
	// ObserveCommit is called after each watermark commit with its
	// duration and the messages it covers.
	ObserveCommit(d time.Duration, messages int)
}

// serverCounters are the cumulative counters behind ServerStats.
type serverCounters struct {
	sessions       atomic.Uint64 // sessions started
	received       atomic.Uint64 // messages handed to the handler and acknowledged
	receivedBytes  atomic.Uint64
	rejected       atomic.Uint64 // rejected by the handler, or its attempts ran out
	expired        atomic.Uint64 // arrived past their expiry
	duplicates     atomic.Uint64 // dropped at or below the watermark
	pushed         atomic.Uint64 // pushes committed to outboxes
	pushedBytes    atomic.Uint64
	pushAcked      atomic.Uint64
	pushRejected   atomic.Uint64
	pushExpired    atomic.Uint64
	pushEvicted    atomic.Uint64
	storeFull      atomic.Uint64 // pushes and hellos refused over MaxStoreBytes
	rateWaits      atomic.Uint64 // reads held back by MaxMessageRate
	rateWaited     atomic.Int64  // their total, in ns
	byteRateWaits  atomic.Uint64 // reads held back by MaxByteRate
	byteRateWaited atomic.Int64  // their total, in ns

	mu     sync.Mutex
	closes map[protocol.CloseCode]uint64 // sessions ended, by close code
}

func (c *serverCounters) closed(code protocol.CloseCode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closes == nil {
		c.closes = make(map[protocol.CloseCode]uint64)
	}
	c.closes[code]++
}

// settled counts one push's settlement.
func (c *serverCounters) settled(code protocol.RejectCode) {
	switch statusOf(code) {
	case StatusAcked:
		c.pushAcked.Add(1)
	case StatusExpired:
		c.pushExpired.Add(1)
	case StatusEvicted:
		c.pushEvicted.Add(1)
	default:
		c.pushRejected.Add(1)
	}
}

// delivered counts one message of a client's stream as the inbox settled
// it: handled (code 0), rejected or expired.
func (c *serverCounters) delivered(d *protocol.Data, code protocol.RejectCode) {
	switch code {
	case 0:
		c.received.Add(1)
		c.receivedBytes.Add(uint64(len(d.Payload)))
	case protocol.RejectExpired:
		c.expired.Add(1)
	default:
		c.rejected.Add(1)
	}
}

// closeCode is the close code a session ended with: the peer's or ours,
// 1006 (abnormal) for a link that broke without a close frame.
func closeCode(errs ...error) protocol.CloseCode {
	for _, err := range errs {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return protocol.CloseCode(ce.Code)
		}
	}
	return 1006
}
