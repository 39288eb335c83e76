package protocol_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wsreliable/wsreliable/protocol"
)

// maxWelcomeDuration is the longest duration a Welcome frame can carry.
const maxWelcomeDuration = time.Duration(math.MaxInt64/int64(time.Millisecond)) * time.Millisecond

// fill returns a 16-byte array whose bytes count up from start.
func fill(start byte) [16]byte {
	var b [16]byte
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func sid(start byte) protocol.StreamID  { return protocol.StreamID(fill(start)) }
func mid(start byte) protocol.MessageID { return protocol.MessageID(fill(start)) }

type roundTripCase struct {
	name   string
	frames []protocol.Frame
}

// roundTripCases are valid messages: encoding then decoding each gives the
// same frames back (after [normalize]).
var roundTripCases = func() []roundTripCase {
	cases := []roundTripCase{
		{"hello/zero", []protocol.Frame{&protocol.Hello{}}},
		{"hello/full", []protocol.Frame{&protocol.Hello{
			ClientID: "client-1", Stream: sid(1), StreamLow: 40, InStream: sid(0x80), InWatermark: 42,
			MaxMessageSize: 1 << 20, MaxInFlight: 256,
		}}},
		{"hello/max", []protocol.Frame{&protocol.Hello{
			ClientID: strings.Repeat("é", protocol.MaxClientIDLen/2), Stream: sid(1), StreamLow: math.MaxUint64,
			InStream: sid(0xf0), InWatermark: math.MaxUint64, MaxMessageSize: math.MaxUint32, MaxInFlight: math.MaxUint32,
		}}},
		{"hello/only new fields", []protocol.Frame{&protocol.Hello{StreamLow: 1, MaxMessageSize: 1, MaxInFlight: 1}}},
		{"welcome/zero", []protocol.Frame{&protocol.Welcome{}}},
		{"welcome/full", []protocol.Frame{&protocol.Welcome{
			Watermark: 7, HeartbeatInterval: 15 * time.Second, HeartbeatTimeout: 45 * time.Second,
			MaxMessageSize: 1 << 20, MaxInFlight: 1024, OutStream: sid(0x40), OutLow: 8,
		}}},
		{"welcome/max", []protocol.Frame{&protocol.Welcome{
			Watermark: math.MaxUint64, HeartbeatInterval: maxWelcomeDuration, HeartbeatTimeout: maxWelcomeDuration,
			MaxMessageSize: math.MaxUint32, MaxInFlight: math.MaxUint32, OutStream: sid(0xf0), OutLow: math.MaxUint64,
		}}},
		{"welcome/only new fields", []protocol.Frame{&protocol.Welcome{OutStream: sid(1), OutLow: 1}}},
		{"data/no headers", []protocol.Frame{&protocol.Data{
			Stream: sid(1), Seq: 1, ID: mid(0x10), Payload: []byte("hello"),
		}}},
		{"data/headers", []protocol.Frame{&protocol.Data{
			Stream: sid(1), Seq: 2, ID: mid(0x10), Expires: 1_700_000_000_000,
			Headers: []protocol.Header{
				{Key: "content-type", Value: "application/json"},
				{Key: "", Value: ""},
				{Key: "ключ", Value: "значение ✓"},
				{Key: "dup", Value: "1"},
				{Key: "dup", Value: "2"},
			},
			Payload: []byte(`{"a":1}`),
		}}},
		{"data/max headers", []protocol.Frame{&protocol.Data{
			Stream: sid(1), Seq: 3, ID: mid(0x10), Headers: manyHeaders(protocol.MaxHeaders), Payload: []byte("x"),
		}}},
		{"data/empty payload", []protocol.Frame{&protocol.Data{Stream: sid(1), Seq: 4, Payload: []byte{}}}},
		{"data/nil payload", []protocol.Frame{&protocol.Data{Stream: sid(1), Seq: 5}}},
		{"data/empty headers", []protocol.Frame{&protocol.Data{Stream: sid(1), Seq: 6, Headers: []protocol.Header{}}}},
		{"data/binary payload", []protocol.Frame{&protocol.Data{Seq: 7, Payload: []byte{0xff, 0xfe, 0, 0x80, 1}}}},
		{"data/large payload", []protocol.Frame{&protocol.Data{Seq: 8, Payload: bytes.Repeat([]byte{0xa5}, 70_000)}}},
		{"data/max", []protocol.Frame{&protocol.Data{
			Stream: sid(0xf0), Seq: math.MaxUint64, ID: mid(0xf0), Expires: math.MaxInt64,
			Headers: manyHeaders(protocol.MaxHeaders), Payload: bytes.Repeat([]byte{0x5a}, 300),
		}}},
		{"ack/zero", []protocol.Frame{&protocol.Ack{}}},
		{"ack/max seq", []protocol.Frame{&protocol.Ack{Stream: sid(9), Seq: math.MaxUint64}}},
		{"reject/empty reason", []protocol.Frame{&protocol.Reject{Stream: sid(1), Seq: 9, Code: 0}}},
		{"reject/full", []protocol.Frame{&protocol.Reject{Stream: sid(1), Seq: 10, Code: protocol.RejectHandler, Reason: "schema mismatch"}}},
		{"reject/max", []protocol.Frame{&protocol.Reject{
			Stream: sid(1), Seq: math.MaxUint64, Code: math.MaxUint16, Reason: strings.Repeat("r", protocol.MaxReasonLen),
		}}},
		{"skip/zero", []protocol.Frame{&protocol.Skip{}}},
		{"skip/full", []protocol.Frame{&protocol.Skip{Stream: sid(1), Seq: 10, Code: protocol.RejectExpired, Reason: "expired"}}},
		{"skip/max", []protocol.Frame{&protocol.Skip{
			Stream: sid(0xf0), Seq: math.MaxUint64, Code: math.MaxUint16, Reason: strings.Repeat("é", protocol.MaxReasonLen/2),
		}}},
		{"heartbeat", []protocol.Frame{&protocol.Heartbeat{}}},
		{"multi/every type", []protocol.Frame{
			&protocol.Hello{ClientID: "c", Stream: sid(1), StreamLow: 4, InStream: sid(2), InWatermark: 9, MaxMessageSize: 1 << 16, MaxInFlight: 8},
			&protocol.Welcome{Watermark: 3, HeartbeatInterval: time.Second, OutStream: sid(2), OutLow: 10},
			&protocol.Data{Stream: sid(1), Seq: 4, ID: mid(2), Expires: 1_700_000_000_000, Payload: []byte("a")},
			&protocol.Data{Stream: sid(1), Seq: 5, ID: mid(3), Headers: []protocol.Header{{Key: "k", Value: "v"}}},
			&protocol.Ack{Stream: sid(1), Seq: 5},
			&protocol.Reject{Stream: sid(1), Seq: 4, Code: protocol.RejectHandler, Reason: "no"},
			&protocol.Skip{Stream: sid(2), Seq: 12, Code: protocol.RejectEvicted, Reason: "full"},
			&protocol.Heartbeat{},
		}},
		{"multi/heartbeats", []protocol.Frame{&protocol.Heartbeat{}, &protocol.Heartbeat{}, &protocol.Heartbeat{}}},
		{"multi/heartbeat between data", []protocol.Frame{
			&protocol.Data{Stream: sid(1), Seq: 1, Payload: []byte("a")},
			&protocol.Heartbeat{},
			&protocol.Data{Stream: sid(1), Seq: 2, Payload: []byte("b")},
			&protocol.Skip{Stream: sid(1), Seq: 4, Code: protocol.RejectTooLarge},
			&protocol.Heartbeat{},
		}},
		{"multi/batch", dataBatch(100)},
	}
	for _, seq := range []uint64{0, 1, 127, 128, 16383, 16384, 1<<32 - 1, 1 << 32, 1 << 63, math.MaxUint64 - 1, math.MaxUint64} {
		cases = append(cases, roundTripCase{
			name:   fmt.Sprintf("data/seq %d", seq),
			frames: []protocol.Frame{&protocol.Data{Stream: sid(1), Seq: seq, ID: mid(2), Payload: []byte("p")}},
		})
	}
	for _, exp := range []int64{0, 1, 127, 128, 1_700_000_000_000, 1<<62 - 1, math.MaxInt64 - 1, math.MaxInt64} {
		cases = append(cases, roundTripCase{
			name:   fmt.Sprintf("data/expires %d", exp),
			frames: []protocol.Frame{&protocol.Data{Stream: sid(1), Seq: 1, ID: mid(2), Expires: exp, Payload: []byte("p")}},
		})
	}
	for _, code := range []protocol.RejectCode{protocol.RejectHandler, protocol.RejectExpired, protocol.RejectTooLarge,
		protocol.RejectAttempts, protocol.RejectEvicted, 127, 128, 16383, 16384, math.MaxUint16} {
		cases = append(cases,
			roundTripCase{
				name:   fmt.Sprintf("reject/code %d", code),
				frames: []protocol.Frame{&protocol.Reject{Stream: sid(1), Seq: 1, Code: code, Reason: code.String()}},
			},
			roundTripCase{
				name:   fmt.Sprintf("skip/code %d", code),
				frames: []protocol.Frame{&protocol.Skip{Stream: sid(1), Seq: 1, Code: code, Reason: code.String()}},
			})
	}
	return cases
}()

func manyHeaders(n int) []protocol.Header {
	h := make([]protocol.Header, n)
	for i := range h {
		h[i] = protocol.Header{Key: fmt.Sprintf("k%d", i), Value: fmt.Sprintf("v%d", i)}
	}
	return h
}

func dataBatch(n int) []protocol.Frame {
	frames := make([]protocol.Frame, n)
	for i := range frames {
		frames[i] = &protocol.Data{Stream: sid(1), Seq: uint64(i + 1), ID: mid(byte(i)), Payload: []byte(fmt.Sprint(i))}
	}
	return frames
}

// normalize returns copies of frames in which empty Data headers and
// payloads are nil, because the wire does not tell nil from empty.
func normalize(frames []protocol.Frame) []protocol.Frame {
	out := make([]protocol.Frame, len(frames))
	for i, f := range frames {
		switch f := f.(type) {
		case *protocol.Data:
			d := *f
			if len(d.Headers) == 0 {
				d.Headers = nil
			}
			if len(d.Payload) == 0 {
				d.Payload = nil
			}
			out[i] = &d
		default:
			out[i] = f
		}
	}
	return out
}

// decodeAll decodes msg and fails tb on error.
func decodeAll(tb testing.TB, msg []byte) []protocol.Frame {
	tb.Helper()
	frames, err := protocol.DecodeAll(msg)
	if err != nil {
		tb.Fatalf("DecodeAll(% x): %v", truncate(msg), err)
	}
	return frames
}

// assertFramesEqual fails tb unless got and want are equal after normalize.
func assertFramesEqual(tb testing.TB, got, want []protocol.Frame) {
	tb.Helper()
	g, w := normalize(got), normalize(want)
	if len(g) != len(w) {
		tb.Fatalf("got %d frames, want %d", len(g), len(w))
	}
	for i := range g {
		if !reflect.DeepEqual(g[i], w[i]) {
			tb.Fatalf("frame %d:\n got %#v\nwant %#v", i, g[i], w[i])
		}
	}
}

// assertDecodeError fails tb unless err wraps want and no other sentinel.
func assertDecodeError(tb testing.TB, err, want error) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got nil error, want %v", want)
	}
	if !errors.Is(err, want) {
		tb.Fatalf("got error %q, want one wrapping %q", err, want)
	}
	for _, other := range []error{protocol.ErrMalformed, protocol.ErrUnknownFrame, protocol.ErrVersion} {
		if other != want && errors.Is(err, other) {
			tb.Fatalf("error %q wraps both %q and %q", err, want, other)
		}
	}
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range roundTripCases {
		t.Run(tc.name, func(t *testing.T) {
			msg := protocol.Encode(tc.frames...)
			if msg[0] != protocol.Version {
				t.Fatalf("first byte %d, want Version %d", msg[0], protocol.Version)
			}

			want := 1
			for _, f := range tc.frames {
				want += protocol.FrameSize(f)
			}
			if len(msg) != want {
				t.Errorf("len(Encode) = %d, want 1 + sum of FrameSize = %d", len(msg), want)
			}

			// The streaming API writes the same bytes as Encode.
			appended := protocol.AppendMessageStart(nil)
			for _, f := range tc.frames {
				appended = protocol.AppendFrame(appended, f)
			}
			if !bytes.Equal(appended, msg) {
				t.Errorf("AppendMessageStart+AppendFrame differs from Encode")
			}

			assertFramesEqual(t, decodeAll(t, msg), tc.frames)

			// Decode hands over the frames one by one, in order.
			var i int
			err := protocol.Decode(msg, func(f protocol.Frame) error {
				if i >= len(tc.frames) {
					t.Fatalf("Decode called fn %d times, want %d", i+1, len(tc.frames))
				}
				if f.Type() != tc.frames[i].Type() {
					t.Errorf("frame %d: type %s, want %s", i, f.Type(), tc.frames[i].Type())
				}
				i++
				return nil
			})
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if i != len(tc.frames) {
				t.Fatalf("Decode called fn %d times, want %d", i, len(tc.frames))
			}
		})
	}
}

