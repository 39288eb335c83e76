// Command wsreliable is the command-line tool of the wsreliable module:
//
//	wsreliable demo      run server, clients and a fault-injecting proxy in one process
//	wsreliable serve     run a server; print each delivered message as a JSON line;
//	                     with -api-key-file, push messages to clients over HTTP
//	wsreliable send      send stdin lines, one message each, and wait for their acks
//	wsreliable recv      print each message pushed to one client as a JSON line
//	wsreliable inspect   print the state of a store file
//	wsreliable bench     measure throughput, latency, memory and recovery against raw gorilla/websocket
//	wsreliable version   print the version
//
// Run "wsreliable COMMAND -h" for a command's flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const usage = `Usage: wsreliable COMMAND [flags]

Commands:
  demo      run a server, several clients and a fault-injecting proxy in one
            process and check that nothing is lost, doubled or reordered
  serve     accept clients on -listen (path /ws) and print every delivered
            message as one JSON line on stdout; with -api-key-file, also
            take pushes to clients at POST /v1/push and report them at
            GET /v1/messages/{id}; -tls-cert/-tls-key serve wss://,
            -tokens-file and -client-ca authenticate clients (required
            off loopback unless -insecure)
  send      send each stdin line as one message to -url and wait until all
            are acknowledged
  recv      connect to -url as -client-id and print every message pushed
            to that client as one JSON line on stdout, until interrupted
  inspect   print the state of the store files in -data
  bench     measure throughput, latency, memory, recovery and a reconnect
            storm against a raw gorilla/websocket baseline (-quick: short)
  version   print the version

Run "wsreliable COMMAND -h" for the flags of a command.
`

// command is the signature shared by every subcommand, so tests can run
// them in-process.
type command func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int

var commands = map[string]command{
	"demo":    runDemo,
	"serve":   runServe,
	"send":    runSend,
	"recv":    runRecv,
	"inspect": runInspect,
	"bench":   runBench,
	"version": runVersion,
}

func main() {
	ctx, stop := signalContext()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches args[0] to its command.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "wsreliable: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	return cmd(ctx, args[1:], stdin, stdout, stderr)
}

// signalError is the cancellation cause of the context returned by
// signalContext.
type signalError struct{ sig os.Signal }

func (e signalError) Error() string { return "received signal " + e.sig.String() }

// signalContext returns a context cancelled, with a signalError cause, on
// the first SIGINT or SIGTERM. After that the signals get their default
// action again, so a second one kills the process.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			signal.Stop(ch)
			cancel(signalError{sig})
		case <-done:
		}
	}()
	return ctx, func() {
		close(done)
		signal.Stop(ch)
		cancel(nil)
	}
}

// interruptCode is the exit code after ctx was cancelled: 128+signal for
// SIGINT and SIGTERM, as shells report them, 1 otherwise.
func interruptCode(ctx context.Context) int {
	var se signalError
	if errors.As(context.Cause(ctx), &se) {
		switch se.sig {
		case os.Interrupt:
			return 128 + int(syscall.SIGINT)
		case syscall.SIGTERM:
			return 128 + int(syscall.SIGTERM)
		}
	}
	return exitFail
}

// newFlagSet returns a flag set that reports errors instead of exiting,
// with a usage line naming the command.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("wsreliable "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: wsreliable %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and returns the exit code to use when parsing did
// not succeed (0 for -h), and ok=false in that case. Positional arguments
// are refused.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return exitUsage, false
	}
	return 0, true
}

// usageError prints msg and the command's usage and returns exitUsage.
func usageError(fs *flag.FlagSet, msg string) int {
	fmt.Fprintf(fs.Output(), "%s: %s\n", fs.Name(), msg)
	fs.Usage()
	return exitUsage
}

// newLogger returns a text logger on w at info (or debug if verbose).
func newLogger(w io.Writer, level slog.Level, verbose bool) *slog.Logger {
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// heartbeatFlags registers -heartbeat and -heartbeat-timeout.
func heartbeatFlags(fs *flag.FlagSet) (interval, timeout *time.Duration) {
	interval = fs.Duration("heartbeat", 0, "heartbeat (ping) interval; 0 means the library default (5s)")
	timeout = fs.Duration("heartbeat-timeout", 0, "how long past an expected frame a link counts as dead; 0 means the library default (5s)")
	return interval, timeout
}

func checkHeartbeat(fs *flag.FlagSet, interval, timeout time.Duration) (int, bool) {
	if interval < 0 {
		return usageError(fs, "-heartbeat must not be negative"), false
	}
	if timeout < 0 {
		return usageError(fs, "-heartbeat-timeout must not be negative"), false
	}
	return 0, true
}

func runVersion(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", "", stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	fmt.Fprintf(stdout, "wsreliable %s %s %s/%s\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}
