package protocol

import (
	"encoding/hex"
	"time"
)

// Subprotocol is the WebSocket subprotocol both peers must negotiate. A peer
// that does not offer it is refused with [CloseUnsupported].
const Subprotocol = "wsreliable.v2"

// Version is the codec version written as the first byte of every WebSocket
// message. A message with another first byte is refused with [ErrVersion].
// Version 2 made both directions symmetric: the hello and welcome carry
// each side's lowest held sequence and limits, data carries an expiry, and
// [Skip] and [Heartbeat] frames exist.
const Version byte = 2

// MessageID is a message's 16-byte identifier, a UUID (version 7 by default,
// so IDs sort by creation time). The zero value means "no ID".
type MessageID [16]byte

// String returns id in the canonical 8-4-4-4-12 hexadecimal UUID form.
func (id MessageID) String() string { return uuidString(id) }

// StreamID identifies one direction of one client's traffic. It is created
// randomly with the sending queue and never reused, so a receiver that sees
// a new StreamID starts its watermark at zero.
type StreamID [16]byte

// String returns s in the canonical 8-4-4-4-12 hexadecimal UUID form.
func (s StreamID) String() string { return uuidString(s) }

// IsZero reports whether s is the zero StreamID.
func (s StreamID) IsZero() bool { return s == StreamID{} }

func uuidString(b [16]byte) string {
	var buf [36]byte
	hex.Encode(buf[0:8], b[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], b[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], b[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], b[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:], b[10:])
	return string(buf[:])
}

// Header is one application header carried by a [Data] frame.
type Header struct {
	Key   string // the header's name; the protocol gives no key a meaning
	Value string // its value
}

// FrameType identifies the kind of a frame on the wire.
type FrameType uint8

// Frame types. Their values are part of the wire format and never change.
const (
	TypeHello     FrameType = 1 // client to server, first frame of a session
	TypeWelcome   FrameType = 2 // server to client, answer to Hello
	TypeData      FrameType = 3 // one message of a stream
	TypeAck       FrameType = 4 // cumulative acknowledgement of a stream
	TypeReject    FrameType = 5 // the receiver refused one message
	TypeSkip      FrameType = 6 // the sender passes over sequences it will not send
	TypeHeartbeat FrameType = 7 // keepalive that page code can see (browsers hide pings)
)

// String returns the frame type's name.
func (t FrameType) String() string {
	switch t {
	case TypeHello:
		return "hello"
	case TypeWelcome:
		return "welcome"
	case TypeData:
		return "data"
	case TypeAck:
		return "ack"
	case TypeReject:
		return "reject"
	case TypeSkip:
		return "skip"
	case TypeHeartbeat:
		return "heartbeat"
	}
	return "unknown(" + itoa(uint64(t)) + ")"
}

// Frame is one decoded frame: *[Hello], *[Welcome], *[Data], *[Ack],
// *[Reject], *[Skip] or *[Heartbeat]. The set is closed; other packages
// cannot add frame types.
type Frame interface {
	// Type returns the frame's type, as written on the wire.
	Type() FrameType
	bodySize() int
	appendBody(b []byte) []byte
}

// Hello opens a session. The client sends it first on a new connection.
type Hello struct {
	// ClientID names the client within its authenticated identity: the
	// server keeps the client's state under the pair, so the same ID
	// under two identities names two clients. It must not contain '/'.
	ClientID string
	// Stream is the client's outgoing stream.
	Stream StreamID
	// StreamLow is the lowest sequence of Stream the client still holds
	// (the last assigned plus one when it holds none). Everything below it
	// has been acknowledged, expired or evicted: a server without state
	// for Stream (a lost store, a fleet node meeting the client first)
	// resumes from here instead of waiting for sequences that will never
	// come.
	StreamLow uint64
	// InStream is the server's stream to this client as the client last
	// knew it (zero if it has never received anything).
	InStream StreamID
	// InWatermark is the highest sequence of InStream the client has
	// delivered contiguously.
	InWatermark uint64
	// MaxMessageSize is the largest WebSocket message the client reads;
	// the server settles a larger message as rejected instead of sending
	// it. Zero: no limit announced.
	MaxMessageSize uint32
	// MaxInFlight is the most unacknowledged data frames the client
	// accepts from the server. Zero: no limit announced.
	MaxInFlight uint32
}

// Welcome answers a [Hello].
type Welcome struct {
	// Watermark is the highest sequence of the client's stream the server
	// has delivered contiguously; the client drops everything up to it and
	// replays the rest.
	Watermark uint64
	// HeartbeatInterval is how often the server pings.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long after an expected frame the server
	// declares the link dead.
	HeartbeatTimeout time.Duration
	// MaxMessageSize is the largest WebSocket message the server reads.
	MaxMessageSize uint32
	// MaxInFlight is the most unacknowledged data frames the server
	// accepts from this client.
	MaxInFlight uint32
	// OutStream is the server's stream to this client, zero while the
	// server has never queued anything for it.
	OutStream StreamID
	// OutLow is the lowest sequence of OutStream the server still holds
	// (its last assigned plus one when it holds none): a client without
	// state for OutStream resumes from here.
	OutLow uint64
}

// Data carries one message of a stream.
type Data struct {
	Stream StreamID  // the stream the message belongs to
	Seq    uint64    // its sequence in Stream, from 1, never reused
	ID     MessageID // the message's ID, which the sender's receipts report
	// Expires is when the message stops being worth delivering, in Unix
	// milliseconds; 0: never. A receiver never hands an expired message to
	// its handler: it answers with a [Reject] of code [RejectExpired].
	Expires int64
	Headers []Header // application headers, in the sender's order
	// Payload aliases the decoded buffer: copy it to keep it beyond the
	// buffer's life.
	Payload []byte
}