func TestFrameSize(t *testing.T) {
	for _, tc := range roundTripCases {
		t.Run(tc.name, func(t *testing.T) {
			for i, f := range tc.frames {
				prefix := []byte("prefix")
				b := protocol.AppendFrame(append([]byte(nil), prefix...), f)
				if !bytes.HasPrefix(b, prefix) {
					t.Fatalf("frame %d: AppendFrame overwrote dst", i)
				}
				if got, want := len(b)-len(prefix), protocol.FrameSize(f); got != want {
					t.Fatalf("frame %d (%s): AppendFrame appended %d bytes, FrameSize says %d", i, f.Type(), got, want)
				}
				if b[len(prefix)] != byte(f.Type()) {
					t.Fatalf("frame %d: type byte %d, want %d", i, b[len(prefix)], f.Type())
				}
			}
		})
	}
}

// TestEncodeGolden pins the wire format, which a round trip alone cannot:
// a change made symmetrically to encoder and decoder would still round-trip.
// The expected bytes are written out field by field from the version 2
// layout; each line comments which field it is.
func TestEncodeGolden(t *testing.T) {
	const (
		ids   = "000102030405060708090a0b0c0d0e0f" // sid(0), mid(0)
		ids2  = "101112131415161718191a1b1c1d1e1f" // sid(0x10), mid(0x10)
		zero  = "00000000000000000000000000000000" // zero StreamID, MessageID
		max64 = "ffffffffffffffffff01"             // uvarint math.MaxUint64
		max32 = "ffffffff0f"                       // uvarint math.MaxUint32
	)
	tests := []struct {
		name  string
		frame protocol.Frame
		want  string // hex, without the version byte
	}{
		{"hello", &protocol.Hello{ClientID: "ab", Stream: sid(0), StreamLow: 5, InStream: sid(0x10), InWatermark: 300, MaxMessageSize: 1 << 16, MaxInFlight: 128},
			"01" + "2b" + // type, body length 43
				"026162" + // ClientID "ab"
				ids + // Stream
				"05" + // StreamLow
				ids2 + // InStream
				"ac02" + // InWatermark 300
				"808004" + // MaxMessageSize 65536
				"8001"}, // MaxInFlight 128
		{"hello/zero", &protocol.Hello{},
			"01" + "25" + "00" + zero + "00" + zero + "00" + "00" + "00"},
		{"hello/max", &protocol.Hello{Stream: sid(0), StreamLow: math.MaxUint64, InStream: sid(0x10), InWatermark: math.MaxUint64, MaxMessageSize: math.MaxUint32, MaxInFlight: math.MaxUint32},
			"01" + "3f" + "00" + ids + max64 + ids2 + max64 + max32 + max32},
		{"welcome", &protocol.Welcome{Watermark: 1, HeartbeatInterval: 1500 * time.Millisecond, HeartbeatTimeout: 3 * time.Second, MaxMessageSize: 128, MaxInFlight: 2, OutStream: sid(0x10), OutLow: 300},
			"02" + "1a" + // type, body length 26
				"01" + // Watermark
				"dc0b" + // HeartbeatInterval 1500 ms
				"b817" + // HeartbeatTimeout 3000 ms
				"8001" + // MaxMessageSize 128
				"02" + // MaxInFlight
				ids2 + // OutStream
				"ac02"}, // OutLow 300
		{"welcome/zero", &protocol.Welcome{},
			"02" + "16" + "00" + "00" + "00" + "00" + "00" + zero + "00"},
		{"data", &protocol.Data{Stream: sid(0), Seq: 5, ID: mid(0x10), Expires: 1_700_000_000_000, Headers: []protocol.Header{{Key: "k", Value: "v"}}, Payload: []byte("hi")},
			"03" + "2f" + // type, body length 47
				ids + // Stream
				"05" + // Seq
				ids2 + // ID
				"80d095ffbc31" + // Expires 1700000000000 = 0x18bcfe56800
				"01" + // header count
				"016b" + "0176" + // "k": "v"
				"026869"}, // Payload "hi"
		{"data/no expiry", &protocol.Data{Stream: sid(0), Seq: 5, ID: mid(0), Payload: []byte("hi")},
			"03" + "26" + ids + "05" + ids + "00" + "00" + "026869"},
		{"data/max expiry", &protocol.Data{Expires: math.MaxInt64},
			"03" + "2c" + zero + "00" + zero + "ffffffffffffffff7f" + "00" + "00"},
		{"data/negative expiry is none", &protocol.Data{Expires: -1},
			"03" + "24" + zero + "00" + zero + "00" + "00" + "00"},
		{"ack", &protocol.Ack{Stream: sid(0), Seq: 300}, "04" + "12" + ids + "ac02"},
		{"reject", &protocol.Reject{Stream: sid(0), Seq: 1, Code: 1000, Reason: "x"},
			"05" + "15" + ids + "01" + "e807" + "0178"},
		{"reject/expired", &protocol.Reject{Stream: sid(0x10), Seq: 300, Code: protocol.RejectExpired},
			"05" + "14" + ids2 + "ac02" + "02" + "00"},
		{"skip", &protocol.Skip{Stream: sid(0x10), Seq: 300, Code: protocol.RejectEvicted, Reason: "full"},
			"06" + "18" + // type, body length 24
				ids2 + // Stream
				"ac02" + // Seq 300
				"05" + // Code
				"0466756c6c"}, // Reason "full"
		{"skip/max code", &protocol.Skip{Stream: sid(0), Seq: 1, Code: math.MaxUint16},
			"06" + "15" + ids + "01" + "ffff03" + "00"},
		{"heartbeat", &protocol.Heartbeat{}, "07" + "00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := fmt.Sprintf("%x", protocol.Encode(tc.frame))
			if want := "02" + tc.want; got != want {
				t.Fatalf("Encode:\n got %s\nwant %s", got, want)
			}
		})
	}

	// A whole message: the version byte once, then the frames back to back.
	got := fmt.Sprintf("%x", protocol.Encode(&protocol.Heartbeat{}, &protocol.Ack{Stream: sid(0), Seq: 1}, &protocol.Heartbeat{}))
	if want := "02" + "0700" + "0411" + ids + "01" + "0700"; got != want {
		t.Fatalf("Encode(heartbeat, ack, heartbeat):\n got %s\nwant %s", got, want)
	}
}

