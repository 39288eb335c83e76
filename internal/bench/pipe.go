package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// PipeConfig describes the CLI pipe scenario: Lines lines of Size bytes
// piped into `wsreliable send`, delivered by `wsreliable serve` to its
// stdout, against a raw gorilla pipe that reads, carries and prints the
// same lines.
type PipeConfig struct {
	// Lines is the number of input lines. Zero: 200,000.
	Lines int
	// Size is the length of each line, newline excluded. Zero: 256.
	Size int
	// CLI is the wsreliable executable whose serve and send commands are
	// measured. Empty: this program, which must then be wsreliable.
	CLI string
	// Timeout bounds each of the two runs. Zero: 5 minutes.
	Timeout time.Duration
	// Dir holds the input file and the stores. Empty: os.TempDir().
	Dir string
}

// PipeRun is one pipe's measurement.
type PipeRun struct {
	// Took runs from the sending process's start until it exited and
	// every line had come out of the receiving process.
	Took time.Duration
	// Lines is how many lines came out, counted after the receiver was
	// stopped: exactly Config.Lines, or the run would have failed.
	Lines int
}

// LinesPerSec is the input lines per second of the run.
func (r PipeRun) LinesPerSec() float64 {
	if r.Took <= 0 {
		return 0
	}
	return float64(r.Lines) / r.Took.Seconds()
}

// PipeResult compares the raw gorilla pipe with wsreliable's.
type PipeResult struct {
	Config PipeConfig // the configuration run, defaults filled in
	Raw    PipeRun    // the raw gorilla pipe
	Ours   PipeRun    // wsreliable send into wsreliable serve
}

// Ratio is ours ÷ raw in lines per second.
func (r PipeResult) Ratio() float64 {
	if r.Raw.LinesPerSec() == 0 {
		return 0
	}
	return r.Ours.LinesPerSec() / r.Raw.LinesPerSec()
}

// Pipe runs the raw pipe, then wsreliable's, on the same input. Both
// receivers print one JSON line per message in serve's format, and both
// are checked to print every input line once, in order.
func Pipe(ctx context.Context, cfg PipeConfig, l Launcher) (PipeResult, error) {
	if cfg.Lines == 0 {
		cfg.Lines = 200_000
	}
	if cfg.Size == 0 {
		cfg.Size = 256
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Minute
	}
	res := PipeResult{Config: cfg}
	if cfg.Lines < 0 || cfg.Size < 9 {
		return res, fmt.Errorf("bench: pipe needs lines ≥ 0 and a size of at least 9 bytes (got %d, %d)", cfg.Lines, cfg.Size)
	}
	cli, err := executable(cfg.CLI)
	if err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp(cfg.Dir, "wsreliable-pipe-")
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	input := filepath.Join(dir, "input.txt")
	if err := writeLines(input, cfg.Lines, cfg.Size); err != nil {
		return res, err
	}

	rawServer, err := l.command(ctx, pipeServerMode)
	if err != nil {
		return res, err
	}
	rawClient, err := l.command(ctx, pipeClientMode)
	if err != nil {
		return res, err
	}
	res.Raw, err = runPipe(ctx, cfg, input, rawServer, true, func(url string) *exec.Cmd {
		rawClient.Args = append(rawClient.Args, url)
		return rawClient
	})
	if err != nil {
		return res, fmt.Errorf("bench: raw pipe: %w", err)
	}
	res.Ours, err = runPipe(ctx, cfg, input,
		exec.CommandContext(ctx, cli, "serve", "-listen", "127.0.0.1:0", "-data", filepath.Join(dir, "serve")), false,
		func(url string) *exec.Cmd {
			return exec.CommandContext(ctx, cli, "send", "-url", url, "-data", filepath.Join(dir, "send"))
		})
	if err != nil {
		return res, fmt.Errorf("bench: wsreliable pipe: %w", err)
	}
	return res, nil
}

// writeLines writes n lines of size bytes: an 8-digit line number, then
// filler.
func writeLines(path string, n, size int) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	filler := strings.Repeat("x", size-8)
	for i := range n {
		fmt.Fprintf(w, "%08d%s\n", i%100_000_000, filler)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("bench: %w", err)
	}
	return f.Close()
}

