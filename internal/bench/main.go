package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"
)

// Scenario names accepted by -scenarios.
var allScenarios = []string{"throughput", "latency", "memory", "recovery", "storm", "pipe", "push", "fanout", "offline"}

// Sizes and sender configurations of the throughput matrix. Latency runs
// the one-client configurations with at most 16 senders; 256 senders on one
// client shows how far the group commit scales when more Sends wait on it.
var (
	sizes         = []int{64, 256, 4096}
	senderConfigs = []struct{ senders, clients, batch int }{{1, 1, 1}, {16, 1, 1}, {16, 16, 1}, {256, 1, 1}, {16, 1, 64}}
)

const usage = `Usage: wsreliable bench [flags]

Runs the raw gorilla/websocket baseline and wsreliable side by side on this
machine (127.0.0.1 only) and prints Markdown tables with the ratios:
throughput and latency (64 B, 256 B, 4 KiB; 1 and 16 senders; fsync and
NoSync), idle memory per connection, backlog recovery, a reconnect storm,
the CLI as a pipe (send into serve, against a raw gorilla pipe), server to
client push (against raw gorilla in that direction), a fan-out of one
message to many clients and the memory a server pays for offline clients'
pushes. The memory, storm, pipe, fanout and offline scenarios re-run this
program as child processes; the pipe scenario runs this program's serve
and send commands unless -cli names another wsreliable executable.

Flags:
`

