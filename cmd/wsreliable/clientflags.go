package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
// the credentials and TLS trust, the heartbeat, the reconnect backoff and
// the log.
type clientFlags struct {
	url, data, clientID      *string
	tokenFile, ca, cert, key *string
	hbInterval, hbTimeout    *time.Duration
	backoffMax, healthyAfter *time.Duration
	log                      *logFlags

	lastErr atomic.Pointer[error] // why the last connection attempt or session ended
	fatal   atomic.Pointer[error] // a TLS failure the CLI gives up on
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
		url:      fs.String("url", "", "server `URL`, e.g. ws://127.0.0.1:8080/ws; several, comma-separated, for a fleet of servers sharing one store: the client moves to the next after each failed or lost connection"),
		data:     fs.String("data", "", "`directory` for the client's store (created if missing; file "+clientStoreName+")"),
		clientID: fs.String("client-id", "", clientIDHelp),
		log:      addLogFlags(fs, slog.LevelWarn),

		backoffMax:   fs.Duration("backoff-max", 30*time.Second, "longest wait between reconnect attempts (the wait doubles from 100ms up to this, with jitter); at least 100ms"),
		healthyAfter: fs.Duration("healthy-after", 10*time.Second, "how long a connection must last before the reconnect wait starts again from 100ms"),

		tokenFile: fs.String("token-file", "", "send \"Authorization: Bearer TOKEN\" with TOKEN this `file`'s contents, trimmed; the file is read again before every connection attempt, so a rotated token is picked up"),
		ca:        fs.String("ca", "", "for wss:// URLs, trust only the CA certificates in this PEM `file` instead of the system's roots"),
		cert:      fs.String("cert", "", "for wss:// URLs, present the client certificate (chain) in this PEM `file` (mutual TLS); needs -key"),
		key:       fs.String("key", "", "PEM `file` holding the private key of -cert"),
	}
	f.hbInterval, f.hbTimeout = heartbeatFlags(fs)
	return f
}

// backoffMin is reliable.ClientOptions.BackoffMin's default, the floor of
// -backoff-max.
const backoffMin = 100 * time.Millisecond

