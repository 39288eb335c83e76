package protocol_test

import (
	"errors"
	"fmt"

	"github.com/wsreliable/wsreliable/protocol"
)

func ExampleEncode() {
	stream := protocol.StreamID{15: 1}

	// One Ack: version byte, frame type, body length, stream, sequence.
	fmt.Printf("% x\n", protocol.Encode(&protocol.Ack{Stream: stream, Seq: 7}))

	// A Heartbeat has an empty body.
	fmt.Printf("% x\n", protocol.Encode(&protocol.Heartbeat{}))

	// Several frames may share a message; this is how senders batch.
	msg := protocol.Encode(
		&protocol.Data{Stream: stream, Seq: 1, Payload: []byte("hi")},
		&protocol.Data{Stream: stream, Seq: 2, Payload: []byte("there")},
	)
	fmt.Println(len(msg), "bytes, version", msg[0], "first frame", protocol.FrameType(msg[1]))
	// Output:
	// 02 04 11 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 07
	// 02 07 00
	// 84 bytes, version 2 first frame data
}

func ExampleDecode() {
	msg := protocol.Encode(
		&protocol.Data{
			Seq:     1,
			ID:      protocol.MessageID{0: 0x01, 15: 0xff},
			Expires: 1_700_000_000_000, // Unix milliseconds
			Headers: []protocol.Header{{Key: "type", Value: "greeting"}},
			Payload: []byte("hello"),
		},
		&protocol.Reject{Seq: 1, Code: protocol.RejectHandler, Reason: "unsupported"},
		&protocol.Skip{Seq: 3, Code: protocol.RejectExpired},
		&protocol.Heartbeat{},
	)
	err := protocol.Decode(msg, func(f protocol.Frame) error {
		switch f := f.(type) {
		case *protocol.Data:
			// f.Payload aliases msg: copy it to keep it.
			fmt.Printf("data seq=%d id=%s expires=%d headers=%v payload=%q\n", f.Seq, f.ID, f.Expires, f.Headers, f.Payload)
		case *protocol.Reject:
			fmt.Printf("reject seq=%d code=%d (%s) reason=%q\n", f.Seq, f.Code, f.Code, f.Reason)
		case *protocol.Skip:
			fmt.Printf("skip through seq=%d code=%d (%s)\n", f.Seq, f.Code, f.Code)
		default:
			fmt.Println("other frame:", f.Type())
		}
		return nil
	})
	fmt.Println("err:", err)

	// Bad input is an error wrapping a sentinel, never a panic.
	err = protocol.Decode([]byte{protocol.Version, byte(protocol.TypeAck), 200}, func(protocol.Frame) error { return nil })
	fmt.Println(errors.Is(err, protocol.ErrMalformed))

	// So is a message of another codec version, such as version 1.
	err = protocol.Decode([]byte{1, byte(protocol.TypeHeartbeat), 0}, func(protocol.Frame) error { return nil })
	fmt.Println(errors.Is(err, protocol.ErrVersion))
	// Output:
	// data seq=1 id=01000000-0000-0000-0000-0000000000ff expires=1700000000000 headers=[{type greeting}] payload="hello"
	// reject seq=1 code=1 (rejected) reason="unsupported"
	// skip through seq=3 code=2 (expired)
	// other frame: heartbeat
	// err: <nil>
	// true
	// true
}