// TestDataExpires: expiries travel as non-negative Unix milliseconds, and
// negative ones (no expiry) as zero.
func TestDataExpires(t *testing.T) {
	tests := []struct {
		name     string
		in, want int64
	}{
		{"zero", 0, 0},
		{"one", 1, 1},
		{"now-ish", 1_700_000_000_000, 1_700_000_000_000},
		{"max", math.MaxInt64, math.MaxInt64},
		{"minus one", -1, 0},
		{"min", math.MinInt64, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := &protocol.Data{Stream: sid(1), Seq: 1, Expires: tc.in, Payload: []byte("p")}
			msg := protocol.Encode(in)
			if len(msg) != 1+protocol.FrameSize(in) {
				t.Fatalf("len(Encode) = %d, FrameSize = %d", len(msg), protocol.FrameSize(in))
			}
			d := decodeAll(t, msg)[0].(*protocol.Data)
			if d.Expires != tc.want {
				t.Fatalf("Expires %d decoded as %d, want %d", tc.in, d.Expires, tc.want)
			}
		})
	}
}

// TestWelcomeDurationsInMillis: durations travel as whole milliseconds, and
// negative ones as zero.
func TestWelcomeDurationsInMillis(t *testing.T) {
	tests := []struct {
		name     string
		in, want time.Duration
	}{
		{"zero", 0, 0},
		{"whole", 2 * time.Second, 2 * time.Second},
		{"sub-millisecond", 999 * time.Microsecond, 0},
		{"truncated", 1500*time.Microsecond + 1, time.Millisecond},
		{"negative", -time.Second, 0},
		{"max", math.MaxInt64, maxWelcomeDuration},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := &protocol.Welcome{HeartbeatInterval: tc.in, HeartbeatTimeout: tc.in}
			msg := protocol.Encode(in)
			if len(msg) != 1+protocol.FrameSize(in) {
				t.Fatalf("len(Encode) = %d, FrameSize = %d", len(msg), protocol.FrameSize(in))
			}
			w := decodeAll(t, msg)[0].(*protocol.Welcome)
			if w.HeartbeatInterval != tc.want || w.HeartbeatTimeout != tc.want {
				t.Fatalf("got %v/%v, want %v", w.HeartbeatInterval, w.HeartbeatTimeout, tc.want)
			}
		})
	}
}