// urls returns the server URLs of -url, in order.
func (f *clientFlags) urls() []string {
	var urls []string
	for u := range strings.SplitSeq(*f.url, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

// check reports a missing -url or -data (and -client-id, if
// needClientID), a bad heartbeat, backoff or log setting as a usage error.
func (f *clientFlags) check(fs *flag.FlagSet, needClientID bool) (int, bool) {
	if code, ok := f.log.check(fs); !ok {
		return code, false
	}
	switch {
	case len(f.urls()) == 0:
		return usageError(fs, "-url is required"), false
	case *f.data == "":
		return usageError(fs, "-data is required"), false
	case needClientID && *f.clientID == "":
		return usageError(fs, "-client-id is required"), false
	case (*f.cert == "") != (*f.key == ""):
		return usageError(fs, "-cert and -key go together"), false
	case (*f.ca != "" || *f.cert != "") && slices.ContainsFunc(f.urls(), func(u string) bool { return !strings.HasPrefix(strings.ToLower(u), "wss://") }):
		return usageError(fs, "-ca, -cert and -key need wss:// URLs in -url"), false
	case *f.backoffMax < backoffMin:
		return usageError(fs, fmt.Sprintf("-backoff-max must be at least %v", backoffMin)), false
	case *f.healthyAfter <= 0:
		return usageError(fs, "-healthy-after must be positive"), false
	}
	return checkHeartbeat(fs, *f.hbInterval, *f.hbTimeout)
}

// credentials adds the -token-file, -ca, -cert and -key settings to opts.
// The token file is read once now, to report a missing or empty file at
// once, and again before every dial. log warns about a token sent in
// clear text to another machine.
func (f *clientFlags) credentials(opts *reliable.ClientOptions, log *slog.Logger) error {
	if path := *f.tokenFile; path != "" {
		if _, err := readTokenFile(path); err != nil {
			return fmt.Errorf("-token-file: %w", err)
		}
		opts.Header = func(context.Context) (http.Header, error) {
			token, err := readTokenFile(path)
			if err != nil {
				return nil, fmt.Errorf("-token-file: %w", err)
			}
			return http.Header{"Authorization": {"Bearer " + token}}, nil
		}
		for _, raw := range f.urls() {
			if u, err := url.Parse(raw); err == nil && u.Scheme == "ws" && !isLoopbackHost(u.Hostname()) {
				log.Warn("the token travels in clear text over ws://; use wss://", "url", raw)
			}
		}
	}
	if *f.ca == "" && *f.cert == "" {
		return nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if *f.ca != "" {
		pool, err := loadCertPool(*f.ca)
		if err != nil {
			return fmt.Errorf("-ca: %w", err)
		}
		cfg.RootCAs = pool
	}
	if *f.cert != "" {
		cert, err := tls.LoadX509KeyPair(*f.cert, *f.key)
		if err != nil {
			return fmt.Errorf("-cert/-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	opts.TLSConfig = cfg
	return nil
}

// tlsFailure explains err if it is a TLS failure that retrying cannot
// mend: the server's certificate does not verify, or the server does not
// speak TLS. It returns nil for other errors.
func tlsFailure(err error) error {
	var (
		verify *tls.CertificateVerificationError
		record tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &verify):
		return fmt.Errorf("cannot verify the server's TLS certificate (trust the CA that signed it with -ca FILE): %w", err)
	case errors.As(err, &record):
		return fmt.Errorf("the server did not answer with TLS (is it serving plain ws://?): %w", err)
	}
	return nil
}

// stopReason says why the channel returned by open was closed: the TLS
// failure the CLI gave up on, or the client's own reason to stop.
func (f *clientFlags) stopReason(c *reliable.Client) error {
	if p := f.fatal.Load(); p != nil {
		return *p
	}
	return c.Err()
}

// logger returns the client's logger on stderr: warnings and errors by
// default, as -log-level and -log-format say.
func (f *clientFlags) logger(stderr io.Writer) *slog.Logger {
	return f.log.logger(stderr)
}

// open creates -data if needed and opens a client on its store file with
// opts, to which it adds the flags' settings. stopped is closed when the
// client gives up (reliable.StateStopped) or when a connection attempt
// fails in TLS in a way retrying cannot mend (tlsFailure); stopReason says
// why. A store held by another process is explained in the error.
func (f *clientFlags) open(opts reliable.ClientOptions) (c *reliable.Client, storePath string, stopped <-chan struct{}, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := f.credentials(&opts, log); err != nil {
		return nil, "", nil, err
	}
	if err := os.MkdirAll(*f.data, 0o700); err != nil {
		return nil, "", nil, fmt.Errorf("data directory: %w", err)
	}
	storePath = filepath.Join(*f.data, clientStoreName)
	ch := make(chan struct{})
	var once sync.Once
	var refusedBefore atomic.Bool
	opts.ClientID = *f.clientID
	opts.HeartbeatInterval, opts.HeartbeatTimeout = *f.hbInterval, *f.hbTimeout
	opts.BackoffMax, opts.HealthyAfter = *f.backoffMax, *f.healthyAfter
	opts.OnStateChange = func(s reliable.State, err error) {
		if err != nil {
			f.lastErr.Store(&err)
			if fe := tlsFailure(err); fe != nil {
				f.fatal.CompareAndSwap(nil, &fe)
				once.Do(func() { close(ch) })
			}
			// A 401 is retried (with the token file read again); say
			// so once, not on every attempt.
			if errors.Is(err, reliable.ErrUnauthorized) && !errors.Is(err, reliable.ErrForbidden) {
				if !refusedBefore.Swap(true) {
					msg := "the server refused the connection (HTTP 401) and wants a token: give one with -token-file; retrying with backoff"
					if *f.tokenFile != "" {
						msg = "the server refused the token (HTTP 401); retrying with backoff, reading -token-file again before each attempt"
					}
					log.Warn(msg, "error", err)
				}
			}
		}
		if s == reliable.StateStopped {
			once.Do(func() { close(ch) })
		}
	}
	urls := f.urls()
	opts.FallbackURLs = urls[1:]
	c, err = reliable.NewClient(urls[0], storePath, &opts)
	if err != nil {
		if errors.Is(err, queue.ErrLocked) {
			err = fmt.Errorf("%w (is another wsreliable process using %s?)", err, *f.data)
		}
		return nil, "", nil, err
	}
	return c, storePath, ch, nil
}
