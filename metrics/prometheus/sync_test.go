package prometheus_test

import (
	"os"
	"regexp"
	"slices"
	"testing"
)

// metricDef matches a metric's name and help text as both files write
// them: d("name", "help" and Name: "…", Help: "…".
var metricDef = regexp.MustCompile(`d\("([a-z_]+)", "([^"]*)"|Name:\s+"([a-z_]+)",\s+Help:\s+"([^"]*)"`)

// TestCLICopyInStep: cmd/wsreliable/promstats.go copies this package's
// collectors (the root module cannot require this one; see that file), so
// the CLI's /metrics must define the same metrics with the same help.
func TestCLICopyInStep(t *testing.T) {
	defs := func(path string) []string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range metricDef.FindAllStringSubmatch(string(b), -1) {
			out = append(out, m[1]+m[3]+": "+m[2]+m[4])
		}
		slices.Sort(out)
		return out
	}
	ours, cli := defs("prometheus.go"), defs("../../cmd/wsreliable/promstats.go")
	if len(ours) < 18 {
		t.Fatalf("found only %d metric definitions in prometheus.go: %q", len(ours), ours)
	}
	if !slices.Equal(ours, cli) {
		t.Errorf("metric definitions differ:\nmetrics/prometheus: %q\ncmd/wsreliable:     %q", ours, cli)
	}
}
