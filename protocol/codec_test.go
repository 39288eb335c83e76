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

// maxMillis is the longest duration a Welcome frame can carry.
const maxMillis = time.Duration(math.MaxInt64/int64(time.Millisecond)) * time.Millisecond

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
			ClientID: "client-1", Stream: sid(1), InStream: sid(0x80), InWatermark: 42,
		}}},
		{"hello/max client ID", []protocol.Frame{&protocol.Hello{
			ClientID: strings.Repeat("é", protocol.MaxClientIDLen/2), Stream: sid(1), InWatermark: math.MaxUint64,
		}}},
		{"welcome/zero", []protocol.Frame{&protocol.Welcome{}}},
		{"welcome/full", []protocol.Frame{&protocol.Welcome{
			Watermark: 7, HeartbeatInterval: 15 * time.Second, HeartbeatTimeout: 45 * time.Second,
			MaxMessageSize: 1 << 20, MaxInFlight: 1024,
		}}},
		{"welcome/max", []protocol.Frame{&protocol.Welcome{
			Watermark: math.MaxUint64, HeartbeatInterval: maxMillis, HeartbeatTimeout: maxMillis,
			MaxMessageSize: math.MaxUint32, MaxInFlight: math.MaxUint32,
		}}},
		{"data/no headers", []protocol.Frame{&protocol.Data{
			Stream: sid(1), Seq: 1, ID: mid(0x10), Payload: []byte("hello"),
		}}},
		{"data/headers", []protocol.Frame{&protocol.Data{
			Stream: sid(1), Seq: 2, ID: mid(0x10),
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
		{"ack/zero", []protocol.Frame{&protocol.Ack{}}},
		{"ack/max seq", []protocol.Frame{&protocol.Ack{Stream: sid(9), Seq: math.MaxUint64}}},
		{"reject/empty reason", []protocol.Frame{&protocol.Reject{Stream: sid(1), Seq: 9, Code: 0}}},
		{"reject/full", []protocol.Frame{&protocol.Reject{Stream: sid(1), Seq: 10, Code: 422, Reason: "schema mismatch"}}},
		{"reject/max", []protocol.Frame{&protocol.Reject{
			Stream: sid(1), Seq: math.MaxUint64, Code: math.MaxUint16, Reason: strings.Repeat("r", protocol.MaxReasonLen),
		}}},
		{"multi/every type", []protocol.Frame{
			&protocol.Hello{ClientID: "c", Stream: sid(1)},
			&protocol.Welcome{Watermark: 3, HeartbeatInterval: time.Second},
			&protocol.Data{Stream: sid(1), Seq: 4, ID: mid(2), Payload: []byte("a")},
			&protocol.Data{Stream: sid(1), Seq: 5, ID: mid(3), Headers: []protocol.Header{{Key: "k", Value: "v"}}},
			&protocol.Ack{Stream: sid(1), Seq: 5},
			&protocol.Reject{Stream: sid(1), Seq: 4, Code: 1, Reason: "no"},
		}},
		{"multi/batch", dataBatch(100)},
	}
	for _, seq := range []uint64{0, 1, 127, 128, 16383, 16384, 1<<32 - 1, 1 << 32, 1 << 63, math.MaxUint64 - 1, math.MaxUint64} {
		cases = append(cases, roundTripCase{
			name:   fmt.Sprintf("data/seq %d", seq),
			frames: []protocol.Frame{&protocol.Data{Stream: sid(1), Seq: seq, ID: mid(2), Payload: []byte("p")}},
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
func TestEncodeGolden(t *testing.T) {
	ids := "000102030405060708090a0b0c0d0e0f"
	tests := []struct {
		name  string
		frame protocol.Frame
		want  string // hex, without the version byte
	}{
		{"hello", &protocol.Hello{ClientID: "ab", Stream: sid(0), InStream: sid(0), InWatermark: 300},
			"01" + "25" + "026162" + ids + ids + "ac02"},
		{"welcome", &protocol.Welcome{Watermark: 1, HeartbeatInterval: 1500 * time.Millisecond, HeartbeatTimeout: 3 * time.Second, MaxMessageSize: 128, MaxInFlight: 2},
			"02" + "08" + "01" + "dc0b" + "b817" + "8001" + "02"},
		{"data", &protocol.Data{Stream: sid(0), Seq: 5, ID: mid(0), Headers: []protocol.Header{{Key: "k", Value: "v"}}, Payload: []byte("hi")},
			"03" + "29" + ids + "05" + ids + "01" + "016b" + "0176" + "026869"},
		{"ack", &protocol.Ack{Stream: sid(0), Seq: 300}, "04" + "12" + ids + "ac02"},
		{"reject", &protocol.Reject{Stream: sid(0), Seq: 1, Code: 1000, Reason: "x"},
			"05" + "15" + ids + "01" + "e807" + "0178"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := fmt.Sprintf("%x", protocol.Encode(tc.frame))
			if want := "01" + tc.want; got != want {
				t.Fatalf("Encode:\n got %s\nwant %s", got, want)
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
		{"max", math.MaxInt64, maxMillis},
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
	tHello   = byte(protocol.TypeHello)
	tWelcome = byte(protocol.TypeWelcome)
	tData    = byte(protocol.TypeData)
	tAck     = byte(protocol.TypeAck)
	tReject  = byte(protocol.TypeReject)

	// overflow is an 11-byte varint; binary.Uvarint reports overflow.
	overflow = append(bytes.Repeat([]byte{0xff}, 10), 0x01)
	// overflow10 is a 10-byte varint whose last byte exceeds 64 bits.
	overflow10 = append(bytes.Repeat([]byte{0xff}, 9), 0x02)

	validAck = frame(tAck, id16(), uv(1))
)

type badCase struct {
	name string
	msg  []byte
	want error
}

func headerPairs(n int) []byte {
	var b []byte
	for i := range n {
		b = append(b, str(fmt.Sprint("k", i))...)
		b = append(b, str("v")...)
	}
	return b
}

var badCases = []badCase{
	{"empty/nil", nil, protocol.ErrMalformed},
	{"empty/non-nil", []byte{}, protocol.ErrMalformed},
	{"version byte only", []byte{protocol.Version}, protocol.ErrMalformed},

	{"version/0", cat([]byte{0}, validAck), protocol.ErrVersion},
	{"version/2", cat([]byte{2}, validAck), protocol.ErrVersion},
	{"version/255 alone", []byte{0xff}, protocol.ErrVersion},

	{"unknown frame/0", message(frame(0)), protocol.ErrUnknownFrame},
	{"unknown frame/6 with body", message(frame(6, []byte("abc"))), protocol.ErrUnknownFrame},
	{"unknown frame/255 after valid", message(validAck, frame(0xff)), protocol.ErrUnknownFrame},

	{"frame length/missing", []byte{1, tAck}, protocol.ErrMalformed},
	{"frame length/unterminated", []byte{1, tAck, 0x80}, protocol.ErrMalformed},
	{"frame length/beyond buffer", cat([]byte{1, tAck, 18}, id16()), protocol.ErrMalformed},
	{"frame length/beyond buffer by one", cat([]byte{1, tAck, 18}, id16(), []byte{1}), protocol.ErrMalformed},
	{"frame length/max uint64", cat([]byte{1, tAck}, uv(math.MaxUint64), id16()), protocol.ErrMalformed},
	{"frame length/max int64", cat([]byte{1, tAck}, uv(math.MaxInt64), id16()), protocol.ErrMalformed},
	{"frame length/overflow", cat([]byte{1, tAck}, overflow, id16()), protocol.ErrMalformed},
	{"frame length/overflow in 10th byte", cat([]byte{1, tAck}, overflow10, id16()), protocol.ErrMalformed},
	{"frame length/unknown type beyond buffer", []byte{1, 9, 5}, protocol.ErrMalformed},

	{"hello/empty body", message(frame(tHello)), protocol.ErrMalformed},
	{"hello/client ID too long", message(frame(tHello, str(strings.Repeat("a", protocol.MaxClientIDLen+1)), id16(), id16(), uv(0))), protocol.ErrMalformed},
	{"hello/client ID length beyond body", message(frame(tHello, uv(200), []byte("abc"))), protocol.ErrMalformed},
	{"hello/client ID not UTF-8", message(frame(tHello, str("a\xffb"), id16(), id16(), uv(0))), protocol.ErrMalformed},
	{"hello/client ID surrogate", message(frame(tHello, str("\xed\xa0\x80"), id16(), id16(), uv(0))), protocol.ErrMalformed},
	{"hello/truncated in stream", message(frame(tHello, str("a"), id16()[:8])), protocol.ErrMalformed},
	{"hello/truncated in in-stream", message(frame(tHello, str("a"), id16(), id16()[:15])), protocol.ErrMalformed},
	{"hello/missing watermark", message(frame(tHello, str("a"), id16(), id16())), protocol.ErrMalformed},
	{"hello/watermark overflow", message(frame(tHello, str("a"), id16(), id16(), overflow)), protocol.ErrMalformed},
	{"hello/trailing byte", message(frame(tHello, str("a"), id16(), id16(), uv(0), []byte{0})), protocol.ErrMalformed},

	{"welcome/empty body", message(frame(tWelcome)), protocol.ErrMalformed},
	{"welcome/missing max in-flight", message(frame(tWelcome, uv(0), uv(0), uv(0), uv(0))), protocol.ErrMalformed},
	{"welcome/watermark overflow", message(frame(tWelcome, overflow10, uv(0), uv(0), uv(0), uv(0))), protocol.ErrMalformed},
	{"welcome/interval out of range", message(frame(tWelcome, uv(0), uv(uint64(maxMillis/time.Millisecond)+1), uv(0), uv(0), uv(0))), protocol.ErrMalformed},
	{"welcome/timeout max uint64", message(frame(tWelcome, uv(0), uv(0), uv(math.MaxUint64), uv(0), uv(0))), protocol.ErrMalformed},
	{"welcome/max message size over uint32", message(frame(tWelcome, uv(0), uv(0), uv(0), uv(math.MaxUint32+1), uv(0))), protocol.ErrMalformed},
	{"welcome/max in-flight over uint32", message(frame(tWelcome, uv(0), uv(0), uv(0), uv(0), uv(math.MaxUint64))), protocol.ErrMalformed},
	{"welcome/trailing byte", message(frame(tWelcome, uv(0), uv(0), uv(0), uv(0), uv(0), []byte{7})), protocol.ErrMalformed},

	{"data/empty body", message(frame(tData)), protocol.ErrMalformed},
	{"data/seq overflow", message(frame(tData, id16(), overflow, id16(), uv(0), str(""))), protocol.ErrMalformed},
	{"data/truncated ID", message(frame(tData, id16(), uv(1), id16()[:3])), protocol.ErrMalformed},
	{"data/too many headers", message(frame(tData, id16(), uv(1), id16(), uv(protocol.MaxHeaders+1), headerPairs(protocol.MaxHeaders+1), str("p"))), protocol.ErrMalformed},
	{"data/header count max uint64", message(frame(tData, id16(), uv(1), id16(), uv(math.MaxUint64), str("p"))), protocol.ErrMalformed},
	{"data/header count overflow", message(frame(tData, id16(), uv(1), id16(), overflow, str("p"))), protocol.ErrMalformed},
	{"data/fewer headers than counted", message(frame(tData, id16(), uv(1), id16(), uv(3), headerPairs(1))), protocol.ErrMalformed},
	{"data/header key not UTF-8", message(frame(tData, id16(), uv(1), id16(), uv(1), str("\xc3"), str("v"), str("p"))), protocol.ErrMalformed},
	{"data/header value not UTF-8", message(frame(tData, id16(), uv(1), id16(), uv(1), str("k"), str("\x80"), str("p"))), protocol.ErrMalformed},
	{"data/header key length huge", message(frame(tData, id16(), uv(1), id16(), uv(1), uv(math.MaxUint64), []byte("k"))), protocol.ErrMalformed},
	{"data/header key length over int32", message(frame(tData, id16(), uv(1), id16(), uv(1), uv(math.MaxInt32+1))), protocol.ErrMalformed},
	{"data/missing payload", message(frame(tData, id16(), uv(1), id16(), uv(0))), protocol.ErrMalformed},
	{"data/payload beyond body", message(frame(tData, id16(), uv(1), id16(), uv(0), uv(10), []byte("abc"))), protocol.ErrMalformed},
	{"data/payload length overflow", message(frame(tData, id16(), uv(1), id16(), uv(0), overflow)), protocol.ErrMalformed},
	{"data/trailing byte", message(frame(tData, id16(), uv(1), id16(), uv(0), str("p"), []byte{0})), protocol.ErrMalformed},

	{"ack/empty body", message(frame(tAck)), protocol.ErrMalformed},
	{"ack/truncated stream", message(frame(tAck, id16()[:15])), protocol.ErrMalformed},
	{"ack/missing seq", message(frame(tAck, id16())), protocol.ErrMalformed},
	{"ack/unterminated seq", message(frame(tAck, id16(), []byte{0x80})), protocol.ErrMalformed},
	{"ack/seq overflow", message(frame(tAck, id16(), overflow)), protocol.ErrMalformed},
	{"ack/seq overflow in 10th byte", message(frame(tAck, id16(), overflow10)), protocol.ErrMalformed},
	{"ack/trailing byte", message(frame(tAck, id16(), uv(1), []byte{0})), protocol.ErrMalformed},
	{"ack/valid then trailing byte", message(validAck, frame(tAck, id16(), uv(1), []byte{0})), protocol.ErrMalformed},

	{"reject/empty body", message(frame(tReject)), protocol.ErrMalformed},
	{"reject/code 65536", message(frame(tReject, id16(), uv(1), uv(math.MaxUint16+1), str("r"))), protocol.ErrMalformed},
	{"reject/code max uint64", message(frame(tReject, id16(), uv(1), uv(math.MaxUint64), str("r"))), protocol.ErrMalformed},
	{"reject/code overflow", message(frame(tReject, id16(), uv(1), overflow, str("r"))), protocol.ErrMalformed},
	{"reject/reason too long", message(frame(tReject, id16(), uv(1), uv(1), str(strings.Repeat("r", protocol.MaxReasonLen+1)))), protocol.ErrMalformed},
	{"reject/reason not UTF-8", message(frame(tReject, id16(), uv(1), uv(1), str("bad \xff"))), protocol.ErrMalformed},
	{"reject/missing reason", message(frame(tReject, id16(), uv(1), uv(1))), protocol.ErrMalformed},
	{"reject/trailing byte", message(frame(tReject, id16(), uv(1), uv(1), str("r"), []byte{0})), protocol.ErrMalformed},
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range badCases {
		t.Run(tc.name, func(t *testing.T) {
			frames, err := protocol.DecodeAll(tc.msg)
			assertDecodeError(t, err, tc.want)
			if tc.want == protocol.ErrVersion && len(frames) != 0 {
				t.Fatalf("got %d frames from a message with a bad version", len(frames))
			}
		})
	}
}

// TestDecodeLimits checks that each limit is inclusive: the largest value
// allowed decodes, one more does not (see TestDecodeErrors).
func TestDecodeLimits(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
	}{
		{"client ID at limit", message(frame(tHello, str(strings.Repeat("a", protocol.MaxClientIDLen)), id16(), id16(), uv(0)))},
		{"headers at limit", message(frame(tData, id16(), uv(1), id16(), uv(protocol.MaxHeaders), headerPairs(protocol.MaxHeaders), str("p")))},
		{"reason at limit", message(frame(tReject, id16(), uv(1), uv(1), str(strings.Repeat("r", protocol.MaxReasonLen))))},
		{"code at limit", message(frame(tReject, id16(), uv(1), uv(math.MaxUint16), str("")))},
		{"max message size at limit", message(frame(tWelcome, uv(0), uv(0), uv(0), uv(math.MaxUint32), uv(math.MaxUint32)))},
		{"duration at limit", message(frame(tWelcome, uv(0), uv(uint64(maxMillis/time.Millisecond)), uv(0), uv(0), uv(0)))},
		{"seq max uint64", message(frame(tAck, id16(), uv(math.MaxUint64)))},
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
		{0, "unknown(0)"},
		{6, "unknown(6)"},
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
	}
	for _, tc := range tests {
		t.Run(tc.want.String(), func(t *testing.T) {
			if tc.frame.Type() != tc.want || byte(tc.want) != tc.wire {
				t.Fatalf("Type() = %d, want %d (wire %d)", tc.frame.Type(), tc.want, tc.wire)
			}
		})
	}
	if protocol.Version != 1 || protocol.Subprotocol != "wsreliable.v1" {
		t.Fatalf("Version %d, Subprotocol %q changed", protocol.Version, protocol.Subprotocol)
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