// Raw message builders for hand-made bad input.

func uv(v uint64) []byte { return binary.AppendUvarint(nil, v) }

func str(s string) []byte { return append(uv(uint64(len(s))), s...) }

func id16() []byte { b := fill(0x30); return b[:] }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// frame returns a frame of type typ whose body is the concatenated parts.
func frame(typ byte, parts ...[]byte) []byte {
	body := cat(parts...)
	return cat([]byte{typ}, uv(uint64(len(body))), body)
}

// message returns the version byte followed by frames.
func message(frames ...[]byte) []byte { return cat(append([][]byte{{protocol.Version}}, frames...)...) }

var (
	tHello     = byte(protocol.TypeHello)
	tWelcome   = byte(protocol.TypeWelcome)
	tData      = byte(protocol.TypeData)
	tAck       = byte(protocol.TypeAck)
	tReject    = byte(protocol.TypeReject)
	tSkip      = byte(protocol.TypeSkip)
	tHeartbeat = byte(protocol.TypeHeartbeat)

	// overflow is an 11-byte varint; binary.Uvarint reports overflow.
	overflow = append(bytes.Repeat([]byte{0xff}, 10), 0x01)
	// overflow10 is a 10-byte varint whose last byte exceeds 64 bits.
	overflow10 = append(bytes.Repeat([]byte{0xff}, 9), 0x02)

	validAck       = frame(tAck, id16(), uv(1))
	validHeartbeat = frame(tHeartbeat)
)

// Valid version 2 bodies, field by field, for hand-made input. Bad cases
// below spell out their bodies so that each shows which field it breaks.
func helloBody(clientID string) []byte {
	return cat(str(clientID), id16() /* Stream */, uv(0) /* StreamLow */, id16(), /* InStream */
		uv(0) /* InWatermark */, uv(0) /* MaxMessageSize */, uv(0) /* MaxInFlight */)
}

func welcomeBody() []byte {
	return cat(uv(0) /* Watermark */, uv(0) /* HeartbeatInterval */, uv(0), /* HeartbeatTimeout */
		uv(0) /* MaxMessageSize */, uv(0) /* MaxInFlight */, id16() /* OutStream */, uv(0) /* OutLow */)
}

type badCase struct {
	name string
	msg  []byte
	want error
	// why is a substring of the error: the frame and the reason, so that
	// a case that breaks for another reason (say, a layout change that
	// makes it fail earlier) does not pass unnoticed.
	why string
}

func headerPairs(n int) []byte {
	var b []byte
	for i := range n {
		b = append(b, str(fmt.Sprint("k", i))...)
		b = append(b, str("v")...)
	}
	return b
}

