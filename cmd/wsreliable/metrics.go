package main

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	wsprom "github.com/wsreliable/wsreliable/metrics/prometheus"
	"github.com/wsreliable/wsreliable/reliable"
)

// serveMetrics is serve's -metrics-listen endpoint, a listener of its own
// (so a scraper needs no access to the WebSocket port and its
// authentication) serving:
//
//	/metrics  the server's metrics in the Prometheus text format (those
//	          of the metrics/prometheus module), with the Go runtime's and
//	          the process's
//	/healthz  200 while the process is up
//	/readyz   200 while the store is open and the server is not shutting
//	          down; 503 from the moment shutdown begins
//
// A nil *serveMetrics (no -metrics-listen) does nothing, so serve calls
// it unconditionally. The listener outlives the WebSocket server: it
// answers /readyz with 503 while the sessions drain, and stop closes it
// last.
type serveMetrics struct {
	addr  string
	log   *slog.Logger
	obs   *wsprom.Observer
	ready atomic.Bool
	hs    *http.Server
	done  chan error // Serve's result
}

// newServeMetrics returns the endpoint for -metrics-listen addr, nil if
// addr is empty.
func newServeMetrics(addr string, log *slog.Logger) *serveMetrics {
	if addr == "" {
		return nil
	}
	return &serveMetrics{addr: addr, log: log, obs: wsprom.NewObserver()}
}

// observer returns the reliable.Observer for ServerOptions.Observer (nil
// without -metrics-listen).
func (m *serveMetrics) observer() reliable.Observer {
	if m == nil {
		return nil
	}
	return m.obs
}

// start listens and serves srv's metrics; from now on /readyz answers
// 200 until draining is called.
func (m *serveMetrics) start(srv *reliable.Server) error {
	if m == nil {
		return nil
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(m.obs); err != nil {
		return err
	}
	if err := reg.Register(wsprom.NewCollector(srv)); err != nil {
		return err
	}
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return err
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", m.addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelError)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	m.hs = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	m.done = make(chan error, 1)
	m.ready.Store(true)
	go func() { m.done <- m.hs.Serve(ln) }()
	m.log.Info("metrics listening", "metrics_addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	return nil
}

// draining makes /readyz answer 503: serve calls it as shutdown begins.
func (m *serveMetrics) draining() {
	if m == nil {
		return
	}
	m.ready.Store(false)
}

// stop closes the listener and waits for it to stop serving.
func (m *serveMetrics) stop() {
	if m == nil || m.hs == nil {
		return
	}
	m.ready.Store(false)
	_ = m.hs.Close()
	if err := <-m.done; !errors.Is(err, http.ErrServerClosed) {
		m.log.Error("metrics listener failed", "error", err)
	}
}
