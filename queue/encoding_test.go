package queue

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"syscall"
	"testing"

	"github.com/wsreliable/wsreliable/protocol"
)

func TestEntryRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		e       Entry
		queued  int64
		version byte
	}{
		{"empty", Entry{}, 0, entryV1},
		{"payload", Entry{ID: protocol.MessageID{1, 2, 3}, Payload: []byte("hello")}, 0, entryV1},
		{"headers", Entry{Headers: []protocol.Header{{Key: "a", Value: "b"}, {Key: "", Value: ""}}, Payload: []byte{0}}, 0, entryV1},
		{"long header", Entry{Headers: []protocol.Header{{Key: string(make([]byte, 300)), Value: "v"}}}, 0, entryV1},
		{"expires", Entry{ID: protocol.MessageID{9}, Payload: []byte("x"), Expires: 1_700_000_000_123}, 0, entryV2},
		{"queued", Entry{Payload: []byte("x")}, 1_700_000_000_456, entryV2},
		{"expires, queued, headers", Entry{
			Headers: []protocol.Header{{Key: "k", Value: "v"}}, Payload: []byte("p"), Expires: 5,
		}, 1_700_000_000_789, entryV2},
		{"negative", Entry{Expires: -1}, math.MinInt64, entryV2},
		{"extremes", Entry{Expires: math.MaxInt64}, math.MaxInt64, entryV2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := encodeEntry(nil, &tc.e, tc.queued)
			if v[0] != tc.version {
				t.Errorf("encoded as version %d, want %d", v[0], tc.version)
			}
			if len(v) != encodedLen(&tc.e, tc.queued) {
				t.Errorf("encodedLen = %d, encoded %d bytes", encodedLen(&tc.e, tc.queued), len(v))
			}
			var got Entry
			if err := decodeEntry(v, &got); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.e) {
				t.Errorf("decoded %+v, want %+v", got, tc.e)
			}
			size, err := storedSize(v)
			if err != nil || size != entrySize(&tc.e) {
				t.Errorf("storedSize = %d, %v; want %d", size, err, entrySize(&tc.e))
			}
			h, err := decodeHead(v)
			if err != nil || h.id != tc.e.ID || h.expires != tc.e.Expires || h.queued != tc.queued {
				t.Errorf("decodeHead = %+v, %v; want ID %v, expires %d, queued %d", h, err, tc.e.ID, tc.e.Expires, tc.queued)
			}
		})
	}
}

// TestEntryV1Compatible decodes a version 1 value built by hand, as the
// files of earlier releases hold them: Expires and the queue time are 0.
func TestEntryV1Compatible(t *testing.T) {
	v := []byte{1}                                          // version
	v = append(v, "0123456789abcdef"...)                    // id
	v = append(v, 2)                                        // two headers
	v = append(v, 1, 'k', 2, 'v', 'w', 0, 3, 'x', 'y', 'z') // k=vw, ""=xyz
	v = append(v, "payload"...)
	var e Entry
	if err := decodeEntry(v, &e); err != nil {
		t.Fatal(err)
	}
	want := Entry{
		ID:      protocol.MessageID([]byte("0123456789abcdef")),
		Headers: []protocol.Header{{Key: "k", Value: "vw"}, {Key: "", Value: "xyz"}},
		Payload: []byte("payload"),
	}
	if fmt.Sprint(e) != fmt.Sprint(want) {
		t.Fatalf("decoded %+v, want %+v", e, want)
	}
	if size, err := storedSize(v); err != nil || size != 1+2+3+7 {
		t.Errorf("storedSize = %d, %v; want 13", size, err)
	}
	if h, err := decodeHead(v); err != nil || h.queued != 0 || h.expires != 0 {
		t.Errorf("decodeHead = %+v, %v", h, err)
	}
	// What this program writes for such an entry is the same bytes.
	if again := encodeEntry(nil, &want, 0); !bytes.Equal(again, v) {
		t.Errorf("encodeEntry = %x, want the version 1 value %x", again, v)
	}
}

