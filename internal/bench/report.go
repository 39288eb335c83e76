package bench

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"time"
)

// Machine describes where a report was produced.
type Machine struct {
	CPUs      int       // runtime.NumCPU (nproc)
	CPU       string    // model name from /proc/cpuinfo
	Kernel    string    // uname -r
	OS, Arch  string    // runtime.GOOS, runtime.GOARCH
	GoVersion string    // runtime.Version
	Date      time.Time // when ThisMachine was called
}

// ThisMachine describes the running machine.
func ThisMachine() Machine {
	m := Machine{
		CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		GoVersion: runtime.Version(), Date: time.Now(), CPU: "unknown", Kernel: "unknown",
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return m
}

// String describes the machine in one line, for the report's header.
func (m Machine) String() string {
	return fmt.Sprintf("%d CPUs (%s), Linux kernel %s, %s/%s, %s", m.CPUs, m.CPU, m.Kernel, m.OS, m.Arch, m.GoVersion)
}

// Row compares one sender configuration across the baseline and both
// durability modes. A zero Result means that run failed or did not run.
type Row struct {
	Baseline, NoSync, Durable Result // raw gorilla; ours without fsync; ours with fsync
}

// Ratio returns ours/baseline in messages per second, 0 if unknown.
func Ratio(ours, baseline Result) float64 {
	if baseline.MsgsPerSec() == 0 {
		return 0
	}
	return ours.MsgsPerSec() / baseline.MsgsPerSec()
}

// LatencyRow holds, for one mode, size and sender configuration, the
// unloaded latency and the latency at half the measured peak.
type LatencyRow struct {
	Peak     float64       // peak msgs/s the load was derived from
	Unloaded LatencyResult // one message at a time
	Loaded   LatencyResult // paced at half of Peak
}

// Report is everything one benchmark run measured.
type Report struct {
	Command    string          // the command line that produced it
	Machine    Machine         // where it ran
	Took       time.Duration   // the whole run
	Duration   time.Duration   // per throughput and latency measurement
	Throughput []Row           // client to server, one row per size and sender configuration
	Latency    []LatencyRow    // one row per mode, size and sender configuration
	Memory     []MemoryResult  // idle connections, raw gorilla and ours
	Recovery   *RecoveryResult // nil when the scenario did not run
	// SteadyRate is the steady-state rate the recovery drain is compared
	// with (durable, same size, 16 senders on one client).
	SteadyRate float64
	Storm      *StormResult   // nil when the scenario did not run
	Pipe       *PipeResult    // nil when the scenario did not run
	Push       []Row          // server-to-client push, with its baseline
	Fanout     *FanoutResult  // nil when the scenario did not run
	Offline    *OfflineResult // nil when the scenario did not run
	Notes      []string       // remarks the scenarios made, printed with the report
	Errors     []string       // scenarios that failed, with their errors
}

func rate(v float64) string {
	switch {
	case v == 0:
		return "–"
	case v >= 100:
		return groupDigits(int64(math.Round(v)))
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

func groupDigits(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func mbps(r Result) string {
	if r.Messages == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", r.MBPerSec())
}

func ratio(ours, base Result) string {
	x := Ratio(ours, base)
	switch {
	case x == 0 || ours.Messages == 0:
		return "–"
	case x < 0.01:
		return fmt.Sprintf("%.4f", x)
	default:
		return fmt.Sprintf("%.3f", x)
	}
}

func ms(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func sizeName(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

func bytesName(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 10<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func senders(c Config) string {
	s := fmt.Sprint(c.Senders)
	if c.Clients > 1 {
		s = fmt.Sprintf("%d (%d clients)", c.Senders, c.Clients)
	}
	if c.Batch > 1 {
		s += fmt.Sprintf(", SendBatch of %d", c.Batch)
	}
	return s
}

// WriteMarkdown writes the report as Markdown. chart, if not empty, is
// the path of the SVG chart relative to the Markdown file.
func (r *Report) WriteMarkdown(w io.Writer, chart string) error {
	b := &strings.Builder{}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("# Benchmarks\n\n")
	p("Produced by `%s` in %v on %s, %s.\n\n", r.Command, r.Took.Round(time.Second), r.Machine.Date.Format("2006-01-02 15:04 MST"), r.Machine)
	p("Everything runs on 127.0.0.1 on one shared, noisy machine; treat differences under ~20%% as noise. ")
	p("The baseline is raw gorilla/websocket, one-way, one WebSocket message per payload, no acknowledgement and no disk, measured in the same run just before ours. ")
	p("\"durable\" fsyncs every group commit on the client and the server's watermark commits (the default); \"nosync\" sets NoSync on both. ")
	p("A wsreliable message counts once the server has acknowledged it. Each measurement ran for %v, after a sync(2), so that the writeback of an earlier run's files does not land in its fsyncs.\n\n", r.Duration)
	if chart != "" {
		p("![Throughput by mode and size](%s)\n\n", chart)
	}
	for _, e := range r.Errors {
		p("**FAILED:** %s\n\n", e)
	}
	for _, n := range r.Notes {
		p("**NOTE:** %s\n\n", n)
	}
	if len(r.Throughput) > 0 {
		p("## Throughput\n\n")
		p("\"Senders\" are goroutines calling `Client.Send` in a loop on one client (or on as many clients as stated, one goroutine each). `Send` returns only after its group commit, so with fsync the rate is bounded by commit latency × messages per commit. The ratio is ours ÷ baseline in messages/s. The 256-sender rows show how far the group commit scales when more `Send` calls wait on it.\n\n")
		writeRows(b, r.Throughput)
	}
	if len(r.Latency) > 0 {
		p("## Send → ack latency\n\n")
		p("Unloaded: one message at a time, from `Send` to the receipt settling (client commit, network, handler, server watermark commit, ack). Loaded: paced at half the peak measured above for the same mode, size and senders; latency counts from each message's scheduled send time.\n\n")
		p("| mode | size | senders | unloaded p50 | unloaded p99 | peak msgs/s | offered msgs/s | achieved msgs/s | loaded p50 | loaded p99 | loaded max |\n")
		p("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, l := range r.Latency {
			c := l.Loaded.Config
			mode := "nosync"
			if c.Durable {
				mode = "durable"
			}
			p("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", mode, sizeName(c.Size), c.Senders,
				ms(l.Unloaded.P50), ms(l.Unloaded.P99), rate(l.Peak), rate(c.Rate), rate(l.Loaded.Achieved),
				ms(l.Loaded.P50), ms(l.Loaded.P99), ms(l.Loaded.Max))
		}
		p("\n")
	}
	if len(r.Memory) > 0 {
		p("## Idle memory\n\n")
		p("Each server runs in a child process of its own (a fresh heap: nothing else this benchmark did is in its RSS), the clients in another (a process may hold only so many descriptors). VmRSS is read from /proc/self/status after a GC and debug.FreeOSMemory, before the clients connect and after they sat idle; \"no GC\" is the same moment read before the GC.\n\n")
		p("| server | connections | RSS before | RSS after | RSS after (no GC) | per connection | client process RSS |\n")
		p("|---|--:|--:|--:|--:|--:|--:|\n")
		var raw float64
		for _, m := range r.Memory {
			if m.Config.System == "gorilla" {
				raw = m.PerConn()
			}
		}
		for _, m := range r.Memory {
			per := bytesName(int64(m.PerConn()))
			if m.Config.System != "gorilla" && raw > 0 {
				per += fmt.Sprintf(" (%.1f× gorilla)", m.PerConn()/raw)
			}
			p("| %s | %s | %s | %s | %s | %s | %s |\n", m.Config.System, groupDigits(int64(m.Conns)),
				bytesName(m.RSSBefore), bytesName(m.RSSAfter), bytesName(m.RSSAfterNoGC), per, bytesName(m.ClientRSS))
		}
		for _, m := range r.Memory {
			for _, n := range m.Notes {
				p("\n**NOTE (%s):** %s\n", m.Config.System, n)
			}
		}
		p("\n")
	}
	if rc := r.Recovery; rc != nil {
		c := rc.Config
		p("## Recovery\n\n")
		p("%s messages of %s queued by one client while no server listened (queued with NoSync: the fill is not the measurement), then the server started; the client drains with %s and a reconnect backoff capped at %v.\n\n",
			groupDigits(int64(c.Messages)), sizeName(c.Size), modeName(c.Durable), c.BackoffMax)
		p("| backlog | server start → session | server start → all acked | drain rate msgs/s | steady-state msgs/s | drain ÷ steady | queue file before | after |\n")
		p("|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		steady, vs := "–", "–"
		if r.SteadyRate > 0 {
			steady = rate(r.SteadyRate)
			vs = fmt.Sprintf("%.2f", rc.DrainRate()/r.SteadyRate)
		}
		p("| %s | %s | %s | %s | %s | %s | %s | %s |\n\n", groupDigits(int64(c.Messages)), ms(rc.Connect), ms(rc.Drain),
			rate(rc.DrainRate()), steady, vs, bytesName(rc.FileBefore), bytesName(rc.FileAfter))
		p("Steady state is the durable %s throughput with 16 senders on one client from the table above. The drain rate counts from the session's start.\n\n", sizeName(c.Size))
	}
	if s := r.Storm; s != nil {
		p("## Reconnect storm\n\n")
		p("%s clients (one child process, in-memory client stores: the server is under test) connected with HealthyAfter %v and each acknowledged once; then the server was closed (going-away) and started again on the same port and store while every client queued one message. Clients use the default backoff (100 ms doubling to 30 s, full jitter).\n\n",
			groupDigits(int64(s.Config.Clients)), s.Config.HealthyAfter)
		p("| clients | server down | restart → all reconnected | restart → all caught up | failed handshakes | refused dials |\n")
		p("|--:|--:|--:|--:|--:|--:|\n")
		p("| %s | %s | %s | %s | %d | %d |\n\n", groupDigits(int64(s.Config.Clients)), ms(s.Down), ms(s.Reconnected), ms(s.CaughtUp), s.FailedHandshakes, s.Refused)
		p("Refused dials are attempts that found no listener: they are counted from just before the new server starts, and the server opens its store before it listens. Failed handshakes are every other failed attempt (timeouts, HTTP errors, try-again-later).\n\n")
		for msg, n := range s.Errors {
			p("- %d× `%s`\n", n, msg)
		}
		for _, n := range s.Notes {
			p("\n**NOTE:** %s\n", n)
		}
		p("\n")
	}
	if pr := r.Pipe; pr != nil {
		c := pr.Config
		p("## CLI as a pipe\n\n")
		p("%s lines of %s (plus newline) from a file into the sender's stdin, out of the receiver's stdout as one JSON line each (`{\"client\",\"id\",\"seq\",\"payload\"}`, the same bytes for both). Timed from the sender's start until it exited and every line had come out; the output is checked line by line (each input line once, in order). wsreliable: `wsreliable send -url … -data …` into `wsreliable serve` (fsync on both sides, the default; send queues the lines it has read with one SendBatch per round, serve writes a client's lines before each watermark commit). Raw: a gorilla client writing one message per line into a gorilla server that prints each, flushing when no message waits; no acknowledgement, no disk.\n\n",
			groupDigits(int64(c.Lines)), sizeName(c.Size))
		p("| pipe | lines | time | lines/s | MB/s (input) | ratio |\n")
		p("|---|--:|--:|--:|--:|--:|\n")
		for _, x := range []struct {
			name string
			run  PipeRun
		}{{"raw gorilla", pr.Raw}, {"wsreliable send \\| serve", pr.Ours}} {
			ratio := "1"
			if x.run != pr.Raw {
				ratio = fmt.Sprintf("%.3f", pr.Ratio())
			}
			p("| %s | %s | %s | %s | %.2f | %s |\n", x.name, groupDigits(int64(x.run.Lines)), ms(x.run.Took),
				rate(x.run.LinesPerSec()), x.run.LinesPerSec()*float64(c.Size+1)/1e6, ratio)
		}
		p("\n")
	}
	if len(r.Push) > 0 {
		p("## Server → client push\n\n")
		p("\"Senders\" are goroutines calling `Server.Send` in a loop for one connected client, whose `ClientOptions.Handler` counts the pushes (and fails the run on a duplicate or a gap). `Send` returns once the push is committed to the server's store; a push counts once its receipt settled as acknowledged (the client handled it and committed its watermark). The baseline is raw gorilla/websocket in the same direction: the server writes one message per payload, the client reads. The project's target is a durable ratio of at least %.1f.\n\n", pushTarget)
		writeRows(b, r.Push)
		for _, row := range r.Push {
			if x := Ratio(row.Durable, row.Baseline); x > 0 {
				met := "meets"
				if x < pushTarget {
					met = "**misses**"
				}
				p("Durable %s × %s: %.3f× raw gorilla, which %s the target.\n\n", sizeName(row.Baseline.Config.Size), senders(row.Baseline.Config), x, met)
			}
		}
	}
	if f := r.Fanout; f != nil {
		c := f.Config
		p("## Fan-out\n\n")
		p("One message of %s to %s clients with one `Server.SendMany` (one durable commit for all copies; fsync on, the default), %d times in a row to the same clients. The connected clients run in a child process with in-memory stores (the server is under test) and take pushes in their `Handler`; times run from the `SendMany` call until it returned (it returns after the commit and after waking each connected recipient's session), until the last client's Handler had its copy, and until every receipt settled as acknowledged. Then the same fan-out to as many clients that are not connected, where the commit is all there is. Every client is checked to have handled each fan-out once and in order, and afterwards the store to hold exactly the offline clients' pushes.\n\n",
			sizeName(c.Size), groupDigits(int64(c.Clients)), c.Rounds)
		p("| recipients | fan-out | SendMany → committed | → every Handler had it | → every receipt acked |\n")
		p("|---|--:|--:|--:|--:|\n")
		for i, o := range f.Online {
			p("| %s connected | #%d | %s | %s | %s |\n", groupDigits(int64(c.Clients)), i+1, ms(o.Commit), ms(o.Delivered), ms(o.Settled))
		}
		for i, d := range f.Offline {
			p("| %s offline | #%d | %s | – | – |\n", groupDigits(int64(c.Clients)), i+1, ms(d))
		}
		p("\nStore file afterwards (holding the offline clients' %s pushes): %s.\n\n", groupDigits(int64(c.Clients*len(f.Offline))), bytesName(f.FileSize))
		for _, n := range f.Notes {
			p("**NOTE:** %s\n\n", n)
		}
	}
	if o := r.Offline; o != nil {
		c := o.Config
		p("## Offline clients\n\n")
		p("A server in a child process of its own queued %d pushes of %s for each of %s clients that never connect (%s pushes, `SendMany` to %s clients at a time, fsync on) in %s (%s pushes/s); the store file then held %s. Memory is read from /proc/self/status after a GC and debug.FreeOSMemory: on the empty store, in the same process right after the pushes and again after it sat idle for %s, and in a fresh server process opened on the full store. RssFile counts the pages of bbolt's memory-mapped file that the process touched, and the executable's own pages, which vary by a few MiB from one process to the next; RssAnon is the steadier measure of what the server allocated. A store that has not been written to for 5 s (and one under load once its commits have written 64 MiB of pages, or every minute) releases the pages of its map (madvise `MADV_DONTNEED`): they stay in the kernel's page cache, which reclaims them first, as it would for a server reading its file with pread; the next read maps in again what it needs. The design's promise is that offline clients cost disk, not memory; the target is an RSS within %.0f%% of the empty server's. The store is checked afterwards to hold every push, in order.\n\n",
			c.Pushes, sizeName(c.Size), groupDigits(int64(c.Clients)), groupDigits(int64(c.Clients*c.Pushes)), groupDigits(int64(c.Chunk)),
			ms(o.Fill), rate(float64(c.Clients*c.Pushes)/o.Fill.Seconds()), bytesName(o.FileSize), c.Idle, (offlineTarget-1)*100)
		idle := fmt.Sprintf("after %s idle", c.Idle)
		p("Then, for control, a second server process on a store of its own queued the same pushes and had them all acknowledged (`AckOutbox` for every client, as their sessions would on coming back: %s), and sat idle as long: nothing held. Its history is the first's plus the drain (the deletes, and the compaction they start), so it is the server whose offline clients all came back rather than a pure control. Against it, the first process says what holding the pushes costs; each against its own empty store says what its history left behind (the Go runtime keeps the bookkeeping of the heap it once had: in-use heap is back to the empty store's).\n\n", ms(o.Drain))
		p("| server | RSS | RssAnon | RssFile | Go heap in use | against | RSS ratio | RssAnon ratio | target (RSS) |\n")
		p("|---|--:|--:|--:|--:|---|--:|--:|---|\n")
		for _, x := range []struct {
			name, against string
			m, base       MemSample
			target        bool
		}{
			{name: "empty store", m: o.Empty},
			{"right after queueing the pushes (same process)", "empty store", o.Loaded, o.Empty, false},
			{"the same process " + idle, "empty store", o.Idle, o.Empty, false},
			{"the same process " + idle, "control " + idle, o.Idle, o.Drained, true},
			{"fresh process on the full store", "empty store", o.Reopened, o.Empty, true},
			{name: "control: empty store", m: o.DrainedEmpty},
			{"control: pushes queued, all acknowledged, " + idle, "control: empty store", o.Drained, o.DrainedEmpty, false},
		} {
			ratio, anon, met := "", "", ""
			if x.against != "" {
				r := memRatio(x.m, x.base)
				ratio = fmt.Sprintf("%.2f", r)
				if x.base.Anon > 0 {
					anon = fmt.Sprintf("%.2f", float64(x.m.Anon)/float64(x.base.Anon))
				}
				switch {
				case !x.target:
				case r <= offlineTarget:
					met = "met"
				default:
					met = "**missed**"
				}
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", x.name, bytesName(x.m.RSS), bytesName(x.m.Anon), bytesName(x.m.File), bytesName(x.m.Heap), x.against, ratio, anon, met)
		}
		p("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Targets the report checks figures against.
const (
	pushTarget    = 0.5  // durable push ÷ raw gorilla push, at least
	offlineTarget = 1.10 // server RSS with offline clients' pushes ÷ without, at most
)

// writeRows writes a throughput table: the baseline and both modes, with
// their ratios, one line per row.
func writeRows(b *strings.Builder, rows []Row) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("| size | senders | gorilla msgs/s | gorilla MB/s | nosync msgs/s | nosync MB/s | nosync ratio | durable msgs/s | durable MB/s | durable ratio |\n")
	p("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, row := range rows {
		c := row.Baseline.Config
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", sizeName(c.Size), senders(c),
			rate(row.Baseline.MsgsPerSec()), mbps(row.Baseline),
			rate(row.NoSync.MsgsPerSec()), mbps(row.NoSync), ratio(row.NoSync, row.Baseline),
			rate(row.Durable.MsgsPerSec()), mbps(row.Durable), ratio(row.Durable, row.Baseline))
	}
	p("\n")
}

func modeName(durable bool) string {
	if durable {
		return "fsync on both sides"
	}
	return "NoSync on both sides"
}

// WriteSVG writes a grouped bar chart of messages per second (log scale)
// by size and senders, one bar each for the baseline, nosync and durable.
func (r *Report) WriteSVG(w io.Writer) error {
	series := []struct {
		name, color string
		get         func(Row) Result
	}{
		{"gorilla (baseline, no ack, no disk)", "#9e9e9e", func(r Row) Result { return r.Baseline }},
		{"wsreliable nosync", "#4c78a8", func(r Row) Result { return r.NoSync }},
		{"wsreliable durable (fsync)", "#e45756", func(r Row) Result { return r.Durable }},
	}
	lo, hi := math.Inf(1), 0.0
	for _, row := range r.Throughput {
		for _, s := range series {
			if v := s.get(row).MsgsPerSec(); v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if hi == 0 {
		lo, hi = 1, 10
	}
	dLo, dHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dHi <= dLo {
		dHi = dLo + 1
	}
	const (
		barW, barGap, groupGap = 34, 4, 26
		left, top, plotH       = 70, 70, 320
		bottom                 = 70
	)
	groupW := len(series)*(barW+barGap) - barGap
	width := left + len(r.Throughput)*(groupW+groupGap) + 20
	width = max(width, 560)
	height := top + plotH + bottom
	y := func(v float64) float64 {
		return top + plotH - (math.Log10(v)-dLo)/(dHi-dLo)*plotH
	}
	b := &strings.Builder{}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	esc := html.EscapeString
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%d" y="20" font-size="15" font-weight="bold">Throughput, messages/s (log scale), higher is better</text>`+"\n", left)
	p(`<text x="%d" y="36" fill="#555">%s — %s</text>`+"\n", left, esc(r.Machine.String()), esc(r.Machine.Date.Format("2006-01-02")))
	x := left
	for _, s := range series {
		p(`<rect x="%d" y="46" width="12" height="12" fill="%s"/><text x="%d" y="56">%s</text>`+"\n", x, s.color, x+16, esc(s.name))
		x += 16 + 7*len(s.name) + 20
	}
	for d := dLo; d <= dHi; d++ {
		yy := y(math.Pow(10, d))
		p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, width-10, yy, yy)
		p(`<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", left-6, yy+4, short(math.Pow(10, d)))
	}
	p(`<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>`+"\n", left, width-10, top+plotH, top+plotH)
	for g, row := range r.Throughput {
		gx := left + groupGap/2 + g*(groupW+groupGap)
		for i, s := range series {
			v := s.get(row).MsgsPerSec()
			x := gx + i*(barW+barGap)
			if v <= 0 {
				p(`<text x="%d" y="%d" text-anchor="middle" fill="#999">n/a</text>`+"\n", x+barW/2, top+plotH-4)
				continue
			}
			yy := y(v)
			p(`<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s: %s msgs/s</title></rect>`+"\n",
				x, yy, barW, float64(top+plotH)-yy, s.color, esc(s.name), rate(v))
			p(`<text x="%d" y="%.1f" text-anchor="middle" font-size="9">%s</text>`+"\n", x+barW/2, yy-3, short(v))
		}
		c := row.Baseline.Config
		cx := gx + groupW/2
		p(`<text x="%d" y="%d" text-anchor="middle" font-weight="bold">%s</text>`+"\n", cx, top+plotH+16, sizeName(c.Size))
		label := fmt.Sprintf("%d sender", c.Senders)
		if c.Senders > 1 {
			label += "s"
		}
		if c.Batch > 1 {
			label += fmt.Sprintf(" ×%d", c.Batch)
		}
		p(`<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", cx, top+plotH+30, label)
		if c.Clients > 1 {
			p(`<text x="%d" y="%d" text-anchor="middle">%d clients</text>`+"\n", cx, top+plotH+44, c.Clients)
		}
	}
	p("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// short formats v as 1.2k, 34k, 1.5M.
func short(v float64) string {
	switch {
	case v >= 1e6:
		return trimZero(fmt.Sprintf("%.1f", v/1e6)) + "M"
	case v >= 1e3:
		if v >= 1e4 {
			return fmt.Sprintf("%.0fk", v/1e3)
		}
		return trimZero(fmt.Sprintf("%.1f", v/1e3)) + "k"
	}
	return fmt.Sprintf("%.0f", v)
}

func trimZero(s string) string { return strings.TrimSuffix(s, ".0") }
