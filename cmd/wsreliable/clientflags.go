package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
)

// clientStoreName is the client's store file inside -data, for send and
// recv alike.
const clientStoreName = "client.db"

// clientFlags are the flags of the commands that run a reliable.Client
// (send, recv): where to connect, where the store lives, the client ID,
// the heartbeat and the log level.
type clientFlags struct {
	url, data, clientID   *string
	hbInterval, hbTimeout *time.Duration
	verbose               *bool

	lastErr atomic.Pointer[error] // why the last connection attempt or session ended
}

// lastError returns why the client's last connection ended or failed, nil
// if none did.
func (f *clientFlags) lastError() error {
	if p := f.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// addClientFlags registers the client flags on fs; clientIDHelp
// describes -client-id for the command.
func addClientFlags(fs *flag.FlagSet, clientIDHelp string) *clientFlags {
	f := &clientFlags{
		url:      fs.String("url", "", "server `URL`, e.g. ws://127.0.0.1:8080/ws"),
		data:     fs.String("data", "", "`directory` for the client's store (created if missing; file "+clientStoreName+")"),
		clientID: fs.String("client-id", "", clientIDHelp),
		verbose:  fs.Bool("v", false, "log connection events (info) and debug details"),
	}
	f.hbInterval, f.hbTimeout = heartbeatFlags(fs)
	return f
}

// check reports a missing -url or -data (and -client-id, if
// needClientID) or a bad heartbeat as a usage error.
func (f *clientFlags) check(fs *flag.FlagSet, needClientID bool) (int, bool) {
	switch {
	case *f.url == "":
		return usageError(fs, "-url is required"), false
	case *f.data == "":
		return usageError(fs, "-data is required"), false
	case needClientID && *f.clientID == "":
		return usageError(fs, "-client-id is required"), false
	}
	return checkHeartbeat(fs, *f.hbInterval, *f.hbTimeout)
}

// logger returns the client's logger on stderr: warnings, or everything
// with -v.
func (f *clientFlags) logger(stderr io.Writer) *slog.Logger {
	return newLogger(stderr, slog.LevelWarn, *f.verbose)
}

// open creates -data if needed and opens a client on its store file with
// opts, to which it adds the flags' settings. stopped is closed when the
// client gives up (reliable.StateStopped; Client.Err says why). A store
// held by another process is explained in the error.
func (f *clientFlags) open(opts reliable.ClientOptions) (c *reliable.Client, storePath string, stopped <-chan struct{}, err error) {
	if err := os.MkdirAll(*f.data, 0o700); err != nil {
		return nil, "", nil, fmt.Errorf("data directory: %w", err)
	}
	storePath = filepath.Join(*f.data, clientStoreName)
	ch := make(chan struct{})
	var once sync.Once
	opts.ClientID = *f.clientID
	opts.HeartbeatInterval, opts.HeartbeatTimeout = *f.hbInterval, *f.hbTimeout
	opts.OnStateChange = func(s reliable.State, err error) {
		if err != nil {
			f.lastErr.Store(&err)
		}
		if s == reliable.StateStopped {
			once.Do(func() { close(ch) })
		}
	}
	c, err = reliable.NewClient(*f.url, storePath, &opts)
	if err != nil {
		if errors.Is(err, queue.ErrLocked) {
			err = fmt.Errorf("%w (is another wsreliable process using %s?)", err, *f.data)
		}
		return nil, "", nil, err
	}
	return c, storePath, ch, nil
}
