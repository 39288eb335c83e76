package queue

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"

	"github.com/wsreliable/wsreliable/protocol"
)

func TestEntryRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		e    Entry
	}{
		{"empty", Entry{}},
		{"payload", Entry{ID: protocol.MessageID{1, 2, 3}, Payload: []byte("hello")}},
		{"headers", Entry{Headers: []protocol.Header{{Key: "a", Value: "b"}, {Key: "", Value: ""}}, Payload: []byte{0}}},
		{"long header", Entry{Headers: []protocol.Header{{Key: string(make([]byte, 300)), Value: "v"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := encodeEntry(nil, &tc.e)
			if len(v) != encodedLen(&tc.e) {
				t.Errorf("encodedLen = %d, encoded %d bytes", encodedLen(&tc.e), len(v))
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
		})
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(encodeEntry(nil, &Entry{Payload: []byte("x")}))
	f.Add(encodeEntry(nil, &Entry{Headers: []protocol.Header{{Key: "k", Value: "v"}}}))
	f.Add([]byte{1})
	f.Add([]byte{2, 0})
	f.Add(append([]byte{1}, make([]byte, 16)...))
	f.Fuzz(func(t *testing.T, v []byte) {
		var e Entry
		err := decodeEntry(v, &e)
		size, serr := storedSize(v)
		if (err == nil) != (serr == nil) {
			t.Fatalf("decodeEntry err %v, storedSize err %v", err, serr)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if size != entrySize(&e) {
			t.Fatalf("storedSize %d, entrySize %d", size, entrySize(&e))
		}
		var again Entry
		if err := decodeEntry(encodeEntry(nil, &e), &again); err != nil || fmt.Sprint(again) != fmt.Sprint(e) {
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
