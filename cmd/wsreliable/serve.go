package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

// serveStoreName is the server's store file inside -data.
const serveStoreName = "server.db"

// deliveredLine is the JSON line serve prints for each delivered message,
// as encoding/json writes it; appendDelivered builds the same bytes
// without reflection, and the fuzz test holds it to this type.
type deliveredLine struct {
	Client     string  `json:"client"`
	ID         string  `json:"id"`
	Seq        uint64  `json:"seq"`
	Payload    *string `json:"payload,omitempty"`
	PayloadB64 string  `json:"payload_b64,omitempty"`
}

func runServe(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	return serve(ctx, args, stdout, stderr, nil)
}

// serve is runServe; onListen, if not nil, is called with the bound
// address once the server accepts connections (for tests).
func serve(ctx context.Context, args []string, stdout, stderr io.Writer, onListen func(net.Addr)) int {
	fs := newFlagSet("serve", "-listen HOST:PORT -data DIR [flags]", stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "`address` to listen on; the WebSocket endpoint is at path /ws (and the push API at /v1/ with -api-key-file)")
	data := fs.String("data", "", "`directory` for the server's store (created if missing; file "+serveStoreName+")")
	hbInterval, hbTimeout := heartbeatFlags(fs)
	shutdownTimeout := fs.Duration("shutdown-timeout", 10*time.Second, "on SIGINT/SIGTERM, how long to wait for handlers in progress")
	apiKeyFile := fs.String("api-key-file", "", "enable the HTTP push API (POST /v1/push, GET /v1/messages/{id}); requests must carry \"Authorization: Bearer KEY\" with KEY this `file`'s contents, trimmed. Empty: no API (its paths answer 404)")
	outboxMax := fs.Int("outbox-max-messages", 0, "most pushes queued for one client; 0 means the library default (10000), negative no limit")
	outboxMaxBytes := fs.Int64("outbox-max-bytes", 0, "most bytes of pushes queued for one client; 0 means the library default (64 MiB), negative no limit")
	outboxEvict := fs.Bool("outbox-evict", false, "when a client's outbox is full, evict its oldest pushes (status evicted) instead of refusing the new one (HTTP 507)")
	verbose := fs.Bool("v", false, "log at debug level")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *data == "" {
		return usageError(fs, "-data is required")
	}
	if code, ok := checkHeartbeat(fs, *hbInterval, *hbTimeout); !ok {
		return code
	}
	if *shutdownTimeout <= 0 {
		return usageError(fs, "-shutdown-timeout must be positive")
	}
	log := newLogger(stderr, slog.LevelInfo, *verbose)
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "wsreliable serve: "+format+"\n", a...)
		return exitFail
	}
	var apiKey string
	if *apiKeyFile != "" {
		var err error
		if apiKey, err = readAPIKey(*apiKeyFile); err != nil {
			return fail("-api-key-file: %v", err)
		}
	}

	if err := os.MkdirAll(*data, 0o700); err != nil {
		return fail("data directory: %v", err)
	}
	// Lines are buffered per client and written before each watermark
	// commit, so a message is acknowledged only once its line has left
	// the process.
	handler, flush := newBufferedLines(stdout).hooks(appendDelivered, log)
	srv, err := reliable.NewServer(filepath.Join(*data, serveStoreName), handler, &reliable.ServerOptions{
		HeartbeatInterval: *hbInterval,
		HeartbeatTimeout:  *hbTimeout,
		OutboxMaxMessages: *outboxMax,
		OutboxMaxBytes:    *outboxMaxBytes,
		OutboxEvict:       *outboxEvict,
		Logger:            log,
		Flush:             flush,
	})
	if err != nil {
		return fail("%v", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		srv.Close()
		return fail("%v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	if apiKey != "" {
		newPushAPI(srv, apiKey, maxPushPayload, log).register(mux)
	}
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "path", "/ws", "data", *data, "push_api", apiKey != "")
	if onListen != nil {
		onListen(ln.Addr())
	}

	code := exitOK
	served := false
	select {
	case <-ctx.Done():
		log.Info("shutting down", "cause", context.Cause(ctx))
	case err := <-serveErr:
		// Serve returns before Shutdown only on a listener failure.
		served = true
		log.Error("serving failed", "error", err)
		code = exitFail
	}

	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	// The HTTP server first: it stops accepting and lets push requests in
	// progress get their answer. It does not wait for the WebSocket
	// sessions (their connections are hijacked); srv.Shutdown drains them.
	if err := hs.Shutdown(sctx); err != nil {
		log.Error("HTTP server shutdown failed", "error", err)
		hs.Close()
		code = exitFail
	}
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("graceful shutdown of the sessions failed", "error", err)
		code = exitFail
	}
	if !served {
		if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
			log.Error("serving failed", "error", err)
			code = exitFail
		}
	}
	if code == exitOK {
		log.Info("stopped")
	}
	return code
}

// readAPIKey returns the contents of path with surrounding white space
// trimmed; an empty key is an error.
func readAPIKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return key, nil
}
