package main

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tallyValue returns the number after "key:" in the demo's tally.
func tallyValue(t *testing.T, tally, key string) int {
	t.Helper()
	for _, line := range strings.Split(tally, "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				break
			}
			n, err := strconv.Atoi(fields[0])
			if err != nil {
				t.Fatalf("tally line %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("tally has no %q line:\n%s", key, tally)
	return 0
}

func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := runDemo(ctx, []string{"-duration", "3s", "-fault-every", "400ms", "-rate", "200", "-seed", "7"}, nil, &out, &errb)
	tally := out.String()
	t.Logf("tally:\n%s", tally)
	if code != exitOK {
		t.Fatalf("demo exited with %d; stderr:\n%s", code, errb.String())
	}
	sent := tallyValue(t, tally, "sent")
	if sent == 0 {
		t.Fatal("demo sent nothing")
	}
	if got := tallyValue(t, tally, "delivered"); got != sent {
		t.Errorf("delivered %d, sent %d", got, sent)
	}
	for _, key := range []string{"lost", "duplicates", "out of order"} {
		if n := tallyValue(t, tally, key); n != 0 {
			t.Errorf("%s: %d", key, n)
		}
	}
	if tallyValue(t, tally, "faults") == 0 {
		t.Error("no faults were injected")
	}
	if !strings.Contains(tally, "1 restarted midway") {
		t.Error("no client was restarted")
	}
	if !strings.Contains(errb.String(), "sent ") {
		t.Errorf("no progress line on stderr:\n%s", errb.String())
	}
}
