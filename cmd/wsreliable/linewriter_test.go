package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// flakyWriter fails its write number failAt (from 1), then works again.
type flakyWriter struct {
	bytes.Buffer
	writes, failAt int
}

func (f *flakyWriter) Write(p []byte) (int, error) {
	f.writes++
	if f.writes == f.failAt {
		return 0, errors.New("stdout gone")
	}
	return f.Buffer.Write(p)
}

// TestBufferedLines: each client's lines leave in one write at its
// flush, whole and in order, and nothing before.
func TestBufferedLines(t *testing.T) {
	fw := &flakyWriter{}
	b := newBufferedLines(fw)
	for _, w := range []struct{ client, line string }{{"A", "a1\n"}, {"B", "b1\n"}, {"A", "a2\n"}} {
		if err := b.write(w.client, []byte(w.line)); err != nil {
			t.Fatal(err)
		}
	}
	if fw.Len() != 0 {
		t.Fatalf("lines written before a flush: %q", fw.String())
	}
	if err := b.flush("B"); err != nil {
		t.Fatal(err)
	}
	if err := b.flush("A"); err != nil {
		t.Fatal(err)
	}
	if got, want := fw.String(), "b1\na1\na2\n"; got != want || fw.writes != 2 {
		t.Fatalf("writer got %q in %d writes, want %q in 2", got, fw.writes, want)
	}
}

// TestBufferedLinesFailure: a failed write fails that client's flush (so
// none of its lines since the last flush is acknowledged), prints none of
// the lines that are to be delivered again, leaves other clients alone and
// the writer usable.
func TestBufferedLinesFailure(t *testing.T) {
	for _, early := range []bool{false, true} {
		fw := &flakyWriter{failAt: 1}
		b := newBufferedLines(fw)
		line := "a\n"
		if early {
			line = strings.Repeat("x", maxBuffered) + "\n"
		}
		werr := b.write("A", []byte(line))
		if early != (werr != nil) {
			t.Fatalf("early=%v: write error %v", early, werr)
		}
		if err := b.write("A", []byte("retry\n")); err != nil {
			t.Fatalf("early=%v: write after the failure: %v", early, err)
		}
		if err := b.write("B", []byte("b\n")); err != nil {
			t.Fatal(err)
		}
		if err := b.flush("A"); err == nil {
			t.Fatalf("early=%v: A's flush succeeded although its lines were lost", early)
		}
		if err := b.flush("B"); err != nil {
			t.Fatalf("early=%v: B's flush: %v", early, err)
		}
		if err := b.write("A", []byte("again\n")); err != nil {
			t.Fatal(err)
		}
		if err := b.flush("A"); err != nil {
			t.Fatalf("early=%v: flush after recovery: %v", early, err)
		}
		if got, want := fw.String(), "b\nagain\n"; got != want {
			t.Fatalf("early=%v: writer holds %q, want %q", early, got, want)
		}
	}
}
