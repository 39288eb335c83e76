package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// logFlags are -log-format, -log-level and -v, shared by serve, send and
// recv. Bad values fail flag parsing, so they are usage errors naming the
// flag.
type logFlags struct {
	json     bool
	level    slog.Level
	levelSet bool // -log-level was given
	verbose  *bool
}

// addLogFlags registers the log flags on fs; level is the command's
// default level.
func addLogFlags(fs *flag.FlagSet, level slog.Level) *logFlags {
	f := &logFlags{level: level}
	fs.Func("log-format", "`format` of the log on stderr: text or json (one JSON object a line, the command's own messages included) (default text)", func(s string) error {
		switch s {
		case "text":
			f.json = false
		case "json":
			f.json = true
		default:
			return fmt.Errorf("want text or json")
		}
		return nil
	})
	fs.Func("log-level", "least `level` logged on stderr: debug, info, warn or error (default "+levelName(level)+")", func(s string) error {
		for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
			if s == levelName(l) {
				f.level, f.levelSet = l, true
				return nil
			}
		}
		return fmt.Errorf("want debug, info, warn or error")
	})
	f.verbose = fs.Bool("v", false, "log at debug level (-log-level debug)")
	return f
}

// levelName is the -log-level spelling of l.
func levelName(l slog.Level) string { return strings.ToLower(l.String()) }

// check reports -v given with another -log-level as a usage error.
func (f *logFlags) check(fs *flag.FlagSet) (int, bool) {
	if *f.verbose && f.levelSet && f.level != slog.LevelDebug {
		return usageError(fs, "-v means -log-level debug; it conflicts with -log-level "+levelName(f.level)), false
	}
	return 0, true
}

// logger returns the logger the flags ask for, on w.
func (f *logFlags) logger(w io.Writer) *slog.Logger {
	level := f.level
	if *f.verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	if f.json {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// cliLog writes a command's own messages (why it fails, its summary) on
// stderr: "wsreliable CMD: message" lines with -log-format text, records
// of log with -log-format json, so that every stderr line is JSON.
type cliLog struct {
	w      io.Writer
	prefix string // "wsreliable send: "
	log    *slog.Logger
	json   bool
}

func (f *logFlags) cliLog(w io.Writer, name string, log *slog.Logger) cliLog {
	return cliLog{w: w, prefix: "wsreliable " + name + ": ", log: log, json: f.json}
}

// errorf reports a failure; -log-level cannot silence it.
func (l cliLog) errorf(format string, a ...any) { l.print(slog.LevelError, format, a...) }

// infof reports at info level, if the log level lets it through.
func (l cliLog) infof(format string, a ...any) { l.print(slog.LevelInfo, format, a...) }

func (l cliLog) print(level slog.Level, format string, a ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	if l.json {
		l.log.Log(context.Background(), level, fmt.Sprintf(format, a...))
		return
	}
	fmt.Fprintf(l.w, l.prefix+format+"\n", a...)
}
