package bench

import (
	"fmt"
	"strings"
	"testing"
)

// TestCheckLines: the pipe's output check accepts every line once in
// order and names each way it can go wrong.
func TestCheckLines(t *testing.T) {
	line := func(i int) string { return fmt.Sprintf(`{"seq":%d,"payload":"%08dxx"}`+"\n", i+1, i) }
	join := func(idx ...int) string {
		var b strings.Builder
		for _, i := range idx {
			b.WriteString(line(i))
		}
		return b.String()
	}
	for _, tc := range []struct {
		name, out string
		want      string // error substring; empty: success
	}{
		{"all in order", join(0, 1, 2), ""},
		{"one lost", join(0, 2), "does not carry input line 00000001"},
		{"one doubled", join(0, 1, 1, 2), "does not carry input line 00000002"},
		{"one extra at the end", join(0, 1, 2, 2), "more lines than the 3 sent"},
		{"too few", join(0, 1), "2 lines, want 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := 0
			all := make(chan struct{})
			err := checkLines(strings.NewReader(tc.out), 3, &seen, all)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
