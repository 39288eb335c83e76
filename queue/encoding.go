package queue

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/wsreliable/wsreliable/protocol"
)

// entryVersion is the first byte of every stored outbox value. A value with
// another first byte was written by a newer (or broken) program.
//
// Layout of version 1:
//
//	version   1 byte
//	id        16 bytes
//	nheaders  uvarint
//	headers   nheaders × (uvarint len, key bytes, uvarint len, value bytes)
//	payload   the rest of the value
const entryVersion byte = 1

// entrySize is the size an entry counts against the byte limits and the
// byte budgets of Read and of a commit batch: payload plus header keys and
// values. Framing overhead is not counted, so the limits mean what users
// see in their messages.
func entrySize(e *Entry) int64 {
	n := int64(len(e.Payload))
	for _, h := range e.Headers {
		n += int64(len(h.Key) + len(h.Value))
	}
	return n
}

// encodeEntry appends the stored form of e to dst.
func encodeEntry(dst []byte, e *Entry) []byte {
	dst = append(dst, entryVersion)
	dst = append(dst, e.ID[:]...)
	dst = binary.AppendUvarint(dst, uint64(len(e.Headers)))
	for _, h := range e.Headers {
		dst = binary.AppendUvarint(dst, uint64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = binary.AppendUvarint(dst, uint64(len(h.Value)))
		dst = append(dst, h.Value...)
	}
	return append(dst, e.Payload...)
}

// encodedLen is len(encodeEntry(nil, e)).
func encodedLen(e *Entry) int {
	n := 1 + len(e.ID) + uvarintLen(uint64(len(e.Headers))) + len(e.Payload)
	for _, h := range e.Headers {
		n += uvarintLen(uint64(len(h.Key))) + len(h.Key)
		n += uvarintLen(uint64(len(h.Value))) + len(h.Value)
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

var errShortValue = errors.New("truncated entry")

// decodeEntry decodes a stored value into e, copying everything out of v
// (which may point into bbolt's read-only mmap). It never panics; a
// malformed value yields an error wrapping ErrCorrupt.
func decodeEntry(v []byte, e *Entry) error { return decodeEntryInto(v, e, nil) }

// arenaBlock is the largest block decodeEntryInto copies payloads into; a
// payload over a quarter of it gets an allocation of its own.
const arenaBlock = 64 << 10

// decodeEntryInto is decodeEntry with the payload copied into *arena (if
// arena is not nil), a block shared by the entries of one read that it
// replaces with a new block when full: one allocation for many payloads.
// Each payload's capacity ends at its length, so appending to one never
// overwrites the next.
func decodeEntryInto(v []byte, e *Entry, arena *[]byte) error {
	d := decoder{b: v}
	version := d.byte()
	if d.err == nil && version != entryVersion {
		return fmt.Errorf("%w: entry encoding version %d, want %d", ErrCorrupt, version, entryVersion)
	}
	copy(e.ID[:], d.bytes(len(protocol.MessageID{})))
	n := d.uvarint()
	// Each header takes at least two bytes, so a count beyond half the
	// remaining bytes is corrupt; checking first avoids a huge allocation.
	if d.err == nil && n > uint64(len(d.b))/2 {
		return fmt.Errorf("%w: entry claims %d headers in %d bytes", ErrCorrupt, n, len(d.b))
	}
	e.Headers = nil
	if n > 0 {
		e.Headers = make([]protocol.Header, n)
		for i := range e.Headers {
			e.Headers[i].Key = string(d.bytes(d.length()))
			e.Headers[i].Value = string(d.bytes(d.length()))
		}
	}
	if d.err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, d.err)
	}
	p := d.b
	if arena == nil || len(p) > arenaBlock/4 {
		e.Payload = append([]byte(nil), p...)
		return nil
	}
	if cap(*arena)-len(*arena) < len(p) {
		// Blocks grow from small, so a read of one entry stays cheap.
		*arena = make([]byte, 0, min(arenaBlock, max(2*cap(*arena), 8*len(p), 1024)))
	}
	start := len(*arena)
	*arena = append(*arena, p...)
	e.Payload = (*arena)[start:len(*arena):len(*arena)]
	return nil
}

// storedSize returns entrySize of the entry encoded in v without copying
// it, for acks that delete entries they never decode.
func storedSize(v []byte) (int64, error) {
	d := decoder{b: v}
	version := d.byte()
	if d.err == nil && version != entryVersion {
		return 0, fmt.Errorf("%w: entry encoding version %d, want %d", ErrCorrupt, version, entryVersion)
	}
	d.bytes(len(protocol.MessageID{}))
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b))/2 {
		return 0, fmt.Errorf("%w: entry claims %d headers in %d bytes", ErrCorrupt, n, len(d.b))
	}
	var size int64
	for i := uint64(0); i < n && d.err == nil; i++ {
		size += int64(len(d.bytes(d.length())))
		size += int64(len(d.bytes(d.length())))
	}
	if d.err != nil {
		return 0, fmt.Errorf("%w: %w", ErrCorrupt, d.err)
	}
	return size + int64(len(d.b)), nil
}

// decoder reads from b, remembering the first error; after an error every
// read returns zero values, so callers check err once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.err = errShortValue
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = errShortValue
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errors.New("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// length reads a uvarint that must fit in the remaining bytes.
func (d *decoder) length() int {
	v := d.uvarint()
	if d.err == nil && v > uint64(len(d.b)) {
		d.err = errShortValue
		return 0
	}
	return int(v)
}

// seqKey is the outbox key of seq: 8 bytes big-endian, so bbolt's byte
// order is sequence order.
func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// watermarkKey is the watermarks bucket key of (peer, stream): the peer's
// bytes followed by the 16 stream bytes. The fixed-length suffix keeps the
// key unambiguous.
func watermarkKey(peer string, stream protocol.StreamID) []byte {
	k := make([]byte, 0, len(peer)+len(stream))
	k = append(k, peer...)
	return append(k, stream[:]...)
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
