package protocol_test

import (
	"errors"
	"testing"

	"github.com/wsreliable/wsreliable/protocol"
)

// FuzzDecode checks that Decode never panics, that every error wraps exactly
// one sentinel, and that whatever decodes survives a round trip: re-encoding
// the frames gives a message that decodes to equal frames and is canonical
// (encoding it again gives the same bytes, never longer than the input).
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
