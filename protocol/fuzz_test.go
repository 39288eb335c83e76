package protocol_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/wsreliable/wsreliable/protocol"
)

// FuzzDecode checks that Decode never panics, that every error wraps exactly
// one sentinel, that decoded frames respect the decoder's limits (see
// [checkDecoded]), and that whatever decodes survives a round trip:
// re-encoding the frames gives a message that decodes to equal frames and is
// canonical (encoding it again gives the same bytes, never longer than the
// input).
func FuzzDecode(f *testing.F) {
	for _, tc := range roundTripCases {
		if msg := protocol.Encode(tc.frames...); len(msg) <= 4096 {
			f.Add(msg)
		}
	}
	for _, tc := range badCases {
		if len(tc.msg) <= 4096 {
			f.Add(tc.msg)
		}
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		var calls int
		err := protocol.Decode(msg, func(protocol.Frame) error {
			calls++
			return nil
		})
		frames, errAll := protocol.DecodeAll(msg)
		if (err == nil) != (errAll == nil) || calls != len(frames) && err == nil {
			t.Fatalf("Decode (%v, %d frames) and DecodeAll (%v, %d frames) disagree", err, calls, errAll, len(frames))
		}
		if err != nil {
			checkSentinel(t, err)
			return
		}
		if len(frames) == 0 {
			t.Fatalf("DecodeAll succeeded with no frames")
		}
		for i, f := range frames {
			checkDecoded(t, i, f)
		}

		again := protocol.Encode(frames...)
		if len(again) > len(msg) {
			t.Fatalf("re-encoding grew the message from %d to %d bytes", len(msg), len(again))
		}
		want := 1
		for _, f := range frames {
			want += protocol.FrameSize(f)
		}
		if len(again) != want {
			t.Fatalf("len(Encode) = %d, want 1 + sum of FrameSize = %d", len(again), want)
		}
		re := decodeAll(t, again)
		assertFramesEqual(t, re, frames)
		if third := protocol.Encode(re...); string(third) != string(again) {
			t.Fatalf("encoding is not stable:\n first % x\nsecond % x", truncate(again), truncate(third))
		}
	})
}

// checkDecoded fails tb unless frame i, as decoded, holds only values the
// wire can carry and the limits allow; in particular a decoded expiry or
// duration is never negative, since the encoder writes those as zero.
func checkDecoded(tb testing.TB, i int, f protocol.Frame) {
	tb.Helper()
	switch f := f.(type) {
	case *protocol.Hello:
		if len(f.ClientID) > protocol.MaxClientIDLen || !utf8.ValidString(f.ClientID) {
			tb.Fatalf("frame %d: hello client ID %q", i, f.ClientID)
		}
	case *protocol.Welcome:
		for _, d := range []time.Duration{f.HeartbeatInterval, f.HeartbeatTimeout} {
			if d < 0 || d%time.Millisecond != 0 {
				tb.Fatalf("frame %d: welcome duration %v", i, d)
			}
		}
	case *protocol.Data:
		if f.Expires < 0 {
			tb.Fatalf("frame %d: data expiry %d", i, f.Expires)
		}
		if len(f.Headers) > protocol.MaxHeaders {
			tb.Fatalf("frame %d: %d headers", i, len(f.Headers))
		}
		for _, h := range f.Headers {
			if !utf8.ValidString(h.Key) || !utf8.ValidString(h.Value) {
				tb.Fatalf("frame %d: header %q: %q", i, h.Key, h.Value)
			}
		}
	case *protocol.Reject:
		if len(f.Reason) > protocol.MaxReasonLen || !utf8.ValidString(f.Reason) {
			tb.Fatalf("frame %d: reject reason %q", i, f.Reason)
		}
	case *protocol.Skip:
		if len(f.Reason) > protocol.MaxReasonLen || !utf8.ValidString(f.Reason) {
			tb.Fatalf("frame %d: skip reason %q", i, f.Reason)
		}
	case *protocol.Ack, *protocol.Heartbeat:
	default:
		tb.Fatalf("frame %d: unexpected frame %T", i, f)
	}
}

// checkSentinel fails tb unless err wraps exactly one of the sentinels.
func checkSentinel(tb testing.TB, err error) {
	tb.Helper()
	var n int
	for _, s := range []error{protocol.ErrMalformed, protocol.ErrUnknownFrame, protocol.ErrVersion} {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		tb.Fatalf("error %q wraps %d sentinels, want exactly 1", err, n)
	}
}

// TestFuzzCorpus checks that the checked-in seeds of FuzzDecode still mean
// what their names say, so that a change of the wire format cannot quietly
// turn them into a different kind of input: valid-* seeds decode and are
// canonical (re-encoding gives the same bytes), and between them hold every
// frame type; bad-version-* seeds (among them the old version 1 seeds) fail
// with ErrVersion, bad-unknown-frame-* with ErrUnknownFrame, and other
// bad-* seeds with ErrMalformed. Other files (inputs the fuzzer wrote
// after a failure) are left to FuzzDecode itself.
func TestFuzzCorpus(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecode", "*"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[protocol.FrameType]bool{}
	var valid, bad int
	for _, path := range paths {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			msg := readCorpusFile(t, path)
			frames, err := protocol.DecodeAll(msg)
			switch {
			case strings.HasPrefix(name, "valid-"):
				valid++
				if err != nil {
					t.Fatalf("valid seed does not decode: %v", err)
				}
				if again := protocol.Encode(frames...); !bytes.Equal(again, msg) {
					t.Fatalf("valid seed is not canonical:\n seed % x\n again % x", truncate(msg), truncate(again))
				}
				for _, f := range frames {
					seen[f.Type()] = true
				}
			case strings.HasPrefix(name, "bad-version-"):
				bad++
				assertDecodeError(t, err, protocol.ErrVersion)
			case strings.HasPrefix(name, "bad-unknown-frame-"):
				bad++
				assertDecodeError(t, err, protocol.ErrUnknownFrame)
			case strings.HasPrefix(name, "bad-"):
				bad++
				assertDecodeError(t, err, protocol.ErrMalformed)
			default:
				t.Skip("not a named seed")
			}
		})
	}
	if valid == 0 || bad == 0 {
		t.Fatalf("found %d valid and %d bad seeds, want some of each", valid, bad)
	}
	for typ := protocol.TypeHello; typ <= protocol.TypeHeartbeat; typ++ {
		if !seen[typ] {
			t.Errorf("no valid seed holds a %s frame", typ)
		}
	}
}

// readCorpusFile reads a seed in the "go test fuzz v1" format holding one
// []byte value.
func readCorpusFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" {
		tb.Fatalf("%s: not a one-value go test fuzz v1 file", path)
	}
	lit, hasPrefix := strings.CutPrefix(lines[1], "[]byte(")
	lit, hasSuffix := strings.CutSuffix(lit, ")")
	if !hasPrefix || !hasSuffix {
		tb.Fatalf("%s: value is not []byte(...)", path)
	}
	s, err := strconv.Unquote(lit)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return []byte(s)
}