// TestEntryBadValues: malformed values are errors wrapping ErrCorrupt.
func TestEntryBadValues(t *testing.T) {
	good := encodeEntry(nil, &Entry{Payload: []byte("x"), Expires: 1}, 1)
	tests := []struct {
		name string
		v    []byte
	}{
		{"empty", nil},
		{"version 0", []byte{0}},
		{"version 3", append([]byte{3}, good[1:]...)},
		{"v1 short ID", []byte{1, 1, 2}},
		{"v2 short ID", []byte{2, 1, 2}},
		{"v2 no expires", append([]byte{2}, make([]byte, 16)...)},
		{"v2 bad varint", append(append([]byte{2}, make([]byte, 16)...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)},
		{"v2 no queued", append(append([]byte{2}, make([]byte, 16)...), 0)},
		{"v2 no header count", append(append([]byte{2}, make([]byte, 16)...), 0, 0)},
		{"v2 too many headers", append(append([]byte{2}, make([]byte, 16)...), 0, 0, 100, 1, 1)},
		{"v2 header beyond end", append(append([]byte{2}, make([]byte, 16)...), 0, 0, 1, 5, 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e Entry
			if err := decodeEntry(tc.v, &e); !errors.Is(err, ErrCorrupt) {
				t.Errorf("decodeEntry = %v, want ErrCorrupt", err)
			}
			if _, err := storedSize(tc.v); !errors.Is(err, ErrCorrupt) {
				t.Errorf("storedSize = %v, want ErrCorrupt", err)
			}
		})
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(encodeEntry(nil, &Entry{Payload: []byte("x")}, 0))
	f.Add(encodeEntry(nil, &Entry{Headers: []protocol.Header{{Key: "k", Value: "v"}}}, 0))
	f.Add(encodeEntry(nil, &Entry{Payload: []byte("x"), Expires: 1 << 40}, 1<<41))
	f.Add(encodeEntry(nil, &Entry{Headers: []protocol.Header{{Key: "k", Value: "v"}}, Expires: -3}, 0))
	f.Add([]byte{1})
	f.Add([]byte{2, 0})
	f.Add(append([]byte{1}, make([]byte, 16)...))
	f.Add(append([]byte{2}, make([]byte, 18)...))
	f.Fuzz(func(t *testing.T, v []byte) {
		var e Entry
		err := decodeEntry(v, &e)
		size, serr := storedSize(v)
		h, herr := decodeHead(v)
		if (err == nil) != (serr == nil) {
			t.Fatalf("decodeEntry err %v, storedSize err %v", err, serr)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || !errors.Is(serr, ErrCorrupt) {
				t.Fatalf("errors %v, %v do not wrap ErrCorrupt", err, serr)
			}
			return
		}
		if herr != nil || h.id != e.ID || h.expires != e.Expires {
			t.Fatalf("decodeHead = %+v, %v; decodeEntry %+v", h, herr, e)
		}
		if size != entrySize(&e) {
			t.Fatalf("storedSize %d, entrySize %d", size, entrySize(&e))
		}
		re := encodeEntry(nil, &e, h.queued)
		if len(re) != encodedLen(&e, h.queued) {
			t.Fatalf("encodedLen %d, encoded %d", encodedLen(&e, h.queued), len(re))
		}
		var again Entry
		if err := decodeEntry(re, &again); err != nil || fmt.Sprint(again) != fmt.Sprint(e) {
			t.Fatalf("re-encoding %+v gave %+v, %v", e, again, err)
		}
	})
}

func TestDiskFullError(t *testing.T) {
	causes := []error{
		&fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC},
		// bbolt formats the cause of a failed file resize with %s.
		fmt.Errorf("file resize error: %s", syscall.ENOSPC),
	}
	for _, cause := range causes {
		if !isNoSpace(cause) {
			t.Errorf("isNoSpace(%v) = false", cause)
		}
		err := fmt.Errorf("wrapped: %w", &diskFullError{path: "/x", err: cause})
		if !errors.Is(err, ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("%v does not match both ErrDiskFull and ENOSPC", err)
		}
	}
	if isNoSpace(syscall.EIO) {
		t.Error("isNoSpace(EIO) = true")
	}
}
