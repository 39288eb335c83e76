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

	// Several frames may share a message; this is how senders batch.
	msg := protocol.Encode(
		&protocol.Data{Stream: stream, Seq: 1, Payload: []byte("hi")},
		&protocol.Data{Stream: stream, Seq: 2, Payload: []byte("there")},
	)
	fmt.Println(len(msg), "bytes, version", msg[0], "first frame", protocol.FrameType(msg[1]))
	// Output:
	// 01 04 11 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 07
	// 82 bytes, version 1 first frame data
}

func ExampleDecode() {
	msg := protocol.Encode(
		&protocol.Data{
			Seq:     1,
			ID:      protocol.MessageID{0: 0x01, 15: 0xff},
			Headers: []protocol.Header{{Key: "type", Value: "greeting"}},
			Payload: []byte("hello"),
		},
		&protocol.Reject{Seq: 1, Code: 422, Reason: "unsupported"},
	)
	err := protocol.Decode(msg, func(f protocol.Frame) error {
		switch f := f.(type) {
		case *protocol.Data:
			// f.Payload aliases msg: copy it to keep it.
			fmt.Printf("data seq=%d id=%s headers=%v payload=%q\n", f.Seq, f.ID, f.Headers, f.Payload)
		case *protocol.Reject:
			fmt.Printf("reject seq=%d code=%d reason=%q\n", f.Seq, f.Code, f.Reason)
		default:
			fmt.Println("other frame:", f.Type())
		}
		return nil
	})
	fmt.Println("err:", err)

	// Bad input is an error wrapping a sentinel, never a panic.
	err = protocol.Decode([]byte{protocol.Version, byte(protocol.TypeAck), 200}, func(protocol.Frame) error { return nil })
	fmt.Println(errors.Is(err, protocol.ErrMalformed))
	// Output:
	// data seq=1 id=01000000-0000-0000-0000-0000000000ff headers=[{type greeting}] payload="hello"
	// reject seq=1 code=422 reason="unsupported"
	// err: <nil>
	// true
}