var badCases = func() []badCase {
	mal, unk, ver := protocol.ErrMalformed, protocol.ErrUnknownFrame, protocol.ErrVersion
	v := protocol.Version
	cases := []badCase{
		{"empty/nil", nil, mal, "empty message"},
		{"empty/non-nil", []byte{}, mal, "empty message"},
		{"version byte only", []byte{v}, mal, "no frames"},

		{"version/0", cat([]byte{0}, validAck), ver, "version: 0"},
		{"version/1", cat([]byte{1}, validAck), ver, "version: 1"},
		{"version/1 hello", cat([]byte{1}, frame(tHello, str("a"), id16(), id16(), uv(0))), ver, "version: 1"},
		{"version/3", cat([]byte{3}, validAck), ver, "version: 3"},
		{"version/255 alone", []byte{0xff}, ver, "version: 255"},

		{"unknown frame/0", message(frame(0)), unk, "type: 0"},
		{"unknown frame/8", message(frame(8)), unk, "type: 8"},
		{"unknown frame/8 with body", message(frame(8, []byte("abc"))), unk, "type: 8"},
		{"unknown frame/8 after heartbeat", message(validHeartbeat, frame(8)), unk, "type: 8"},
		{"unknown frame/255 after valid", message(validAck, frame(0xff)), unk, "type: 255"},

		{"frame length/missing", []byte{v, tAck}, mal, "ack frame length"},
		{"frame length/unterminated", []byte{v, tAck, 0x80}, mal, "ack frame length"},
		{"frame length/beyond buffer", cat([]byte{v, tAck, 18}, id16()), mal, "ack frame length"},
		{"frame length/beyond buffer by one", cat([]byte{v, tAck, 18}, id16(), []byte{1}), mal, "ack frame length"},
		{"frame length/max uint64", cat([]byte{v, tAck}, uv(math.MaxUint64), id16()), mal, "ack frame length"},
		{"frame length/max int64", cat([]byte{v, tAck}, uv(math.MaxInt64), id16()), mal, "ack frame length"},
		{"frame length/overflow", cat([]byte{v, tAck}, overflow, id16()), mal, "ack frame length"},
		{"frame length/overflow in 10th byte", cat([]byte{v, tAck}, overflow10, id16()), mal, "ack frame length"},
		{"frame length/unknown type beyond buffer", []byte{v, 9, 5}, mal, "unknown(9) frame length"},
		{"frame length/heartbeat missing", []byte{v, tHeartbeat}, mal, "heartbeat frame length"},
		{"frame length/skip beyond buffer", cat([]byte{v, tSkip, 21}, id16(), uv(1), uv(1)), mal, "skip frame length"},

		{"hello/empty body", message(frame(tHello)), mal, "hello frame: bad varint"},
		{"hello/client ID too long", message(frame(tHello, helloBody(strings.Repeat("a", protocol.MaxClientIDLen+1)))), mal, "hello frame: string too long"},
		{"hello/client ID length beyond body", message(frame(tHello, uv(200), []byte("abc"))), mal, "hello frame: truncated bytes"},
		{"hello/client ID not UTF-8", message(frame(tHello, helloBody("a\xffb"))), mal, "hello frame: string is not UTF-8"},
		{"hello/client ID surrogate", message(frame(tHello, helloBody("\xed\xa0\x80"))), mal, "hello frame: string is not UTF-8"},
		{"hello/truncated in stream", message(frame(tHello, str("a"), id16()[:8])), mal, "hello frame: truncated id"},
		{"hello/missing stream low", message(frame(tHello, str("a"), id16())), mal, "hello frame: bad varint"},
		{"hello/unterminated stream low", message(frame(tHello, str("a"), id16(), []byte{0x80})), mal, "hello frame: bad varint"},
		{"hello/stream low overflow", message(frame(tHello, str("a"), id16(), overflow, id16(), uv(0), uv(0), uv(0))), mal, "hello frame: bad varint"},
		{"hello/missing in-stream", message(frame(tHello, str("a"), id16(), uv(0))), mal, "hello frame: truncated id"},
		{"hello/truncated in in-stream", message(frame(tHello, str("a"), id16(), uv(0), id16()[:15])), mal, "hello frame: truncated id"},
		{"hello/missing watermark", message(frame(tHello, str("a"), id16(), uv(0), id16())), mal, "hello frame: bad varint"},
		{"hello/watermark overflow", message(frame(tHello, str("a"), id16(), uv(0), id16(), overflow, uv(0), uv(0))), mal, "hello frame: bad varint"},
		{"hello/missing max message size", message(frame(tHello, str("a"), id16(), uv(0), id16(), uv(0))), mal, "hello frame: bad varint"},
		{"hello/max message size over uint32", message(frame(tHello, str("a"), id16(), uv(0), id16(), uv(0), uv(math.MaxUint32+1), uv(0))), mal, "hello frame: value out of range"},
		{"hello/max message size overflow", message(frame(tHello, str("a"), id16(), uv(0), id16(), uv(0), overflow10, uv(0))), mal, "hello frame: bad varint"},
		{"hello/missing max in-flight", message(frame(tHello, str("a"), id16(), uv(0), id16(), uv(0), uv(0))), mal, "hello frame: bad varint"},
		{"hello/unterminated max in-flight", message(frame(tHello, str("a"), id16(), uv(0), id16(), uv(0), uv(0), []byte{0xff})), mal, "hello frame: bad varint"},
		{"hello/max in-flight over uint32", message(frame(tHello, str("a"), id16(), uv(0), id16(), uv(0), uv(0), uv(math.MaxUint64))), mal, "hello frame: value out of range"},
		// A version 1 hello (no StreamLow, no limits) under a version 2 byte:
		// the first byte of InStream is read as StreamLow, and the body runs
		// out before InWatermark.
		{"hello/v1 layout", message(frame(tHello, str("a"), id16(), id16(), uv(0))), mal, "hello frame: bad varint"},
		{"hello/trailing byte", message(frame(tHello, helloBody("a"), []byte{0})), mal, "hello frame: trailing bytes"},

		{"welcome/empty body", message(frame(tWelcome)), mal, "welcome frame: bad varint"},
		{"welcome/missing max in-flight", message(frame(tWelcome, uv(0), uv(0), uv(0), uv(0))), mal, "welcome frame: bad varint"},
		// A version 1 welcome ends after MaxInFlight.
		{"welcome/v1 layout (missing out stream)", message(frame(tWelcome, uv(0), uv(0), uv(0), uv(0), uv(0))), mal, "welcome frame: truncated id"},
		{"welcome/truncated out stream", message(frame(tWelcome, uv(0), uv(0), uv(0), uv(0), uv(0), id16()[:15])), mal, "welcome frame: truncated id"},
		{"welcome/missing out low", message(frame(tWelcome, uv(0), uv(0), uv(0), uv(0), uv(0), id16())), mal, "welcome frame: bad varint"},
		{"welcome/unterminated out low", message(frame(tWelcome, uv(0), uv(0), uv(0), uv(0), uv(0), id16(), []byte{0x80, 0x80})), mal, "welcome frame: bad varint"},
		{"welcome/out low overflow", message(frame(tWelcome, uv(0), uv(0), uv(0), uv(0), uv(0), id16(), overflow10)), mal, "welcome frame: bad varint"},
		{"welcome/watermark overflow", message(frame(tWelcome, overflow10, uv(0), uv(0), uv(0), uv(0), id16(), uv(0))), mal, "welcome frame: bad varint"},
		{"welcome/interval out of range", message(frame(tWelcome, uv(0), uv(uint64(maxWelcomeDuration/time.Millisecond)+1), uv(0), uv(0), uv(0), id16(), uv(0))), mal, "welcome frame: duration out of range"},
		{"welcome/timeout max uint64", message(frame(tWelcome, uv(0), uv(0), uv(math.MaxUint64), uv(0), uv(0), id16(), uv(0))), mal, "welcome frame: duration out of range"},
		{"welcome/max message size over uint32", message(frame(tWelcome, uv(0), uv(0), uv(0), uv(math.MaxUint32+1), uv(0), id16(), uv(0))), mal, "welcome frame: value out of range"},
		{"welcome/max in-flight over uint32", message(frame(tWelcome, uv(0), uv(0), uv(0), uv(0), uv(math.MaxUint64), id16(), uv(0))), mal, "welcome frame: value out of range"},
		{"welcome/trailing byte", message(frame(tWelcome, welcomeBody(), []byte{7})), mal, "welcome frame: trailing bytes"},

		{"data/empty body", message(frame(tData)), mal, "data frame: truncated id"},
		{"data/seq overflow", message(frame(tData, id16(), overflow, id16(), uv(0), uv(0), str(""))), mal, "data frame: bad varint"},
		{"data/truncated ID", message(frame(tData, id16(), uv(1), id16()[:3])), mal, "data frame: truncated id"},
		{"data/missing expiry", message(frame(tData, id16(), uv(1), id16())), mal, "data frame: bad varint"},
		{"data/unterminated expiry", message(frame(tData, id16(), uv(1), id16(), []byte{0x80})), mal, "data frame: bad varint"},
		{"data/expiry over int64", message(frame(tData, id16(), uv(1), id16(), uv(math.MaxInt64+1), uv(0), str("p"))), mal, "data frame: expiry out of range"},
		{"data/expiry max uint64", message(frame(tData, id16(), uv(1), id16(), uv(math.MaxUint64), uv(0), str("p"))), mal, "data frame: expiry out of range"},
		{"data/expiry overflow", message(frame(tData, id16(), uv(1), id16(), overflow, uv(0), str("p"))), mal, "data frame: bad varint"},
		{"data/expiry overflow in 10th byte", message(frame(tData, id16(), uv(1), id16(), overflow10, uv(0), str("p"))), mal, "data frame: bad varint"},
		{"data/missing header count", message(frame(tData, id16(), uv(1), id16(), uv(0))), mal, "data frame: bad varint"},
		// A version 1 data frame (no expiry) under a version 2 byte: its
		// header count (0) is read as the expiry, the payload length (1)
		// as the header count, and the payload "p" as a key length of 0x70.
		{"data/v1 layout", message(frame(tData, id16(), uv(1), id16(), uv(0), str("p"))), mal, "data frame: truncated bytes"},
		{"data/too many headers", message(frame(tData, id16(), uv(1), id16(), uv(0), uv(protocol.MaxHeaders+1), headerPairs(protocol.MaxHeaders+1), str("p"))), mal, "65 headers (limit 64)"},
		{"data/header count max uint64", message(frame(tData, id16(), uv(1), id16(), uv(0), uv(math.MaxUint64), str("p"))), mal, "18446744073709551615 headers"},
		{"data/header count overflow", message(frame(tData, id16(), uv(1), id16(), uv(0), overflow, str("p"))), mal, "data frame: bad varint"},
		{"data/fewer headers than counted", message(frame(tData, id16(), uv(1), id16(), uv(0), uv(3), headerPairs(1))), mal, "data frame: bad varint"},
		{"data/header key not UTF-8", message(frame(tData, id16(), uv(1), id16(), uv(0), uv(1), str("\xc3"), str("v"), str("p"))), mal, "data frame: string is not UTF-8"},
		{"data/header value not UTF-8", message(frame(tData, id16(), uv(1), id16(), uv(0), uv(1), str("k"), str("\x80"), str("p"))), mal, "data frame: string is not UTF-8"},
		{"data/header key length huge", message(frame(tData, id16(), uv(1), id16(), uv(0), uv(1), uv(math.MaxUint64), []byte("k"))), mal, "data frame: truncated bytes"},
		{"data/header key length over int32", message(frame(tData, id16(), uv(1), id16(), uv(0), uv(1), uv(math.MaxInt32+1))), mal, "data frame: truncated bytes"},
		{"data/missing payload", message(frame(tData, id16(), uv(1), id16(), uv(0), uv(0))), mal, "data frame: bad varint"},
		{"data/payload beyond body", message(frame(tData, id16(), uv(1), id16(), uv(0), uv(0), uv(10), []byte("abc"))), mal, "data frame: truncated bytes"},
		{"data/payload length overflow", message(frame(tData, id16(), uv(1), id16(), uv(0), uv(0), overflow)), mal, "data frame: bad varint"},
		{"data/trailing byte", message(frame(tData, id16(), uv(1), id16(), uv(0), uv(0), str("p"), []byte{0})), mal, "data frame: trailing bytes"},

		{"ack/empty body", message(frame(tAck)), mal, "ack frame: truncated id"},
		{"ack/truncated stream", message(frame(tAck, id16()[:15])), mal, "ack frame: truncated id"},
		{"ack/missing seq", message(frame(tAck, id16())), mal, "ack frame: bad varint"},
		{"ack/unterminated seq", message(frame(tAck, id16(), []byte{0x80})), mal, "ack frame: bad varint"},
		{"ack/seq overflow", message(frame(tAck, id16(), overflow)), mal, "ack frame: bad varint"},
		{"ack/seq overflow in 10th byte", message(frame(tAck, id16(), overflow10)), mal, "ack frame: bad varint"},
		{"ack/trailing byte", message(frame(tAck, id16(), uv(1), []byte{0})), mal, "ack frame: trailing bytes"},
		{"ack/valid then trailing byte", message(validAck, frame(tAck, id16(), uv(1), []byte{0})), mal, "ack frame: trailing bytes"},

		{"heartbeat/one body byte", message(frame(tHeartbeat, []byte{0})), mal, "heartbeat frame: trailing bytes"},
		{"heartbeat/ack body", message(frame(tHeartbeat, id16(), uv(1))), mal, "heartbeat frame: trailing bytes"},
		{"heartbeat/valid then body", message(validHeartbeat, frame(tHeartbeat, []byte{1})), mal, "heartbeat frame: trailing bytes"},
	}

	// Reject and Skip share one body layout, so they share their bad cases.
	for _, typ := range []byte{tReject, tSkip} {
		name := protocol.FrameType(typ).String()
		why := func(reason string) string { return name + " frame: " + reason }
		cases = append(cases, []badCase{
			{name + "/empty body", message(frame(typ)), mal, why("truncated id")},
			{name + "/truncated stream", message(frame(typ, id16()[:15])), mal, why("truncated id")},
			{name + "/missing seq", message(frame(typ, id16())), mal, why("bad varint")},
			{name + "/seq overflow", message(frame(typ, id16(), overflow, uv(1), str("r"))), mal, why("bad varint")},
			{name + "/missing code", message(frame(typ, id16(), uv(1))), mal, why("bad varint")},
			{name + "/code 65536", message(frame(typ, id16(), uv(1), uv(math.MaxUint16+1), str("r"))), mal, why("reject code out of range")},
			{name + "/code max uint32", message(frame(typ, id16(), uv(1), uv(math.MaxUint32), str("r"))), mal, why("reject code out of range")},
			{name + "/code max uint64", message(frame(typ, id16(), uv(1), uv(math.MaxUint64), str("r"))), mal, why("reject code out of range")},
			{name + "/code overflow", message(frame(typ, id16(), uv(1), overflow, str("r"))), mal, why("bad varint")},
			{name + "/reason too long", message(frame(typ, id16(), uv(1), uv(1), str(strings.Repeat("r", protocol.MaxReasonLen+1)))), mal, why("string too long")},
			{name + "/reason not UTF-8", message(frame(typ, id16(), uv(1), uv(1), str("bad \xff"))), mal, why("string is not UTF-8")},
			{name + "/reason beyond body", message(frame(typ, id16(), uv(1), uv(1), uv(5), []byte("ab"))), mal, why("truncated bytes")},
			{name + "/missing reason", message(frame(typ, id16(), uv(1), uv(1))), mal, why("bad varint")},
			{name + "/trailing byte", message(frame(typ, id16(), uv(1), uv(1), str("r"), []byte{0})), mal, why("trailing bytes")},
		}...)
	}
	return cases
}()

