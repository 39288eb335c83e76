package protocol

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
	"unicode/utf8"
)

// Limits that bound what a decoder accepts, independent of the message size.
const (
	// MaxClientIDLen is the longest client ID, in bytes.
	MaxClientIDLen = 256
	// MaxHeaders is the most headers one Data frame may carry.
	MaxHeaders = 64
	// MaxReasonLen is the longest Reject or Skip reason, in bytes.
	MaxReasonLen = 1024
)

// AppendMessageStart appends the codec version byte that starts every
// WebSocket message. Follow it with one or more [AppendFrame] calls.
func AppendMessageStart(dst []byte) []byte { return append(dst, Version) }

// AppendFrame appends f's encoding (type, body length, body) to dst.
func AppendFrame(dst []byte, f Frame) []byte {
	dst = append(dst, byte(f.Type()))
	dst = binary.AppendUvarint(dst, uint64(f.bodySize()))
	return f.appendBody(dst)
}

// Encode returns one WebSocket message holding frames.
func Encode(frames ...Frame) []byte {
	n := 1
	for _, f := range frames {
		n += FrameSize(f)
	}
	b := make([]byte, 0, n)
	b = AppendMessageStart(b)
	for _, f := range frames {
		b = AppendFrame(b, f)
	}
	return b
}

// FrameSize returns the number of bytes [AppendFrame] appends for f.
func FrameSize(f Frame) int {
	s := f.bodySize()
	return 1 + uvarintLen(uint64(s)) + s
}

