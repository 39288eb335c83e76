package reliable

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// Errors of the client and the server. Test with errors.Is.
var (
	// ErrClosed is returned by calls on a closed Client or Server, and by
	// Receipt.Wait when the client closed before the message settled
	// (the message stays queued for the next run).
	ErrClosed = errors.New("reliable: closed")

	// ErrRejected is wrapped by a handler's error to reject a message for
	// good instead of retrying it; the sender's receipt then reports a
	// *RejectError, which also matches ErrRejected.
	ErrRejected = errors.New("reliable: message rejected")

	// ErrTooLarge reports a message larger than the configured limit:
	// Send's error, or a receipt's when the receiver's limit was lower.
	ErrTooLarge = errors.New("reliable: message too large")

	// ErrInvalid reports an argument no message can have: an empty,
	// over-long or repeated client ID, a negative TTL.
	ErrInvalid = errors.New("reliable: invalid argument")

	// ErrExpired is matched by a receipt's error when the message's TTL
	// passed before it was delivered.
	ErrExpired = errors.New("reliable: message expired")

	// ErrEvicted is matched by a receipt's error when the sender dropped
	// the message to make room (OutboxEvict, DropOldest).
	ErrEvicted = errors.New("reliable: message evicted")

	// ErrUnauthorized reports that the server refused the client's
	// credentials (HTTP 401 or 403 on the upgrade). After a 401 the
	// client calls ClientOptions.Header again and retries with backoff,
	// reporting each refusal to OnStateChange; after a 403 it stops.
	ErrUnauthorized = errors.New("reliable: unauthorized")

	// ErrForbidden may be wrapped by an Authenticate hook's error to
	// answer 403 instead of 401; a client refused with 403 stops, with an
	// error matching both ErrForbidden and ErrUnauthorized.
	ErrForbidden = errors.New("reliable: forbidden")

	// ErrUnsupported reports a peer that does not speak this version of
	// the protocol (protocol.Subprotocol, protocol.Version).
	ErrUnsupported = errors.New("reliable: peer does not support " + protocol.Subprotocol)

	// ErrStopped is wrapped by the error that made a client give up
	// reconnecting (an auth, identity or policy refusal).
	ErrStopped = errors.New("reliable: client stopped")

	// ErrQueueFull and ErrDiskFull are the queue's errors, re-exported so
	// applications need not import the queue package.
	ErrQueueFull = queue.ErrFull
	// ErrDiskFull reports that the disk holding the queue is full; errors
	// wrapping it also match syscall.ENOSPC.
	ErrDiskFull = queue.ErrDiskFull

	// ErrStoreFull reports a push refused because the server's store is
	// at its quota, ServerOptions.MaxStoreBytes. Nothing was queued;
	// retry once clients have taken their pushes.
	ErrStoreFull = errors.New("reliable: server store at its quota (MaxStoreBytes)")
)

// RejectError is the error a Receipt reports when a message settled
// without being handled. Code says why: it matches ErrExpired for
// protocol.RejectExpired, ErrEvicted for protocol.RejectEvicted, and
// ErrRejected otherwise (also ErrTooLarge for protocol.RejectTooLarge).
type RejectError struct {
	ID     protocol.MessageID  // the message's ID
	Seq    uint64              // its sequence in its stream
	Code   protocol.RejectCode // why it settled unhandled
	Reason string              // the receiver's or sender's explanation, for people
}

// Error implements error.
func (e *RejectError) Error() string {
	return fmt.Sprintf("reliable: message %s (seq %d) %s: %s", e.ID, e.Seq, e.Code, e.Reason)
}

// Is matches ErrRejected, ErrExpired, ErrEvicted or ErrTooLarge by Code.
func (e *RejectError) Is(target error) bool {
	switch e.Code {
	case protocol.RejectExpired:
		return target == ErrExpired
	case protocol.RejectEvicted:
		return target == ErrEvicted
	case protocol.RejectTooLarge:
		return target == ErrRejected || target == ErrTooLarge
	}
	return target == ErrRejected
}

// CloseError reports a WebSocket close code received from the peer, or the
// code a client stopped on. RetryAfter carries the server's hint with
// [protocol.CloseTryAgainLater].
type CloseError struct {
	Code       protocol.CloseCode // the close frame's code
	Reason     string             // its reason text, for people
	RetryAfter time.Duration      // the server's hint; zero if none
}

// Error implements error.
func (e *CloseError) Error() string {
	s := fmt.Sprintf("reliable: connection closed: %d (%s)", uint16(e.Code), e.Code)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Is matches a *CloseError with the same code, and ErrUnsupported for
// [protocol.CloseUnsupported].
func (e *CloseError) Is(target error) bool {
	if t, ok := target.(*CloseError); ok {
		return t.Code == e.Code
	}
	return target == ErrUnsupported && e.Code == protocol.CloseUnsupported
}

// HandshakeError reports an HTTP answer other than the upgrade.
type HandshakeError struct {
	StatusCode int // the HTTP status of the server's answer
}

// Error implements error.
func (e *HandshakeError) Error() string {
	return fmt.Sprintf("reliable: handshake refused with HTTP %d", e.StatusCode)
}

// Is makes 401 and 403 match ErrUnauthorized, and 403 ErrForbidden.
func (e *HandshakeError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.StatusCode == 401 || e.StatusCode == 403
	case ErrForbidden:
		return e.StatusCode == 403
	}
	return false
}

// retryAfterKey prefixes the hint in a 1013 close reason.
const retryAfterKey = "retry-after="

// closeErrorFrom converts gorilla's close error.
func closeErrorFrom(err error) (*CloseError, bool) {
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		return nil, false
	}
	out := &CloseError{Code: protocol.CloseCode(ce.Code), Reason: ce.Text}
	if i := strings.Index(ce.Text, retryAfterKey); i >= 0 {
		v := ce.Text[i+len(retryAfterKey):]
		if j := strings.IndexByte(v, ' '); j >= 0 {
			v = v[:j]
		}
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			out.RetryAfter = d
		} else if n, err := strconv.Atoi(v); err == nil && n > 0 {
			out.RetryAfter = time.Duration(n) * time.Second
		}
	}
	return out, true
}