func TestDecodeErrors(t *testing.T) {
	names := map[string]bool{}
	for _, tc := range badCases {
		if names[tc.name] {
			t.Fatalf("duplicate case name %q", tc.name)
		}
		names[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			frames, err := protocol.DecodeAll(tc.msg)
			assertDecodeError(t, err, tc.want)
			if !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("got error %q, want one saying %q", err, tc.why)
			}
			if tc.want == protocol.ErrVersion && len(frames) != 0 {
				t.Fatalf("got %d frames from a message with a bad version", len(frames))
			}
		})
	}
}

// TestDecodeLimits checks that each limit is inclusive: the largest value
// allowed decodes, one more does not (see TestDecodeErrors).
func TestDecodeLimits(t *testing.T) {
	maxMs := uv(uint64(maxWelcomeDuration / time.Millisecond))
	tests := []struct {
		name string
		msg  []byte
	}{
		{"client ID at limit", message(frame(tHello, helloBody(strings.Repeat("a", protocol.MaxClientIDLen))))},
		{"hello fields at limit", message(frame(tHello, str(""), id16(), uv(math.MaxUint64), id16(), uv(math.MaxUint64), uv(math.MaxUint32), uv(math.MaxUint32)))},
		{"headers at limit", message(frame(tData, id16(), uv(1), id16(), uv(0), uv(protocol.MaxHeaders), headerPairs(protocol.MaxHeaders), str("p")))},
		{"expiry at limit", message(frame(tData, id16(), uv(1), id16(), uv(math.MaxInt64), uv(0), str("")))},
		{"reject reason at limit", message(frame(tReject, id16(), uv(1), uv(1), str(strings.Repeat("r", protocol.MaxReasonLen))))},
		{"reject code at limit", message(frame(tReject, id16(), uv(1), uv(math.MaxUint16), str("")))},
		{"skip reason at limit", message(frame(tSkip, id16(), uv(1), uv(1), str(strings.Repeat("r", protocol.MaxReasonLen))))},
		{"skip code at limit", message(frame(tSkip, id16(), uv(math.MaxUint64), uv(math.MaxUint16), str("")))},
		{"welcome limits at limit", message(frame(tWelcome, uv(0), uv(0), uv(0), uv(math.MaxUint32), uv(math.MaxUint32), id16(), uv(0)))},
		{"durations at limit", message(frame(tWelcome, uv(0), maxMs, maxMs, uv(0), uv(0), id16(), uv(0)))},
		{"out low max uint64", message(frame(tWelcome, uv(math.MaxUint64), uv(0), uv(0), uv(0), uv(0), id16(), uv(math.MaxUint64)))},
		{"seq max uint64", message(frame(tAck, id16(), uv(math.MaxUint64)))},
		{"empty heartbeat", message(validHeartbeat)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			frames := decodeAll(t, tc.msg)
			if len(frames) != 1 {
				t.Fatalf("got %d frames, want 1", len(frames))
			}
			if got := protocol.Encode(frames...); !bytes.Equal(got, tc.msg) {
				t.Fatalf("re-encoded % x, want % x", truncate(got), truncate(tc.msg))
			}
		})
	}
}