// Decode calls fn for each frame in msg, in order, and stops at the first
// error from the codec or from fn. Frames passed to fn, and byte slices in
// them, alias msg. Decode never panics; it returns an error wrapping
// [ErrVersion], [ErrUnknownFrame] or [ErrMalformed] for bad input. An empty
// message (just the version byte) is malformed.
func Decode(msg []byte, fn func(Frame) error) error {
	if len(msg) == 0 {
		return fmt.Errorf("%w: empty message", ErrMalformed)
	}
	if msg[0] != Version {
		return fmt.Errorf("%w: %d", ErrVersion, msg[0])
	}
	rest := msg[1:]
	if len(rest) == 0 {
		return fmt.Errorf("%w: message has no frames", ErrMalformed)
	}
	for len(rest) > 0 {
		t := FrameType(rest[0])
		n, k := binary.Uvarint(rest[1:])
		if k <= 0 || n > uint64(len(rest)-1-k) {
			return fmt.Errorf("%w: %s frame length", ErrMalformed, t)
		}
		body := rest[1+k : 1+k+int(n)]
		rest = rest[1+k+int(n):]
		f, err := decodeFrame(t, body)
		if err != nil {
			return err
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// DecodeAll decodes every frame in msg. See [Decode].
func DecodeAll(msg []byte) ([]Frame, error) {
	var frames []Frame
	err := Decode(msg, func(f Frame) error {
		frames = append(frames, f)
		return nil
	})
	return frames, err
}

func decodeFrame(t FrameType, body []byte) (Frame, error) {
	r := reader{b: body}
	var f Frame
	switch t {
	case TypeHello:
		h := &Hello{}
		h.ClientID = r.string(MaxClientIDLen)
		h.Stream = r.id()
		h.StreamLow = r.uvarint()
		h.InStream = r.id()
		h.InWatermark = r.uvarint()
		h.MaxMessageSize = r.uint32()
		h.MaxInFlight = r.uint32()
		f = h
	case TypeWelcome:
		w := &Welcome{}
		w.Watermark = r.uvarint()
		w.HeartbeatInterval = r.millis()
		w.HeartbeatTimeout = r.millis()
		w.MaxMessageSize = r.uint32()
		w.MaxInFlight = r.uint32()
		w.OutStream = r.id()
		w.OutLow = r.uvarint()
		f = w
	case TypeData:
		d := &Data{}
		d.Stream = r.id()
		d.Seq = r.uvarint()
		d.ID = r.id()
		d.Expires = r.expiry()
		nh := r.uvarint()
		if nh > MaxHeaders {
			return nil, fmt.Errorf("%w: %d headers (limit %d)", ErrMalformed, nh, MaxHeaders)
		}
		if nh > 0 && r.err == "" {
			d.Headers = make([]Header, nh)
			for i := range d.Headers {
				d.Headers[i].Key = r.string(math.MaxInt32)
				d.Headers[i].Value = r.string(math.MaxInt32)
			}
		}
		d.Payload = r.bytes()
		f = d
	case TypeAck:
		a := &Ack{}
		a.Stream = r.id()
		a.Seq = r.uvarint()
		f = a
	case TypeReject:
		j := &Reject{}
		j.Stream = r.id()
		j.Seq = r.uvarint()
		j.Code = r.code()
		j.Reason = r.string(MaxReasonLen)
		f = j
	case TypeSkip:
		k := &Skip{}
		k.Stream = r.id()
		k.Seq = r.uvarint()
		k.Code = r.code()
		k.Reason = r.string(MaxReasonLen)
		f = k
	case TypeHeartbeat:
		f = &Heartbeat{}
	default:
		return nil, fmt.Errorf("%w: %d", ErrUnknownFrame, uint8(t))
	}
	if r.err == "" && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	if r.err != "" {
		return nil, fmt.Errorf("%w: %s frame: %s", ErrMalformed, t, r.err)
	}
	return f, nil
}

// reader consumes a frame body; the first failure sticks and later reads
// return zero values, so decoders need a single check at the end.
type reader struct {
	b   []byte
	err string
}

func (r *reader) fail(msg string) {
	if r.err == "" {
		r.err = msg
	}
	r.b = nil
}

func (r *reader) uvarint() uint64 {
	if r.err != "" {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bounded reads a uvarint that must not exceed limit; what names the
// value in the error.
func (r *reader) bounded(limit uint64, what string) uint64 {
	v := r.uvarint()
	if v > limit {
		r.fail(what + " out of range")
		return 0
	}
	return v
}

func (r *reader) uint32() uint32 { return uint32(r.bounded(math.MaxUint32, "value")) }

func (r *reader) code() RejectCode { return RejectCode(r.bounded(math.MaxUint16, "reject code")) }

// expiry reads a Unix-millisecond time, 0 meaning none.
func (r *reader) expiry() int64 { return int64(r.bounded(math.MaxInt64, "expiry")) }

func (r *reader) millis() time.Duration {
	return time.Duration(r.bounded(math.MaxInt64/uint64(time.Millisecond), "duration")) * time.Millisecond
}

func (r *reader) id() [16]byte {
	var id [16]byte
	if r.err != "" {
		return id
	}
	if len(r.b) < 16 {
		r.fail("truncated id")
		return id
	}
	copy(id[:], r.b)
	r.b = r.b[16:]
	return id
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != "" {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail("truncated bytes")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) string(limit int) string {
	b := r.bytes()
	if r.err != "" {
		return ""
	}
	if len(b) > limit {
		r.fail("string too long")
		return ""
	}
	if !utf8.Valid(b) {
		r.fail("string is not UTF-8")
		return ""
	}
	return string(b)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func bytesLen(n int) int { return uvarintLen(uint64(n)) + n }

func appendBytes(b []byte, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func millis(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64(d / time.Millisecond)
}

func (h *Hello) bodySize() int {
	return bytesLen(len(h.ClientID)) + 32 + uvarintLen(h.StreamLow) + uvarintLen(h.InWatermark) +
		uvarintLen(uint64(h.MaxMessageSize)) + uvarintLen(uint64(h.MaxInFlight))
}

func (h *Hello) appendBody(b []byte) []byte {
	b = appendString(b, h.ClientID)
	b = append(b, h.Stream[:]...)
	b = binary.AppendUvarint(b, h.StreamLow)
	b = append(b, h.InStream[:]...)
	b = binary.AppendUvarint(b, h.InWatermark)
	b = binary.AppendUvarint(b, uint64(h.MaxMessageSize))
	return binary.AppendUvarint(b, uint64(h.MaxInFlight))
}

func (w *Welcome) bodySize() int {
	return uvarintLen(w.Watermark) + uvarintLen(millis(w.HeartbeatInterval)) +
		uvarintLen(millis(w.HeartbeatTimeout)) + uvarintLen(uint64(w.MaxMessageSize)) +
		uvarintLen(uint64(w.MaxInFlight)) + 16 + uvarintLen(w.OutLow)
}

func (w *Welcome) appendBody(b []byte) []byte {
	b = binary.AppendUvarint(b, w.Watermark)
	b = binary.AppendUvarint(b, millis(w.HeartbeatInterval))
	b = binary.AppendUvarint(b, millis(w.HeartbeatTimeout))
	b = binary.AppendUvarint(b, uint64(w.MaxMessageSize))
	b = binary.AppendUvarint(b, uint64(w.MaxInFlight))
	b = append(b, w.OutStream[:]...)
	return binary.AppendUvarint(b, w.OutLow)
}

func (d *Data) bodySize() int {
	n := 16 + uvarintLen(d.Seq) + 16 + uvarintLen(expiry(d.Expires)) + uvarintLen(uint64(len(d.Headers)))
	for _, h := range d.Headers {
		n += bytesLen(len(h.Key)) + bytesLen(len(h.Value))
	}
	return n + bytesLen(len(d.Payload))
}

func (d *Data) appendBody(b []byte) []byte {
	b = append(b, d.Stream[:]...)
	b = binary.AppendUvarint(b, d.Seq)
	b = append(b, d.ID[:]...)
	b = binary.AppendUvarint(b, expiry(d.Expires))
	b = binary.AppendUvarint(b, uint64(len(d.Headers)))
	for _, h := range d.Headers {
		b = appendString(b, h.Key)
		b = appendString(b, h.Value)
	}
	return appendBytes(b, d.Payload)
}

func (a *Ack) bodySize() int { return 16 + uvarintLen(a.Seq) }

func (a *Ack) appendBody(b []byte) []byte {
	b = append(b, a.Stream[:]...)
	return binary.AppendUvarint(b, a.Seq)
}

func (j *Reject) bodySize() int { return settleSize(j.Seq, j.Code, j.Reason) }

func (j *Reject) appendBody(b []byte) []byte {
	return appendSettle(b, j.Stream, j.Seq, j.Code, j.Reason)
}

func (k *Skip) bodySize() int { return settleSize(k.Seq, k.Code, k.Reason) }

func (k *Skip) appendBody(b []byte) []byte {
	return appendSettle(b, k.Stream, k.Seq, k.Code, k.Reason)
}

// settleSize and appendSettle encode the body shared by Reject and Skip.
func settleSize(seq uint64, code RejectCode, reason string) int {
	return 16 + uvarintLen(seq) + uvarintLen(uint64(code)) + bytesLen(len(reason))
}

func appendSettle(b []byte, stream StreamID, seq uint64, code RejectCode, reason string) []byte {
	b = append(b, stream[:]...)
	b = binary.AppendUvarint(b, seq)
	b = binary.AppendUvarint(b, uint64(code))
	return appendString(b, reason)
}

func (*Heartbeat) bodySize() int { return 0 }

func (*Heartbeat) appendBody(b []byte) []byte { return b }

// expiry encodes a Unix-millisecond expiry; negative times mean none.
func expiry(ms int64) uint64 {
	if ms < 0 {
		return 0
	}
	return uint64(ms)
}
