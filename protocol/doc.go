// Package protocol defines the wsreliable wire format: the frames two peers
// exchange inside WebSocket binary messages, their binary codec, the
// negotiated subprotocol and the close codes.
//
// # Messages and frames
//
// Every WebSocket binary message starts with one codec version byte
// ([Version]) followed by one or more frames. A frame is a type byte, the
// length of its body as an unsigned varint, and the body. Several [Data]
// frames may share one WebSocket message; this is how senders batch.
//
// # Direction
//
// Nothing here assumes a direction: a [Data] frame names the stream it
// belongs to, and [Ack], [Reject] and [Skip] name the stream they settle,
// so the same frames carry client-to-server and server-to-client traffic.
// Each side's hello or welcome carries the lowest sequence it still holds
// of its own stream, so a receiver that lost its state resumes there.
// [Skip] moves the receiver's watermark past sequences the sender will not
// send (expired, evicted, too large for the receiver); [Heartbeat] is an
// empty keepalive either side may send while idle, which browsers can see
// where they cannot see pings.
//
// # Safety
//
// [Decode] never panics on any input: truncated, oversized or garbled
// messages return an error wrapping [ErrMalformed], an unknown frame type
// returns [ErrUnknownFrame] and an unknown codec version returns
// [ErrVersion]. The package is fuzzed (see fuzz_test.go).
package protocol