// TestDecodeTruncated cuts a valid multi-frame message at every offset. A
// cut that ends exactly on a frame boundary (after at least one frame) is a
// valid, shorter message and decodes to the leading frames; every other cut
// is malformed.
func TestDecodeTruncated(t *testing.T) {
	for _, tc := range roundTripCases {
		if !strings.HasPrefix(tc.name, "multi/") {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			msg := protocol.Encode(tc.frames...)
			boundary := map[int]int{} // message length -> frames it holds
			end := 1
			for i, f := range tc.frames {
				end += protocol.FrameSize(f)
				boundary[end] = i + 1
			}
			for cut := range len(msg) {
				// Copy so that a read past the cut cannot see the real bytes.
				short := append([]byte(nil), msg[:cut]...)
				frames, err := protocol.DecodeAll(short)
				if n, ok := boundary[cut]; ok {
					if err != nil {
						t.Fatalf("cut at frame boundary %d: %v", cut, err)
					}
					assertFramesEqual(t, frames, tc.frames[:n])
					continue
				}
				if err == nil {
					t.Fatalf("cut at %d of %d decoded without error", cut, len(msg))
				}
				assertDecodeError(t, err, protocol.ErrMalformed)
			}
		})
	}
}

// TestDecodeStopsAtFirstError: frames before a bad one reach fn, nothing
// after it does.
func TestDecodeStopsAtFirstError(t *testing.T) {
	first := &protocol.Ack{Stream: sid(1), Seq: 1}
	msg := cat(protocol.Encode(first), frame(tAck), validAck)
	var got []protocol.Frame
	err := protocol.Decode(msg, func(f protocol.Frame) error {
		got = append(got, f)
		return nil
	})
	assertDecodeError(t, err, protocol.ErrMalformed)
	assertFramesEqual(t, got, []protocol.Frame{first})
}

func TestDecodeCallbackError(t *testing.T) {
	errStop := errors.New("stop")
	tests := []struct {
		name    string
		stopAt  int
		wantErr error
	}{
		{"stop at first", 1, errStop},
		{"stop at third", 3, errStop},
		{"never stop", -1, nil},
	}
	msg := protocol.Encode(dataBatch(5)...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := protocol.Decode(msg, func(protocol.Frame) error {
				calls++
				if calls == tc.stopAt {
					return fmt.Errorf("handler: %w", errStop)
				}
				return nil
			})
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("Decode error = %v, want %v", err, tc.wantErr)
			}
			want := tc.stopAt
			if want < 0 {
				want = 5
			}
			if calls != want {
				t.Fatalf("fn called %d times, want %d", calls, want)
			}
		})
	}
}

// TestDecodeAliasing: payloads alias the message but cannot be grown into
// the bytes after them; strings are copies.
func TestDecodeAliasing(t *testing.T) {
	frames := []protocol.Frame{
		&protocol.Data{Stream: sid(1), Seq: 1, Headers: []protocol.Header{{Key: "k", Value: "v"}}, Payload: []byte("first")},
		&protocol.Data{Stream: sid(1), Seq: 2, Payload: []byte("second")},
	}
	msg := protocol.Encode(frames...)
	orig := append([]byte(nil), msg...)
	got := decodeAll(t, msg)
	d := got[0].(*protocol.Data)

	_ = append(d.Payload, "XXXXXXXXXXXXXXXX"...)
	if !bytes.Equal(msg, orig) {
		t.Fatalf("appending to a decoded payload overwrote the message")
	}

	i := bytes.Index(msg, []byte("first"))
	msg[i] = 'F'
	if string(d.Payload) != "First" {
		t.Errorf("payload %q does not alias the message", d.Payload)
	}
	copy(msg, bytes.Repeat([]byte{0}, len(msg)))
	if d.Headers[0] != (protocol.Header{Key: "k", Value: "v"}) {
		t.Errorf("header %+v changed with the message", d.Headers[0])
	}
}

