package bench_test

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/internal/bench"
	"github.com/wsreliable/wsreliable/reliable"
)

// TestMain serves the child mode when this test binary is re-executed by
// the memory and storm scenarios, and checks for leaked goroutines
// otherwise.
func TestMain(m *testing.M) {
	if os.Getenv(bench.ChildEnv) != "" {
		if i := slices.Index(os.Args, bench.ChildArg); i >= 0 {
			os.Exit(bench.Main(context.Background(), os.Args[i:], os.Stdout, os.Stderr))
		}
	}
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// The smoke tests check counts and correctness only, never a timing.

func TestThroughputAndBaseline(t *testing.T) {
	ctx := testContext(t)
	for _, cfg := range []bench.Config{
		{Size: 64, Senders: 1, Durable: true, Count: 100},
		{Size: 256, Senders: 4, Durable: false, Count: 300},
		{Size: 4096, Senders: 4, Clients: 2, Durable: true, Count: 200},
	} {
		t.Run(fmt.Sprintf("%s/%dB/%dx%d", cfg.Mode(), cfg.Size, cfg.Senders, cfg.Clients), func(t *testing.T) {
			cfg.Dir = t.TempDir()
			r, err := bench.Throughput(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if r.Messages != int64(cfg.Count) {
				t.Errorf("wsreliable: %d messages acknowledged, want %d", r.Messages, cfg.Count)
			}
			b, err := bench.Baseline(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if b.Messages != int64(cfg.Count) {
				t.Errorf("gorilla: %d messages read, want %d", b.Messages, cfg.Count)
			}
			if r.MsgsPerSec() <= 0 || b.MsgsPerSec() <= 0 {
				t.Errorf("rates not computed: %+v %+v", r, b)
			}
		})
	}
}

func TestLatency(t *testing.T) {
	ctx := testContext(t)
	un, err := bench.Latency(ctx, bench.LatencyConfig{Size: 64, Durable: true, Count: 50, Duration: time.Minute, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if un.Messages != 50 || un.P50 <= 0 || un.P99 < un.P50 || un.Max < un.P99 {
		t.Errorf("unloaded: %+v", un)
	}
	lo, err := bench.Latency(ctx, bench.LatencyConfig{Size: 64, Rate: 500, Senders: 4, Count: 100, Duration: time.Minute, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if lo.Messages != 100 || lo.P50 <= 0 {
		t.Errorf("loaded: %+v", lo)
	}
}

func TestIdleMemory(t *testing.T) {
	ctx := testContext(t)
	for _, sys := range []string{"gorilla", "wsreliable"} {
		t.Run(sys, func(t *testing.T) {
			m, err := bench.IdleMemory(ctx, bench.MemoryConfig{System: sys, Clients: 20, Settle: 100 * time.Millisecond, Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			if m.Conns != 20 {
				t.Errorf("server held %d connections, want 20 (notes %q)", m.Conns, m.Notes)
			}
			if m.RSSBefore <= 0 || m.RSSAfter <= 0 {
				t.Errorf("RSS not measured: %+v", m)
			}
		})
	}
}

func TestRecovery(t *testing.T) {
	ctx := testContext(t)
	// Enough to grow the queue file past the 1 MiB compaction threshold.
	r, err := bench.Recovery(ctx, bench.RecoveryConfig{Messages: 3000, Size: 1024, Durable: true, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err) // includes lost, duplicated or reordered messages
	}
	if r.FileAfter >= r.FileBefore {
		t.Errorf("queue file %d bytes before, %d after: did not shrink", r.FileBefore, r.FileAfter)
	}
	if r.Drain <= 0 || r.DrainRate() <= 0 {
		t.Errorf("drain not measured: %+v", r)
	}
}

func TestStorm(t *testing.T) {
	ctx := testContext(t)
	s, err := bench.Storm(ctx, bench.StormConfig{Clients: 20, Durable: true, HealthyAfter: 100 * time.Millisecond, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err) // includes clients not caught up and lost messages
	}
	if s.Reconnected <= 0 || s.CaughtUp < s.Reconnected {
		t.Errorf("storm: %+v", s)
	}
}

// TestPush runs server-to-client push in both modes and its raw
// baseline; Throughput itself fails on a push lost, doubled, out of order
// or settled other than acknowledged.
func TestPush(t *testing.T) {
	ctx := testContext(t)
	for _, durable := range []bool{true, false} {
		cfg := bench.Config{Size: 256, Senders: 4, Push: true, Durable: durable, Count: 200}
		t.Run(cfg.Mode(), func(t *testing.T) {
			cfg.Dir = t.TempDir()
			r, err := bench.Throughput(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if r.Messages != int64(cfg.Count) || r.MsgsPerSec() <= 0 {
				t.Errorf("wsreliable push: %+v, want %d messages handled and acknowledged", r, cfg.Count)
			}
		})
	}
	t.Run("gorilla", func(t *testing.T) {
		b, err := bench.Baseline(ctx, bench.Config{Size: 256, Senders: 4, Clients: 2, Push: true, Count: 200})
		if err != nil {
			t.Fatal(err)
		}
		if b.Messages != 200 || b.MsgsPerSec() <= 0 {
			t.Errorf("gorilla push: %+v, want 200 messages read by the clients", b)
		}
	})
	if r, err := bench.Throughput(ctx, bench.Config{Senders: 2, Push: true, Batch: 4, Count: 64}); err != nil || r.Messages < 64 {
		t.Errorf("Push with SendBatch of 4: %+v, %v", r, err)
	}
}

func TestFanout(t *testing.T) {
	ctx := testContext(t)
	f, err := bench.Fanout(ctx, bench.FanoutConfig{Clients: 20, Rounds: 2, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err) // includes a client missing a push, or a receipt not acknowledged
	}
	if len(f.Online) != 2 || len(f.Offline) != 2 {
		t.Fatalf("fan-out: %d connected and %d offline rounds, want 2 each", len(f.Online), len(f.Offline))
	}
	for i, r := range f.Online {
		if r.Commit <= 0 || r.Delivered <= 0 || r.Settled < r.Commit {
			t.Errorf("round %d: %+v", i+1, r)
		}
	}
	if f.Handled != 40 || f.Checked != 40 {
		t.Errorf("handled %d pushes and found %d in the store, want 40 and 40", f.Handled, f.Checked)
	}
	if f.FileSize <= 0 {
		t.Errorf("file size %d", f.FileSize)
	}
}

func TestOffline(t *testing.T) {
	ctx := testContext(t)
	o, err := bench.Offline(ctx, bench.OfflineConfig{Clients: 50, Pushes: 3, Chunk: 20, Size: 64, Idle: time.Millisecond, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err) // includes a push missing from the store or out of place
	}
	if o.Checked != 150 {
		t.Errorf("found %d pushes in the store, want 150", o.Checked)
	}
	if o.Drain <= 0 {
		t.Errorf("drain took %v", o.Drain)
	}
	for name, m := range map[string]bench.MemSample{"empty": o.Empty, "loaded": o.Loaded, "idle": o.Idle, "reopened": o.Reopened,
		"drained empty": o.DrainedEmpty, "drained": o.Drained} {
		if m.RSS <= 0 || m.Anon <= 0 || m.Heap <= 0 {
			t.Errorf("%s: memory not measured: %+v", name, m)
		}
	}
	if o.Fill <= 0 || o.FileSize <= 0 || o.LoadedRatio() <= 0 || o.ReopenedRatio() <= 0 {
		t.Errorf("offline: %+v", o)
	}
}

func TestReportWriters(t *testing.T) {
	cfg := bench.Config{Size: 256, Senders: 16, Clients: 1}
	dur := cfg
	dur.Durable = true
	rep := &bench.Report{
		Command: "wsreliable bench -quick",
		Machine: bench.ThisMachine(),
		Throughput: []bench.Row{{
			Baseline: bench.Result{System: "gorilla", Config: cfg, Messages: 100000, Elapsed: time.Second},
			NoSync:   bench.Result{System: "wsreliable", Config: cfg, Messages: 20000, Elapsed: time.Second},
			Durable:  bench.Result{System: "wsreliable", Config: dur, Messages: 2000, Elapsed: time.Second},
		}},
	}
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md, "bench.svg"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"wsreliable bench -quick", "| 256 B | 16 |", "0.200", "0.020", "![Throughput by mode and size](bench.svg)"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md.String())
		}
	}
	var svg bytes.Buffer
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(&svg)
	rects := 0
	for {
		tok, err := d.Token()
		if err != nil {
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	if rects < 3+3+1 { // background, legend, bars
		t.Errorf("SVG has %d rects, want at least 7", rects)
	}
}

func TestMainQuick(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	out, chart := filepath.Join(dir, "B.md"), filepath.Join(dir, "b.svg")
	var stdout, stderr bytes.Buffer
	code := bench.Main(ctx, []string{"-quick", "-scenarios", "memory", "-idle-clients", "10", "-dir", dir, "-out", out, "-chart", chart}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr.String())
	}
	md, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "## Idle memory") || !strings.Contains(string(md), "(b.svg)") {
		t.Errorf("report:\n%s", md)
	}
	if _, err := os.Stat(chart); err != nil {
		t.Error(err)
	}
	if code := bench.Main(ctx, []string{"-scenarios", "nope"}, &stdout, &stderr); code != 2 {
		t.Errorf("unknown scenario: exit %d, want 2", code)
	}
}

// TestMainPushScenarios runs the push, fanout and offline scenarios
// through Main, tiny, and checks that the report has their rows.
func TestMainPushScenarios(t *testing.T) {
	ctx := testContext(t)
	var stdout, stderr bytes.Buffer
	code := bench.Main(ctx, []string{"-quick", "-scenarios", "push,fanout,offline", "-duration", "100ms",
		"-fanout-clients", "10", "-offline-clients", "20", "-dir", t.TempDir()}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{
		"## Server → client push", "| 256 B | 16 |",
		"## Fan-out", "| 10 connected | #1 |", "| 10 connected | #3 |", "| 10 offline | #3 |",
		"## Offline clients", "| empty store |", "| right after queueing the pushes (same process) |", "| the same process after 8s idle |", "| fresh process on the full store |",
		"| control after 8s idle |", "| control: empty store |", "| control: pushes queued, all acknowledged, after 8s idle |",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, stdout.String())
		}
	}
	// The offline text's figures, each in its place.
	offline := regexp.MustCompile(`fsync on\) in [0-9.]+ ms \([0-9,]+ pushes/s\); the store file then held [0-9.]+ [KM]?i?B\. .* again after it sat idle for 8s, and in a fresh`)
	if !offline.MatchString(stdout.String()) {
		t.Errorf("offline text does not match %s:\n%s", offline, stdout.String())
	}
	control := regexp.MustCompile(`as their sessions would on coming back: [0-9.]+ ms\), and sat idle as long`)
	if !control.MatchString(stdout.String()) {
		t.Errorf("offline control text does not match %s:\n%s", control, stdout.String())
	}
}

// BenchmarkSend runs Throughput with b.N messages (setup included), for
// profiling, e.g.
//
//	go test -run '^$' -bench 'Send/durable/256B/16x64' -benchtime 20000x -cpuprofile cpu.out ./internal/bench/
func BenchmarkSend(b *testing.B) {
	for _, durable := range []bool{true, false} {
		for _, size := range []int{64, 256, 4096} {
			for _, sc := range []struct{ senders, batch int }{{1, 1}, {16, 1}, {16, 64}} {
				cfg := bench.Config{Size: size, Senders: sc.senders, Batch: sc.batch, Durable: durable}
				benchThroughput(b, fmt.Sprintf("%s/%dB/%d", cfg.Mode(), size, sc.senders), cfg)
			}
		}
	}
}

// benchThroughput runs Throughput for cfg with b.N messages as the
// sub-benchmark name, suffixed xBATCH for SendBatch, reporting msgs/s.
func benchThroughput(b *testing.B, name string, cfg bench.Config) {
	if cfg.Batch > 1 {
		name += fmt.Sprintf("x%d", cfg.Batch)
	}
	b.Run(name, func(b *testing.B) {
		cfg.Count, cfg.Dir = b.N, b.TempDir()
		r, err := bench.Throughput(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(cfg.Size))
		b.ReportMetric(r.MsgsPerSec(), "msgs/s")
	})
}

// BenchmarkPush runs Throughput with b.N pushes (setup included), for
// profiling the server-to-client path, e.g.
//
//	go test -run '^$' -bench 'Push/durable/16x64' -benchtime 200000x -cpuprofile cpu.out ./internal/bench/
func BenchmarkPush(b *testing.B) {
	for _, durable := range []bool{true, false} {
		for _, sc := range []struct{ senders, batch int }{{16, 1}, {16, 64}} {
			cfg := bench.Config{Size: 256, Senders: sc.senders, Batch: sc.batch, Durable: durable, Push: true}
			benchThroughput(b, fmt.Sprintf("%s/%d", cfg.Mode(), sc.senders), cfg)
		}
	}
}

// TestPipe runs the CLI pipe scenario on a small input, with the
// wsreliable command built from this module; Pipe itself fails on a line
// lost, doubled or out of order.
func TestPipe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the wsreliable command")
	}
	ctx := testContext(t)
	dir := t.TempDir()
	cli := filepath.Join(dir, "wsreliable")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", cli, "../../cmd/wsreliable").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const lines = 3000
	r, err := bench.Pipe(ctx, bench.PipeConfig{Lines: lines, CLI: cli, Dir: dir}, bench.Launcher{})
	if err != nil {
		t.Fatal(err)
	}
	for name, run := range map[string]bench.PipeRun{"raw": r.Raw, "wsreliable": r.Ours} {
		if run.Lines != lines || run.Took <= 0 {
			t.Errorf("%s pipe: %+v, want %d lines", name, run, lines)
		}
	}
}

// TestUnderAttack runs the attack scenario small, with the attackers and
// the honest client in child processes (and once with the honest client
// in process): the honest client delivers everything (UnderAttack fails
// otherwise); latencies are reported, never asserted.
func TestUnderAttack(t *testing.T) {
	for _, inProcess := range []bool{false, true} {
		t.Run(fmt.Sprintf("honest-in-process=%v", inProcess), func(t *testing.T) {
			r, err := bench.UnderAttack(testContext(t), bench.AttackConfig{Count: 50, Attackers: 1, HonestInProcess: inProcess, Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			if r.UnloadedP99 <= 0 || r.AttackP99 <= 0 || r.AttackerSessions == 0 {
				t.Errorf("result: %+v", r)
			}
			t.Logf("honest p99 %v alone, %v under attack (%.1f×); attackers: %d sessions, %d messages handled",
				r.UnloadedP99, r.AttackP99, r.Ratio, r.AttackerSessions, r.AttackerMessages)
		})
	}
}

// attackPhase is the least length of each phase of
// BenchmarkHonestUnderAttack: longer than the bursts the rate limits
// allow (one second's worth).
const attackPhase = 5 * time.Second

// attackServerOptions returns the server's options for
// BenchmarkHonestUnderAttack: the defaults, or with
// WSRELIABLE_ATTACK_LIMITS=off the limits this benchmark measures
// (byte rate, handshake rates) switched off, for a before/after in one
// binary.
func attackServerOptions() *reliable.ServerOptions {
	if os.Getenv("WSRELIABLE_ATTACK_LIMITS") != "off" {
		return nil
	}
	return &reliable.ServerOptions{MaxByteRate: -1, MaxHandshakeRatePerIP: -1, MaxHandshakeRatePerIdentity: -1}
}

// BenchmarkHonestUnderAttack reports the honest client's p50 and p99
// under each attack (and all at once) against its unloaded figures in
// the same run (the bound: p99 within 5×). The attackers and the
// honest client run in child processes; the server alone runs in the
// benchmark's process, so -cpuprofile profiles the server. E.g.
//
//	go test -run '^$' -bench 'HonestUnderAttack/nosync' -benchtime 1x ./internal/bench/
//
// Each phase lasts at least attackPhase.
func BenchmarkHonestUnderAttack(b *testing.B) {
	for _, durable := range []bool{false, true} {
		for _, kind := range append(slices.Clone(bench.AttackKinds), "all") {
			name := map[bool]string{false: "nosync", true: "durable"}[durable] + "/" + kind
			kinds := []string{kind}
			if kind == "all" {
				kinds = nil
			}
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					r, err := bench.UnderAttack(context.Background(), bench.AttackConfig{Count: 1000, Duration: attackPhase, Attackers: 2, Durable: durable, Kinds: kinds, Server: attackServerOptions(), Dir: b.TempDir()})
					if err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(r.Ratio, "p99-ratio")
					b.ReportMetric(float64(r.UnloadedP99.Microseconds()), "p99-alone-µs")
					b.ReportMetric(float64(r.AttackP99.Microseconds()), "p99-attack-µs")
					b.Logf("p50 %v alone, %v under attack; p99 %v alone, %v under attack (%.1f×); attackers: %d sessions, %d messages; refused %v; disconnects %v",
						r.UnloadedP50, r.AttackP50, r.UnloadedP99, r.AttackP99, r.Ratio, r.AttackerSessions, r.AttackerMessages, r.Stats.Refused, r.Stats.Disconnects)
				}
			})
		}
	}
}
