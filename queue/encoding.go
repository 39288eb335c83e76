package queue

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/wsreliable/wsreliable/protocol"
)

// Entry encodings: the first byte of every stored entry value. A value
// with another first byte was written by a newer (or broken) program.
//
// Layout of version 1, written for entries with neither an expiry nor a
// queue time (every [Outbox.Append] without Expires), so that files of the
// client role stay readable by programs that know only version 1:
//
//	version   1 byte
//	id        16 bytes
//	nheaders  uvarint
//	headers   nheaders × (uvarint len, key bytes, uvarint len, value bytes)
//	payload   the rest of the value
//
// Version 2 adds two signed varints after the ID:
//
//	version   1 byte
//	id        16 bytes
//	expires   varint, Entry.Expires (Unix ms, 0: never)
//	queued    varint, when the store queued the entry (Unix ms, 0: unknown)
//	nheaders, headers, payload as in version 1
const (
	entryV1 byte = 1
	entryV2 byte = 2
)

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

// encodeEntry appends the stored form of e, queued at queued (Unix ms, 0:
// not recorded), to dst: version 1 when there is neither an expiry nor a
// queue time to keep, version 2 otherwise.
func encodeEntry(dst []byte, e *Entry, queued int64) []byte {
	if e.Expires == 0 && queued == 0 {
		dst = append(dst, entryV1)
		dst = append(dst, e.ID[:]...)
	} else {
		dst = append(dst, entryV2)
		dst = append(dst, e.ID[:]...)
		dst = binary.AppendVarint(dst, e.Expires)
		dst = binary.AppendVarint(dst, queued)
	}
	dst = binary.AppendUvarint(dst, uint64(len(e.Headers)))
	for _, h := range e.Headers {
		dst = binary.AppendUvarint(dst, uint64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = binary.AppendUvarint(dst, uint64(len(h.Value)))
		dst = append(dst, h.Value...)
	}
	return append(dst, e.Payload...)
}

// encodedLen is len(encodeEntry(nil, e, queued)).
func encodedLen(e *Entry, queued int64) int {
	n := 1 + len(e.ID) + uvarintLen(uint64(len(e.Headers))) + len(e.Payload)
	if e.Expires != 0 || queued != 0 {
		n += varintLen(e.Expires) + varintLen(queued)
	}
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

// varintLen is the length of binary.AppendVarint's encoding of v (zig-zag).
func varintLen(v int64) int {
	u := uint64(v) << 1
	if v < 0 {
		u = ^u
	}
	return uvarintLen(u)
}

var errShortValue = errors.New("truncated entry")

// decodeEntry decodes a stored value into e, copying everything out of v
// (which may point into bbolt's read-only mmap). It never panics; a
// malformed value yields an error wrapping ErrCorrupt.
func decodeEntry(v []byte, e *Entry) error { return decodeEntryInto(v, e, nil) }

// arenaBlock is the largest block decodeEntryInto copies payloads into; a
// payload over a quarter of it gets an allocation of its own.
const arenaBlock = 64 << 10

// entryHead is the part of a stored entry before its headers.
type entryHead struct {
	id      protocol.MessageID
	expires int64
	queued  int64 // Unix ms, 0: unknown
}

// head reads the version, ID and (version 2) expiry and queue time, and
// the header count, which it checks against the bytes left.
func (d *decoder) head() (h entryHead, nheaders uint64) {
	switch version := d.byte(); {
	case d.err != nil:
		return h, 0
	case version == entryV1:
		copy(h.id[:], d.bytes(len(h.id)))
	case version == entryV2:
		copy(h.id[:], d.bytes(len(h.id)))
		h.expires = d.varint()
		h.queued = d.varint()
	default:
		d.err = fmt.Errorf("entry encoding version %d, this program reads %d and %d", version, entryV1, entryV2)
		return h, 0
	}
	n := d.uvarint()
	// Each header takes at least two bytes, so a count beyond half the
	// remaining bytes is corrupt; checking first avoids a huge allocation.
	if d.err == nil && n > uint64(len(d.b))/2 {
		d.err = fmt.Errorf("entry claims %d headers in %d bytes", n, len(d.b))
		return h, 0
	}
	return h, n
}

// decodeHead returns the head of the entry stored in v without decoding
// the rest.
func decodeHead(v []byte) (entryHead, error) {
	d := decoder{b: v}
	h, _ := d.head()
	if d.err != nil {
		return h, fmt.Errorf("%w: %w", ErrCorrupt, d.err)
	}
	return h, nil
}

// decodeEntryInto is decodeEntry with the payload copied into *arena (if
// arena is not nil), a block shared by the entries of one read that it
// replaces with a new block when full: one allocation for many payloads.
// Each payload's capacity ends at its length, so appending to one never
// overwrites the next.
func decodeEntryInto(v []byte, e *Entry, arena *[]byte) error {
	d := decoder{b: v}
	h, n := d.head()
	e.ID, e.Expires = h.id, h.expires
	e.Headers = nil
	if n > 0 {
		e.Headers = make([]protocol.Header, n)
		for i := range e.Headers {
			e.Headers[i].Key = string(d.bytes(d.length()))
			e.Headers[i].Value = string(d.bytes(d.length()))
		}
	}
	if d.err != nil {
		e.Headers = nil
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
	_, n := d.head()
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

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
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