// Main runs the benchmark suite as the "wsreliable bench" command: it
// parses args, runs the selected scenarios, prints the report to stdout
// and progress to stderr, and returns the exit code (0 ok, 1 a scenario
// failed, 2 usage). With ChildArg as args[0] it runs the hidden child mode
// instead, reading commands from os.Stdin.
//
// Children are started as os.Executable() with the arguments that preceded
// args in os.Args (["bench"] for "wsreliable bench"; ["bench"] as well if
// os.Args does not end with args), then ChildArg; so the program must
// route "<those arguments> __bench-child …" to Main unchanged.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == ChildArg {
		return runChild(ctx, args[1:], os.Stdin, stdout, stderr)
	}
	// Children copy their stderr here from goroutines of os/exec.
	stderr = &lockedWriter{w: stderr}
	fs := flag.NewFlagSet("wsreliable bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	quick := fs.Bool("quick", false, "short run: 300ms per measurement, 1,000 idle clients, 10,000 backlog, 500-client storm, 1,000-client fan-out, 10,000 offline clients")
	scenarios := fs.String("scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run")
	out := fs.String("out", "", "write the Markdown report to this file (e.g. BENCHMARKS.md)")
	chart := fs.String("chart", "", "write the SVG throughput chart to this file (e.g. bench.svg)")
	duration := fs.Duration("duration", 0, "length of each throughput and latency measurement (0: 3s, 300ms with -quick)")
	idle := fs.Int("idle-clients", 0, "idle connections for the memory scenario (0: 10,000; 1,000 with -quick)")
	stormN := fs.Int("storm-clients", 0, "clients for the storm scenario (0: 5,000; 500 with -quick)")
	backlog := fs.Int("backlog", 0, "messages for the recovery scenario (0: 100,000; 10,000 with -quick)")
	pipeLines := fs.Int("pipe-lines", 0, "lines of 256 B for the pipe scenario (0: 200,000; 20,000 with -quick)")
	fanoutN := fs.Int("fanout-clients", 0, "recipients of each fan-out (0: 10,000; 1,000 with -quick)")
	offlineN := fs.Int("offline-clients", 0, "offline clients holding 10 pushes each (0: 100,000; 10,000 with -quick)")
	cli := fs.String("cli", "", "wsreliable executable for the pipe scenario (default: this program)")
	dir := fs.String("dir", "", "directory for temporary store files (default: the system temp dir); put it on the disk you mean to measure")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "wsreliable bench: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	if *duration < 0 || *idle < 0 || *stormN < 0 || *backlog < 0 || *pipeLines < 0 || *fanoutN < 0 || *offlineN < 0 {
		fmt.Fprintln(stderr, "wsreliable bench: -duration, -idle-clients, -storm-clients, -backlog, -pipe-lines, -fanout-clients and -offline-clients must not be negative")
		return 2
	}
	want := map[string]bool{}
	for s := range strings.SplitSeq(*scenarios, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(allScenarios, s) {
			fmt.Fprintf(stderr, "wsreliable bench: unknown scenario %q (want some of %s)\n", s, strings.Join(allScenarios, ","))
			return 2
		}
		want[s] = true
	}
	pick := func(v, full, short int) int {
		switch {
		case v > 0:
			return v
		case *quick:
			return short
		}
		return full
	}
	d := *duration
	if d == 0 {
		d = 3 * time.Second
		if *quick {
			d = 300 * time.Millisecond
		}
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintf(stderr, "wsreliable bench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "wsreliable bench: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}

	rn := runner{
		ctx: ctx, log: stderr, dir: *dir, d: d,
		launcher: launcherFor(args, stderr),
		report:   &Report{Command: strings.TrimSpace("wsreliable bench " + strings.Join(args, " ")), Machine: ThisMachine(), Duration: d},
	}
	start := time.Now()
	fmt.Fprintf(stderr, "wsreliable bench: %s\n", rn.report.Machine)
	if want["throughput"] || want["latency"] {
		rn.throughput(!want["throughput"])
	}
	if want["latency"] {
		rn.latency()
	}
	if want["memory"] {
		rn.memory(pick(*idle, 10_000, 1_000))
	}
	if want["recovery"] {
		rn.recovery(pick(*backlog, 100_000, 10_000))
	}
	if want["storm"] {
		hz := 2 * time.Second
		if *quick {
			hz = 500 * time.Millisecond
		}
		rn.storm(pick(*stormN, 5_000, 500), hz)
	}
	if want["pipe"] {
		rn.pipe(pick(*pipeLines, 200_000, 20_000), *cli)
	}
	if want["push"] {
		rn.push()
	}
	if want["fanout"] {
		rn.fanout(pick(*fanoutN, 10_000, 1_000))
	}
	if want["offline"] {
		rn.offline(pick(*offlineN, 100_000, 10_000))
	}
	rn.report.Took = time.Since(start)
	if ctx.Err() != nil {
		fmt.Fprintf(stderr, "wsreliable bench: interrupted: %v\n", ctx.Err())
		return 1
	}

	chartRef := ""
	if *chart != "" {
		if err := writeFile(*chart, rn.report.WriteSVG); err != nil {
			fmt.Fprintf(stderr, "wsreliable bench: %v\n", err)
			return 1
		}
		chartRef = *chart
		if *out != "" {
			if rel, err := filepath.Rel(filepath.Dir(*out), *chart); err == nil {
				chartRef = filepath.ToSlash(rel)
			}
		}
	}
	if err := rn.report.WriteMarkdown(stdout, ""); err != nil {
		return 1
	}
	if *out != "" {
		if err := writeFile(*out, func(w io.Writer) error { return rn.report.WriteMarkdown(w, chartRef) }); err != nil {
			fmt.Fprintf(stderr, "wsreliable bench: %v\n", err)
			return 1
		}
	}
	if len(rn.report.Errors) > 0 {
		fmt.Fprintf(stderr, "wsreliable bench: %d scenario(s) FAILED\n", len(rn.report.Errors))
		return 1
	}
	return 0
}

// launcherFor re-executes this program with the arguments that led to
// Main: os.Args minus the program name and minus args.
func launcherFor(args []string, stderr io.Writer) Launcher {
	prefix := []string{"bench"}
	if n := len(os.Args) - len(args); n >= 1 && slices.Equal(os.Args[n:], args) {
		prefix = slices.Clone(os.Args[1:n])
	}
	return Launcher{Args: prefix, Stderr: stderr}
}