func TestIDString(t *testing.T) {
	tests := []struct {
		name string
		id   [16]byte
	}{
		{"zero", [16]byte{}},
		{"counting", fill(0)},
		{"high bytes", fill(0xf0)},
		{"all ones", [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"v7", [16]byte(uuid.Must(uuid.NewV7()))},
		{"v4", [16]byte(uuid.New())},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := uuid.UUID(tc.id).String()
			if got := protocol.MessageID(tc.id).String(); got != want {
				t.Errorf("MessageID.String() = %q, want %q", got, want)
			}
			if got := protocol.StreamID(tc.id).String(); got != want {
				t.Errorf("StreamID.String() = %q, want %q", got, want)
			}
			if parsed, err := uuid.Parse(protocol.MessageID(tc.id).String()); err != nil || parsed != uuid.UUID(tc.id) {
				t.Errorf("uuid.Parse(MessageID.String()) = %v, %v", parsed, err)
			}
		})
	}
	if got, want := protocol.MessageID(fill(0)).String(), "00010203-0405-0607-0809-0a0b0c0d0e0f"; got != want {
		t.Errorf("MessageID.String() = %q, want %q", got, want)
	}
}

func TestStreamIDIsZero(t *testing.T) {
	tests := []struct {
		name string
		id   protocol.StreamID
		want bool
	}{
		{"zero", protocol.StreamID{}, true},
		{"last byte set", protocol.StreamID{15: 1}, false},
		{"first byte set", protocol.StreamID{0: 1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.id.IsZero(); got != tc.want {
				t.Fatalf("IsZero() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFrameTypeString(t *testing.T) {
	tests := []struct {
		typ  protocol.FrameType
		want string
	}{
		{protocol.TypeHello, "hello"},
		{protocol.TypeWelcome, "welcome"},
		{protocol.TypeData, "data"},
		{protocol.TypeAck, "ack"},
		{protocol.TypeReject, "reject"},
		{protocol.TypeSkip, "skip"},
		{protocol.TypeHeartbeat, "heartbeat"},
		{0, "unknown(0)"},
		{8, "unknown(8)"},
		{128, "unknown(128)"},
		{255, "unknown(255)"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.typ.String(); got != tc.want {
				t.Fatalf("FrameType(%d).String() = %q, want %q", uint8(tc.typ), got, tc.want)
			}
		})
	}
}

// TestFrameTypeValues pins the wire values, which never change.
func TestFrameTypeValues(t *testing.T) {
	tests := []struct {
		frame protocol.Frame
		want  protocol.FrameType
		wire  byte
	}{
		{&protocol.Hello{}, protocol.TypeHello, 1},
		{&protocol.Welcome{}, protocol.TypeWelcome, 2},
		{&protocol.Data{}, protocol.TypeData, 3},
		{&protocol.Ack{}, protocol.TypeAck, 4},
		{&protocol.Reject{}, protocol.TypeReject, 5},
		{&protocol.Skip{}, protocol.TypeSkip, 6},
		{&protocol.Heartbeat{}, protocol.TypeHeartbeat, 7},
	}
	for _, tc := range tests {
		t.Run(tc.want.String(), func(t *testing.T) {
			if tc.frame.Type() != tc.want || byte(tc.want) != tc.wire {
				t.Fatalf("Type() = %d, want %d (wire %d)", tc.frame.Type(), tc.want, tc.wire)
			}
			if b := protocol.Encode(tc.frame); b[1] != tc.wire {
				t.Fatalf("Encode wrote type byte %d, want %d", b[1], tc.wire)
			}
		})
	}
	if protocol.Version != 2 || protocol.Subprotocol != "wsreliable.v2" {
		t.Fatalf("Version %d, Subprotocol %q changed", protocol.Version, protocol.Subprotocol)
	}
}

func TestRejectCodeString(t *testing.T) {
	tests := []struct {
		code protocol.RejectCode
		want string
	}{
		{protocol.RejectHandler, "rejected"},
		{protocol.RejectExpired, "expired"},
		{protocol.RejectTooLarge, "too large"},
		{protocol.RejectAttempts, "attempts exhausted"},
		{protocol.RejectEvicted, "evicted"},
		{0, "reject code 0"},
		{6, "reject code 6"},
		{422, "reject code 422"},
		{1000, "reject code 1000"},
		{math.MaxUint16, "reject code 65535"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.code.String(); got != tc.want {
				t.Fatalf("RejectCode(%d).String() = %q, want %q", uint16(tc.code), got, tc.want)
			}
		})
	}
}

// TestRejectCodeValues pins the wire values of the reject codes.
func TestRejectCodeValues(t *testing.T) {
	tests := []struct {
		code protocol.RejectCode
		wire uint16
	}{
		{protocol.RejectHandler, 1},
		{protocol.RejectExpired, 2},
		{protocol.RejectTooLarge, 3},
		{protocol.RejectAttempts, 4},
		{protocol.RejectEvicted, 5},
	}
	for _, tc := range tests {
		t.Run(tc.code.String(), func(t *testing.T) {
			if uint16(tc.code) != tc.wire {
				t.Fatalf("%s = %d, want %d", tc.code, uint16(tc.code), tc.wire)
			}
		})
	}
}

func TestCloseCodeString(t *testing.T) {
	tests := []struct {
		code protocol.CloseCode
		want string
	}{
		{protocol.CloseNormal, "normal"},
		{protocol.CloseGoingAway, "going away"},
		{protocol.CloseProtocolError, "protocol error"},
		{protocol.ClosePolicy, "policy violation"},
		{protocol.CloseTooBig, "message too big"},
		{protocol.CloseInternal, "internal error"},
		{protocol.CloseTryAgainLater, "try again later"},
		{protocol.CloseSuperseded, "superseded"},
		{protocol.CloseUnsupported, "unsupported protocol"},
		{protocol.CloseHelloTimeout, "hello timeout"},
		{protocol.CloseIdentity, "identity mismatch"},
		{protocol.CloseSequenceGap, "sequence gap"},
		{0, "close code 0"},
		{1005, "close code 1005"},
		{4999, "close code 4999"},
		{65535, "close code 65535"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.code.String(); got != tc.want {
				t.Fatalf("CloseCode(%d).String() = %q, want %q", uint16(tc.code), got, tc.want)
			}
		})
	}
}