// pipeStopTimeout bounds a receiver's graceful stop.
const pipeStopTimeout = 30 * time.Second

// listenAddr finds the address a receiver logged on its stderr.
var listenAddr = regexp.MustCompile(`addr=(\S+)`)

// runPipe starts server, waits for the address it logs, then times the
// sender (client(url), reading input) until it exits and all lines came
// out of the server. Then it stops the server (closing its stdin, and
// with SIGINT unless stopByEOF) and checks its whole output: every line
// once, in order.
func runPipe(ctx context.Context, cfg PipeConfig, input string, server *exec.Cmd, stopByEOF bool, client func(url string) *exec.Cmd) (PipeRun, error) {
	var run PipeRun
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	// The receiver is stopped gracefully, with SIGINT (serve) or by the
	// end of its stdin (the raw pipe's child, whose exit code a signal
	// would turn into 130).
	server.Cancel = func() error { return server.Process.Signal(os.Interrupt) }
	server.WaitDelay = 10 * time.Second
	stdin, err := server.StdinPipe()
	if err != nil {
		return run, err
	}
	out, err := server.StdoutPipe()
	if err != nil {
		return run, err
	}
	errPipe, err := server.StderrPipe()
	if err != nil {
		return run, err
	}
	if err := server.Start(); err != nil {
		return run, err
	}
	// Count and check the server's output as it comes; after a failed
	// check, keep draining so the server never blocks on a full pipe.
	var checkErr error
	checked := make(chan struct{})
	allOut := make(chan struct{})
	seen := 0
	go func() {
		defer close(checked)
		checkErr = checkLines(out, cfg.Lines, &seen, allOut)
		_, _ = io.Copy(io.Discard, out)
	}()
	// stopServer stops the server (killing it if its output does not end
	// in time) and returns the output check's result and the server's
	// exit. Wait closes the pipes, so it comes last.
	stopServer := sync.OnceValues(func() (error, error) {
		_ = stdin.Close()
		if !stopByEOF {
			_ = server.Process.Signal(os.Interrupt)
		}
		t := time.NewTimer(pipeStopTimeout)
		defer t.Stop()
		select {
		case <-checked:
		case <-t.C:
			_ = server.Process.Kill()
			<-checked
		}
		return checkErr, server.Wait()
	})
	defer stopServer()

	// The server's log: the listening address, then kept for errors.
	addrCh := make(chan string, 1)
	var logBuf syncBuffer
	go func() {
		sc := bufio.NewScanner(errPipe)
		found := false
		for sc.Scan() {
			logBuf.WriteLine(sc.Text())
			if m := listenAddr.FindStringSubmatch(sc.Text()); m != nil && !found {
				found = true
				addrCh <- m[1]
			}
		}
	}()

	var addr string
	select {
	case addr = <-addrCh:
	case <-ctx.Done():
		return run, fmt.Errorf("no listening address logged: %w\n%s", ctx.Err(), logBuf.String())
	}
	in, err := os.Open(input)
	if err != nil {
		return run, err
	}
	defer in.Close()
	snd := client("ws://" + addr + "/ws")
	snd.Stdin = in
	var sndErr bytes.Buffer
	snd.Stderr = &sndErr

	start := time.Now()
	if err := snd.Run(); err != nil {
		return run, fmt.Errorf("sender: %w\n%s\nreceiver's log:\n%s", err, sndErr.String(), logBuf.String())
	}
	select {
	case <-allOut:
	case <-checked:
		// Only an error ends the check before all lines are out.
		cerr, _ := stopServer()
		return run, fmt.Errorf("receiver output: %v\n%s", cerr, logBuf.String())
	case <-ctx.Done():
		return run, fmt.Errorf("waiting for the receiver's output: %w", ctx.Err())
	}
	run.Took = time.Since(start)

	cerr, err := stopServer()
	if err != nil {
		return run, fmt.Errorf("receiver did not stop cleanly: %w\n%s", err, logBuf.String())
	}
	if cerr != nil {
		return run, fmt.Errorf("receiver output: %v", cerr)
	}
	run.Lines = seen
	return run, nil
}