func writeFile(path string, fn func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runner runs the scenarios in order and fills the report; a failed
// scenario is recorded and the next one runs.
type runner struct {
	ctx      context.Context
	log      io.Writer
	dir      string
	d        time.Duration
	launcher Launcher
	report   *Report
}

func (rn *runner) fail(what string, err error) {
	msg := fmt.Sprintf("%s: %v", what, err)
	fmt.Fprintf(rn.log, "  FAILED %s\n", msg)
	rn.report.Errors = append(rn.report.Errors, msg)
}

func (rn *runner) note(msg string) {
	fmt.Fprintf(rn.log, "\n  !!! %s !!!\n\n", msg)
	rn.report.Notes = append(rn.report.Notes, msg)
}

// throughput runs the baseline and both modes for every size and sender
// configuration, interleaved so drift on a noisy machine hits all alike.
// With peakOnly it runs only what the latency scenario needs.
func (rn *runner) throughput(peakOnly bool) {
	fmt.Fprintf(rn.log, "throughput (%v each)\n", rn.d)
	for _, size := range sizes {
		for _, sc := range senderConfigs {
			if peakOnly && (sc.batch > 1 || !latencyConfig(sc.senders, sc.clients)) {
				continue
			}
			if rn.ctx.Err() != nil {
				return
			}
			cfg := Config{Size: size, Senders: sc.senders, Clients: sc.clients, Batch: sc.batch, Duration: rn.d, Dir: rn.dir}
			rn.report.Throughput = append(rn.report.Throughput, rn.row(cfg, !peakOnly))
		}
	}
}

// row runs, for cfg, the baseline (if baseline) and both durability
// modes, logs each and returns them; a failed run is recorded and left
// zero in the row.
func (rn *runner) row(cfg Config, baseline bool) Row {
	var row Row
	name := fmt.Sprintf("%s × %s", sizeName(cfg.Size), senders(cfg))
	if cfg.Push {
		name = "push " + name
	}
	if baseline {
		r, err := Baseline(rn.ctx, cfg)
		if err != nil {
			rn.fail("baseline "+name, err)
		}
		row.Baseline = r
		fmt.Fprintf(rn.log, "  %-28s gorilla  %12s msgs/s %8s MB/s\n", name, rate(r.MsgsPerSec()), mbps(r))
	}
	for _, durable := range []bool{false, true} {
		c := cfg
		c.Durable = durable
		settleDisk()
		r, err := Throughput(rn.ctx, c)
		if err != nil {
			rn.fail(c.Mode()+" "+name, err)
			r = Result{Config: r.Config}
		}
		if durable {
			row.Durable = r
		} else {
			row.NoSync = r
		}
		fmt.Fprintf(rn.log, "  %-28s %-8s %12s msgs/s %8s MB/s  ratio %s\n", name, c.Mode(), rate(r.MsgsPerSec()), mbps(r), ratio(r, row.Baseline))
	}
	row.Baseline.Config.Size, row.Baseline.Config.Senders, row.Baseline.Config.Clients = cfg.Size, cfg.Senders, cfg.Clients
	row.Baseline.Config.Batch, row.Baseline.Config.Push = cfg.Batch, cfg.Push
	return row
}

// latencyConfig reports whether the latency scenario runs a sender
// configuration.
func latencyConfig(senders, clients int) bool { return clients == 1 && senders <= 16 }

// peak returns the measured msgs/s for a configuration, 0 if unknown.
func (rn *runner) peak(size, senders, clients int, durable bool) float64 {
	for _, row := range rn.report.Throughput {
		if c := row.Baseline.Config; c.Size == size && c.Senders == senders && c.Clients == clients && c.Batch <= 1 {
			if durable {
				return row.Durable.MsgsPerSec()
			}
			return row.NoSync.MsgsPerSec()
		}
	}
	return 0
}

func (rn *runner) latency() {
	fmt.Fprintf(rn.log, "latency (%v each)\n", rn.d)
	for _, durable := range []bool{true, false} {
		for _, size := range sizes {
			if rn.ctx.Err() != nil {
				return
			}
			mode := Config{Durable: durable}.Mode()
			settleDisk()
			un, err := Latency(rn.ctx, LatencyConfig{Size: size, Durable: durable, Duration: rn.d, Dir: rn.dir})
			if err != nil {
				rn.fail(fmt.Sprintf("unloaded latency %s %s", mode, sizeName(size)), err)
			}
			fmt.Fprintf(rn.log, "  %-8s %-7s unloaded          p50 %s p99 %s (%d msgs)\n", mode, sizeName(size), ms(un.P50), ms(un.P99), un.Messages)
			for _, sc := range senderConfigs {
				if sc.batch > 1 || !latencyConfig(sc.senders, sc.clients) {
					continue
				}
				pk := rn.peak(size, sc.senders, sc.clients, durable)
				row := LatencyRow{Peak: pk, Unloaded: un}
				row.Loaded.Config = LatencyConfig{Size: size, Durable: durable, Senders: sc.senders, Clients: sc.clients}
				if pk == 0 {
					rn.fail(fmt.Sprintf("loaded latency %s %s × %d", mode, sizeName(size), sc.senders), errors.New("no peak throughput measured"))
					rn.report.Latency = append(rn.report.Latency, row)
					continue
				}
				settleDisk()
				l, err := Latency(rn.ctx, LatencyConfig{
					Size: size, Durable: durable, Senders: sc.senders, Clients: sc.clients,
					Rate: pk / 2, Duration: rn.d, Dir: rn.dir,
				})
				if err != nil {
					rn.fail(fmt.Sprintf("loaded latency %s %s × %d", mode, sizeName(size), sc.senders), err)
				}
				row.Loaded = l
				row.Loaded.Config.Senders, row.Loaded.Config.Rate = sc.senders, pk/2
				fmt.Fprintf(rn.log, "  %-8s %-7s %2d senders @%8s p50 %s p99 %s (achieved %s msgs/s)\n", mode, sizeName(size), sc.senders, rate(pk/2), ms(l.P50), ms(l.P99), rate(l.Achieved))
				rn.report.Latency = append(rn.report.Latency, row)
			}
		}
	}
}

func (rn *runner) memory(n int) {
	fmt.Fprintf(rn.log, "idle memory (%d connections)\n", n)
	for _, sys := range []string{"gorilla", "wsreliable"} {
		if rn.ctx.Err() != nil {
			return
		}
		m, err := IdleMemory(rn.ctx, MemoryConfig{System: sys, Clients: n, Launcher: rn.launcher, Dir: rn.dir})
		for _, note := range m.Notes {
			rn.note(fmt.Sprintf("memory %s: %s", sys, note))
		}
		if err != nil {
			rn.fail("memory "+sys, err)
			continue
		}
		fmt.Fprintf(rn.log, "  %-10s %d conns: RSS %s → %s, %s per connection\n", sys, m.Conns, bytesName(m.RSSBefore), bytesName(m.RSSAfter), bytesName(int64(m.PerConn())))
		rn.report.Memory = append(rn.report.Memory, m)
	}
}

func (rn *runner) recovery(n int) {
	fmt.Fprintf(rn.log, "recovery (%d messages)\n", n)
	settleDisk()
	r, err := Recovery(rn.ctx, RecoveryConfig{Messages: n, Size: 256, Durable: true, Dir: rn.dir})
	if err != nil {
		rn.fail("recovery", err)
		return
	}
	rn.report.Recovery = &r
	rn.report.SteadyRate = rn.peak(256, 16, 1, true)
	fmt.Fprintf(rn.log, "  drained in %s (session after %s), %s msgs/s; file %s → %s\n", ms(r.Drain), ms(r.Connect), rate(r.DrainRate()), bytesName(r.FileBefore), bytesName(r.FileAfter))
}

func (rn *runner) storm(n int, healthy time.Duration) {
	fmt.Fprintf(rn.log, "reconnect storm (%d clients)\n", n)
	s, err := Storm(rn.ctx, StormConfig{Clients: n, Durable: true, HealthyAfter: healthy, Launcher: rn.launcher, Dir: rn.dir})
	for _, note := range s.Notes {
		rn.note("storm: " + note)
	}
	if err != nil {
		rn.fail("storm", err)
		return
	}
	rn.report.Storm = &s
	fmt.Fprintf(rn.log, "  down %s; all reconnected after %s, caught up after %s; %d failed handshakes, %d refused\n", ms(s.Down), ms(s.Reconnected), ms(s.CaughtUp), s.FailedHandshakes, s.Refused)
}

// push runs server-to-client push against raw gorilla in that direction:
// 256 B, 16 goroutines calling Server.Send for one client, and the same
// with Server.SendBatch of 64 (as the client→server matrix's ×64 row).
func (rn *runner) push() {
	fmt.Fprintf(rn.log, "push (%v each)\n", rn.d)
	for _, batch := range []int{1, 64} {
		rn.report.Push = append(rn.report.Push, rn.row(Config{Size: 256, Senders: 16, Batch: batch, Push: true, Duration: rn.d, Dir: rn.dir}, true))
	}
}

func (rn *runner) fanout(n int) {
	fmt.Fprintf(rn.log, "fan-out (%d clients)\n", n)
	settleDisk()
	f, err := Fanout(rn.ctx, FanoutConfig{Clients: n, Launcher: rn.launcher, Dir: rn.dir})
	for _, note := range f.Notes {
		rn.note("fanout: " + note)
	}
	if err != nil {
		rn.fail("fanout", err)
		return
	}
	rn.report.Fanout = &f
	for i, r := range f.Online {
		fmt.Fprintf(rn.log, "  #%d connected: committed %s, all handled %s, all acked %s\n", i+1, ms(r.Commit), ms(r.Delivered), ms(r.Settled))
	}
	for i, d := range f.Offline {
		fmt.Fprintf(rn.log, "  #%d offline:   committed %s\n", i+1, ms(d))
	}
}

func (rn *runner) offline(n int) {
	fmt.Fprintf(rn.log, "offline clients (%d)\n", n)
	settleDisk()
	o, err := Offline(rn.ctx, OfflineConfig{Clients: n, Launcher: rn.launcher, Dir: rn.dir})
	if err != nil {
		rn.fail("offline", err)
		return
	}
	rn.report.Offline = &o
	fmt.Fprintf(rn.log, "  %d pushes each: RSS empty %s, with the pushes %s (%.2f×), after %s idle %s (%.2f×), reopened %s (%.2f×); queued in %s; file %s; control (all acknowledged, idle) %s (%.2f× its empty, held ÷ control %.2f×)\n",
		o.Config.Pushes, bytesName(o.Empty.RSS), bytesName(o.Loaded.RSS), o.LoadedRatio(), o.Config.Idle, bytesName(o.Idle.RSS), o.IdleRatio(),
		bytesName(o.Reopened.RSS), o.ReopenedRatio(), ms(o.Fill), bytesName(o.FileSize), bytesName(o.Drained.RSS), o.DrainedRatio(), o.HeldRatio())
}

func (rn *runner) pipe(lines int, cli string) {
	fmt.Fprintf(rn.log, "CLI pipe (%d lines)\n", lines)
	settleDisk()
	r, err := Pipe(rn.ctx, PipeConfig{Lines: lines, CLI: cli, Dir: rn.dir}, rn.launcher)
	if err != nil {
		rn.fail("pipe", err)
		return
	}
	rn.report.Pipe = &r
	fmt.Fprintf(rn.log, "  raw gorilla %s (%s lines/s), wsreliable %s (%s lines/s), ratio %.2f\n",
		ms(r.Raw.Took), rate(r.Raw.LinesPerSec()), ms(r.Ours.Took), rate(r.Ours.LinesPerSec()), r.Ratio())
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