// Ack acknowledges every message of Stream up to and including Seq.
type Ack struct {
	Stream StreamID // the stream acknowledged
	Seq    uint64   // the highest sequence acknowledged
}

// Reject tells the sender that the receiver refused message Seq of Stream
// for good. The sequence is still covered by the following [Ack].
type Reject struct {
	Stream StreamID   // the stream of the refused message
	Seq    uint64     // its sequence
	Code   RejectCode // why it was refused
	Reason string     // for people; UTF-8, at most MaxReasonLen bytes (Decode refuses more)
}

// Skip tells the receiver that the sender will not send the sequences of
// Stream up to and including Seq that the receiver has not delivered yet
// (they expired, were evicted or are too large for the receiver): its
// watermark moves to Seq as though they had been delivered, without the
// handler. Code says why. The receiver acknowledges Seq as usual.
type Skip struct {
	Stream StreamID   // the stream whose sequences are skipped
	Seq    uint64     // the last sequence skipped
	Code   RejectCode // why they are not sent
	Reason string     // for people; UTF-8, at most MaxReasonLen bytes (Decode refuses more)
}

// Heartbeat is an empty frame a peer sends while idle. WebSocket pings
// serve Go peers; browsers answer pings but never show them to page code,
// so a page can only see a dead link by the absence of heartbeats.
type Heartbeat struct{}

// RejectCode says why a message settled without being handled, in
// [Reject] and [Skip] frames.
type RejectCode uint16

// Reject codes. Their values are part of the wire format.
const (
	RejectHandler  RejectCode = 1 // the receiver's handler rejected it
	RejectExpired  RejectCode = 2 // its expiry passed before delivery
	RejectTooLarge RejectCode = 3 // larger than the receiver accepts
	RejectAttempts RejectCode = 4 // the handler failed MaxAttempts times
	RejectEvicted  RejectCode = 5 // dropped by the sender to make room
)

// String returns the code's name.
func (c RejectCode) String() string {
	switch c {
	case RejectHandler:
		return "rejected"
	case RejectExpired:
		return "expired"
	case RejectTooLarge:
		return "too large"
	case RejectAttempts:
		return "attempts exhausted"
	case RejectEvicted:
		return "evicted"
	}
	return "reject code " + itoa(uint64(c))
}

// Type returns [TypeHello].
func (*Hello) Type() FrameType { return TypeHello }

// Type returns [TypeWelcome].
func (*Welcome) Type() FrameType { return TypeWelcome }

// Type returns [TypeData].
func (*Data) Type() FrameType { return TypeData }

// Type returns [TypeAck].
func (*Ack) Type() FrameType { return TypeAck }

// Type returns [TypeReject].
func (*Reject) Type() FrameType { return TypeReject }

// Type returns [TypeSkip].
func (*Skip) Type() FrameType { return TypeSkip }

// Type returns [TypeHeartbeat].
func (*Heartbeat) Type() FrameType { return TypeHeartbeat }

// CloseCode is a WebSocket close status code as used by wsreliable.
type CloseCode uint16

// Close codes. The standard codes keep their RFC 6455 meaning; 4000-4099
// are wsreliable's own. Clients reconnect after [CloseNormal],
// [CloseGoingAway], [CloseInternal], [CloseTryAgainLater] (waiting at least
// the hint in the close reason) and [CloseSuperseded]; they stop and report
// an error after [ClosePolicy], [CloseUnsupported] and [CloseIdentity].
// [CloseProtocolError], [CloseTooBig], [CloseSequenceGap] and
// [CloseHelloTimeout] mean a bug or a hostile peer; clients reconnect with
// backoff.
const (
	CloseNormal        CloseCode = 1000 // orderly end of a session
	CloseGoingAway     CloseCode = 1001 // server shutting down; reconnect
	CloseProtocolError CloseCode = 1002 // malformed or unexpected frame
	ClosePolicy        CloseCode = 1008 // refused by policy; do not retry
	CloseTooBig        CloseCode = 1009 // message larger than the limit
	CloseInternal      CloseCode = 1011 // the peer failed (store error)
	CloseTryAgainLater CloseCode = 1013 // overloaded; reason holds a hint such as "retry-after=2s"

	CloseSuperseded   CloseCode = 4001 // a newer connection took over this client ID
	CloseUnsupported  CloseCode = 4002 // subprotocol or codec version not supported
	CloseHelloTimeout CloseCode = 4003 // no Hello within the deadline
	CloseIdentity     CloseCode = 4004 // client ID belongs to another identity
	CloseSequenceGap  CloseCode = 4005 // data frame beyond watermark+1
)

// String returns a short name for c.
func (c CloseCode) String() string {
	switch c {
	case CloseNormal:
		return "normal"
	case CloseGoingAway:
		return "going away"
	case CloseProtocolError:
		return "protocol error"
	case ClosePolicy:
		return "policy violation"
	case CloseTooBig:
		return "message too big"
	case CloseInternal:
		return "internal error"
	case CloseTryAgainLater:
		return "try again later"
	case CloseSuperseded:
		return "superseded"
	case CloseUnsupported:
		return "unsupported protocol"
	case CloseHelloTimeout:
		return "hello timeout"
	case CloseIdentity:
		return "identity mismatch"
	case CloseSequenceGap:
		return "sequence gap"
	}
	return "close code " + itoa(uint64(c))
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