// checkLines reads a receiver's output to its end: line i must carry
// input line i. It closes all once want lines have come, and fails on a
// line out of order, one too many or too few at the end. *seen counts
// lines; it is read only after checkLines returns.
func checkLines(r io.Reader, want int, seen *int, all chan<- struct{}) error {
	br := bufio.NewReaderSize(r, 1<<20)
	var num []byte
	if want == 0 {
		close(all)
	}
	for {
		line, err := br.ReadSlice('\n')
		if err == io.EOF && len(line) == 0 {
			if *seen != want {
				return fmt.Errorf("%d lines, want %d", *seen, want)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if *seen >= want {
			return fmt.Errorf("line %d: more lines than the %d sent: %.80s", *seen+1, want, line)
		}
		num = fmt.Appendf(num[:0], "%08d", *seen%100_000_000)
		if !bytes.Contains(line, num) {
			return fmt.Errorf("line %d does not carry input line %s: %.80s", *seen+1, num, line)
		}
		*seen++
		if *seen == want {
			close(all)
		}
	}
}

// syncBuffer collects lines from one goroutine for reading by another.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) WriteLine(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() < 64<<10 {
		s.b.WriteString(line)
		s.b.WriteByte('\n')
	}
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Child modes of the raw gorilla pipe.
const (
	pipeServerMode = "pipe-server"
	pipeClientMode = "pipe-client"
)

// rawLine is what the raw pipe's server prints per message: the shape and
// width of `wsreliable serve`'s lines, so both pipes write the same bytes.
type rawLine struct {
	Client  string `json:"client"`
	ID      string `json:"id"`
	Seq     uint64 `json:"seq"`
	Payload string `json:"payload"`
}

// runPipeChild runs one end of the raw pipe: args are pipe-server, or
// pipe-client and the server's URL.
func runPipeChild(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var err error
	switch {
	case args[0] == pipeServerMode && len(args) == 1:
		err = rawPipeServer(ctx, stdin, stdout, stderr)
	case args[0] == pipeClientMode && len(args) == 2:
		err = rawPipeClient(ctx, args[1], stdin)
	default:
		fmt.Fprintf(stderr, "bench child: usage: %s | %s URL\n", pipeServerMode, pipeClientMode)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench child %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// rawPipeServer accepts WebSocket connections on 127.0.0.1 and prints one
// JSON line per message on stdout, flushing whenever no message is
// waiting, until ctx ends or stdin does.
func rawPipeServer(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	msgs := make(chan []byte, 1024)
	done := make(chan struct{})
	defer close(done)
	up := websocket.Upgrader{}
	var wg sync.WaitGroup
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			_, m, err := ws.ReadMessage()
			if err != nil {
				if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
					fmt.Fprintf(stderr, "read: %v\n", err)
				}
				return
			}
			select {
			case msgs <- m:
			case <-done:
				return
			}
		}
	})}
	wg.Go(func() { _ = srv.Serve(ln) })
	fmt.Fprintf(stderr, "listening addr=%s\n", ln.Addr())

	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(eof)
	}()
	bw := bufio.NewWriterSize(stdout, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	line := rawLine{Client: strings.Repeat("c", 36), ID: "00000000-0000-0000-0000-000000000000"}
	for {
		var m []byte
		select {
		case m = <-msgs:
		default:
			if err := bw.Flush(); err != nil {
				return err
			}
			stop := false
			select {
			case m = <-msgs:
			case <-eof:
				stop = true
			case <-ctx.Done():
				stop = true
			}
			if stop {
				srv.Close()
				wg.Wait()
				return bw.Flush()
			}
		}
		line.Seq++
		line.Payload = string(m)
		if err := enc.Encode(&line); err != nil {
			return err
		}
	}
}

// rawPipeClient sends each stdin line as one WebSocket message to url,
// then closes the connection with a closing handshake, so that the server
// has read everything when it returns.
func rawPipeClient(ctx context.Context, url string, stdin io.Reader) error {
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		return err
	}
	defer ws.Close()
	br := bufio.NewReaderSize(stdin, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if werr := ws.WriteMessage(websocket.BinaryMessage, bytes.TrimSuffix(line, []byte("\n"))); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	if err := ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), deadline); err != nil {
		return err
	}
	_ = ws.SetReadDeadline(deadline)
	for {
		if _, _, err := ws.NextReader(); err != nil {
			if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseNoStatusReceived) {
				return nil
			}
			return err
		}
	}
}
