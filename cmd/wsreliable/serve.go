package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
	"github.com/wsreliable/wsreliable/store/postgres"
)

// serveStoreName is the server's store file inside -data.
const serveStoreName = "server.db"

// deliveredLine is the JSON line serve prints for each delivered message,
// as encoding/json writes it; appendDelivered builds the same bytes
// without reflection, and the fuzz test holds it to this type.
type deliveredLine struct {
	Client     string  `json:"client"`
	Identity   string  `json:"identity"`
	Address    string  `json:"address"` // reliable.Address(identity, client): POST /v1/push's "client" for a reply
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
	storeURL := fs.String("store", "", "PostgreSQL `URL` (postgres://… or postgresql://…; several hosts with target_session_attrs=read-write for failover) of a store shared by a fleet of serve processes, "+
		"any of which serves any client; replaces -data")
	hbInterval, hbTimeout := heartbeatFlags(fs)
	shutdownTimeout := fs.Duration("shutdown-timeout", 10*time.Second, "on SIGINT/SIGTERM, how long to wait for handlers in progress")
	apiKeyFile := fs.String("api-key-file", "", "enable the HTTP push API (POST /v1/push, GET /v1/messages/{id}); requests must carry \"Authorization: Bearer KEY\" with KEY this `file`'s contents, trimmed. Empty: no API (its paths answer 404)")
	outboxMax := fs.Int("outbox-max-messages", 0, "most pushes queued for one client; 0 means the library default (10000), negative no limit")
	outboxMaxBytes := fs.Int64("outbox-max-bytes", 0, "most bytes of pushes queued for one client; 0 means the library default (64 MiB), negative no limit")
	maxStoreBytes := fs.Int64("max-store-bytes", 0, "quota on the live data of the server's store file (pushes, their statuses, per-client state): at it, pushes answer HTTP 507 and clients without pushes waiting are closed with 1013 until the store drains; 0 means the library default (1 GiB), negative no quota")
	maxMessageRate := fs.Float64("max-message-rate", 0, "most messages a second one identity (token or certificate; without them, all clients together) may send; beyond it serve stops reading that identity's connections until its tokens refill (clients are slowed, nothing is lost); 0 means no limit")
	messageBurst := fs.Int("message-burst", 0, "messages an identity may send at once under -max-message-rate; 0 means one second's worth")
	maxByteRate := fs.Float64("max-byte-rate", 0, "most bytes a second one identity may send; beyond it serve stops reading that identity's connections until its tokens refill (clients are slowed, nothing is lost); "+
		"0 means the library default: 16 MiB/s per identity with -tokens-file or -client-ca, none without them (all clients would share one limit); negative no limit")
	byteBurst := fs.Int64("byte-burst", 0, "bytes an identity may send at once under -max-byte-rate; 0 means one second's worth, at least the message size limit (2 MiB)")
	maxHandshakeRateIP := fs.Float64("max-handshake-rate-per-ip", 0, "most connection attempts a second from one client IP (loopback not counted; see -trusted-proxies), in bursts of one second's worth; "+
		"beyond it attempts are answered HTTP 429 with Retry-After before authentication; 0 means the library default (50), negative no limit")
	maxHandshakeRateIdentity := fs.Float64("max-handshake-rate-per-identity", 0, "most connection attempts a second of one identity (with -tokens-file or -client-ca), in bursts of one second's worth; "+
		"beyond it attempts are answered HTTP 429 with Retry-After before the upgrade; 0 means the library default (50), negative no limit")
	outboxEvict := fs.Bool("outbox-evict", false, "when a client's outbox is full, evict its oldest pushes (status evicted) instead of refusing the new one (HTTP 507)")
	tlsCert := fs.String("tls-cert", "", "serve TLS (wss:// and https://, TLS 1.2 or later) with the certificate (chain) in this PEM `file`; needs -tls-key")
	tlsKey := fs.String("tls-key", "", "PEM `file` holding the private key of -tls-cert")
	clientCA := fs.String("client-ca", "", "require a client certificate on every TLS connection (the push API's too), verified against the CA certificates in this PEM `file`; needs -tls-cert. "+
		"The connection's identity is the leaf certificate's first URI SAN if it has one, else its first DNS SAN, else its Subject Common Name (a certificate with none of them is refused with 403); with -tokens-file too, the token's identity is used instead")
	tokensFile := fs.String("tokens-file", "", "require \"Authorization: Bearer TOKEN\" on WebSocket handshakes (401 otherwise), TOKEN listed in this `file`: one \"IDENTITY TOKEN\" per line, blank lines and # comments ignored; "+
		"the connection's identity is the token's. Re-read on SIGHUP (a bad file keeps the previous tokens)")
	allowedOrigins := fs.String("allowed-origins", "", "comma-separated `origins` (e.g. https://app.example) whose browser pages may connect; empty: only pages served from the same host as the request's Host header. Requests without an Origin header (non-browser clients) are not affected")
	insecure := fs.Bool("insecure", false, "allow listening on a non-loopback address without -tokens-file or -client-ca: anyone who reaches the port can then send as any client")
	trustedProxiesFlag := fs.String("trusted-proxies", "", "comma-separated IP `addresses` or CIDR prefixes of reverse proxies in front of serve: a request from one of them counts as coming from the rightmost X-Forwarded-For entry not itself listed (per-IP connection limits, logs). "+
		"Empty: X-Forwarded-For is ignored, and all clients of a proxy share its address's per-IP limit (a quarter of the connection limit; none for a proxy on loopback)")
	metricsListen := fs.String("metrics-listen", "", "serve /metrics (Prometheus), /healthz and /readyz on this `address`, a listener of its own without authentication; empty: none")
	logFlags := addLogFlags(fs, slog.LevelInfo)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if code, ok := logFlags.check(fs); !ok {
		return code
	}
	log := logFlags.logger(stderr)
	cl := logFlags.cliLog(stderr, "serve", log)
	switch {
	case *data == "" && *storeURL == "":
		return usageError(fs, "-data (or -store) is required")
	case *data != "" && *storeURL != "":
		return usageError(fs, "-data and -store exclude each other: one store per server")
	case *storeURL != "" && !isPostgresURL(*storeURL):
		return usageError(fs, "-store must be a postgres:// or postgresql:// URL")
	}
	switch {
	case (*tlsCert == "") != (*tlsKey == ""):
		return usageError(fs, "-tls-cert and -tls-key go together")
	case *clientCA != "" && *tlsCert == "":
		return usageError(fs, "-client-ca needs -tls-cert and -tls-key")
	}
	loopback := isLoopbackListen(*listen)
	if !loopback && *tokensFile == "" && *clientCA == "" && !*insecure {
		cl.errorf("refusing to listen on %s, which is not a loopback address, without authentication: "+
			"anyone who can reach it could send as any client. Use -tokens-file or -client-ca (with -tls-cert and -tls-key), "+
			"or -insecure to listen without authentication anyway", *listen)
		return exitUsage
	}
	origins, err := parseOrigins(*allowedOrigins)
	if err != nil {
		return usageError(fs, "-allowed-origins: "+err.Error())
	}
	trusted, err := parseTrustedProxies(*trustedProxiesFlag)
	if err != nil {
		return usageError(fs, "-trusted-proxies: "+err.Error())
	}
	if code, ok := checkHeartbeat(fs, *hbInterval, *hbTimeout); !ok {
		return code
	}
	if *shutdownTimeout <= 0 {
		return usageError(fs, "-shutdown-timeout must be positive")
	}
	fail := func(format string, a ...any) int {
		cl.errorf(format, a...)
		return exitFail
	}
	var apiKey string
	if *apiKeyFile != "" {
		var err error
		if apiKey, err = readAPIKey(*apiKeyFile); err != nil {
			return fail("-api-key-file: %v", err)
		}
	}
	var tlsConfig *tls.Config
	if *tlsCert != "" {
		if tlsConfig, err = serverTLSConfig(*tlsCert, *tlsKey, *clientCA); err != nil {
			return fail("%v", err)
		}
	}
	var tokens *atomic.Pointer[tokenSet]
	if *tokensFile != "" {
		ts, err := loadTokens(*tokensFile)
		if err != nil {
			return fail("-tokens-file: %v", err)
		}
		tokens = &atomic.Pointer[tokenSet]{}
		tokens.Store(ts)
		if tlsConfig == nil && !loopback {
			log.Warn("bearer tokens travel in clear text: serve TLS with -tls-cert and -tls-key", "listen", *listen)
		}
	}
	refusals := &refusalLog{log: log}
	defer refusals.flush()
	authenticated := tokens != nil || *clientCA != ""

	if *data != "" {
		if err := os.MkdirAll(*data, 0o700); err != nil {
			return fail("data directory: %v", err)
		}
	}
	// Lines are buffered per client and written before each watermark
	// commit, so a message is acknowledged only once its line has left
	// the process.
	handler, flush := newBufferedLines(stdout).hooks(appendDelivered, log)
	opts := &reliable.ServerOptions{
		CheckOrigin:       originChecker(origins, refusals),
		HeartbeatInterval: *hbInterval,
		HeartbeatTimeout:  *hbTimeout,
		OutboxMaxMessages: *outboxMax,
		OutboxMaxBytes:    *outboxMaxBytes,
		OutboxEvict:       *outboxEvict,
		MaxStoreBytes:     *maxStoreBytes,
		MaxMessageRate:    *maxMessageRate,
		MessageBurst:      *messageBurst,

		MaxByteRate:                 *maxByteRate,
		ByteBurst:                   *byteBurst,
		MaxHandshakeRatePerIP:       *maxHandshakeRateIP,
		MaxHandshakeRatePerIdentity: *maxHandshakeRateIdentity,
		Logger:                      log,
		Flush:                       flush,
	}
	if authenticated {
		opts.Authenticate = authenticatedIdentity
	}
	metrics := newServeMetrics(*metricsListen, log)
	opts.Observer = metrics.observer()
	storePath := ""
	if *storeURL != "" {
		// The fleet's store: the outbox limits are the store's.
		st, err := postgres.Open(ctx, *storeURL, &postgres.Options{Queue: queue.Options{
			OutboxMaxMessages: opts.OutboxMaxMessages,
			OutboxMaxBytes:    opts.OutboxMaxBytes,
			OutboxEvict:       opts.OutboxEvict,
			Logger:            log,
		}})
		if err != nil {
			return fail("-store: %v", err)
		}
		defer st.Close() // after the server's shutdown, deferred below
		opts.Store, opts.OutboxMaxMessages, opts.OutboxMaxBytes, opts.OutboxEvict = st, 0, 0, false
		log.Info("fleet store open", "node", st.NodeID())
	} else {
		storePath = filepath.Join(*data, serveStoreName)
	}
	srv, err := reliable.NewServer(storePath, handler, opts)
	if err != nil {
		return fail("%v", err)
	}
	if err := metrics.start(srv); err != nil {
		srv.Close()
		return fail("-metrics-listen: %v", err)
	}
	defer metrics.stop()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		srv.Close()
		return fail("%v", err)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	mux := http.NewServeMux()
	var ws http.Handler = srv
	if authenticated {
		ws = &wsAuth{next: srv, tokens: tokens, clientCerts: *clientCA != "", refusals: refusals}
	}
	mux.Handle("/ws", ws)
	if apiKey != "" {
		newPushAPI(srv, apiKey, maxPushPayload, log).register(mux)
	}
	var root http.Handler = mux
	if loopback {
		root = hostGuard{next: mux, refusals: refusals}
	}
	if len(trusted) > 0 {
		root = forwardedFor{next: root, trusted: trusted, log: log}
	}
	hs := &http.Server{
		Handler:           root,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          stdlog.New(httpErrorLog{log: log, refusals: refusals}, "", 0),
	}
	if tokens != nil {
		stopReload := reloadTokensOnHUP(*tokensFile, tokens, log)
		defer stopReload()
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "path", "/ws", "data", *data, "fleet", *storeURL != "", "push_api", apiKey != "",
		"tls", tlsConfig != nil, "client_certs", *clientCA != "", "tokens", tokens != nil)
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

	metrics.draining() // /readyz answers 503 from here on
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

// isPostgresURL reports whether u names a PostgreSQL store.
func isPostgresURL(u string) bool {
	return strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://")
}

// reloadTokensOnHUP re-reads the tokens file at path on each SIGHUP and
// stores the new set in tokens; a file that does not load keeps the old
// set and is logged as an error. The returned stop ends the watch and
// waits for it.
func reloadTokensOnHUP(path string, tokens *atomic.Pointer[tokenSet], log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-hup:
				ts, err := loadTokens(path)
				if err != nil {
					log.Error("tokens file not reloaded; the previous tokens stay in force", "file", path, "error", err)
					continue
				}
				tokens.Store(ts)
				log.Info("tokens reloaded", "file", path, "tokens", len(ts.sums))
			case <-done:
				return
			}
		}
	})
	return func() {
		signal.Stop(hup)
		close(done)
		wg.Wait()
	}
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
