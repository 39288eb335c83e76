// Command push-gateway turns an HTTP request into a durable push to a
// device: POST /notify queues the message on disk and answers with its ID;
// the device receives it over the WebSocket at /ws whenever it connects,
// once and in order; each push's outcome is posted to -callback.
//
//	push-gateway -listen :8080 -data ./gateway -callback http://localhost:9000/settled
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr, nil)
	stop()
	os.Exit(code)
}

// run serves until ctx ends and returns the exit code. ready, if set, is
// called with the listening address.
func run(ctx context.Context, args []string, stderr io.Writer, ready func(net.Addr)) int {
	fs := flag.NewFlagSet("push-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":8080", "`address` to serve /notify and /ws on")
	data := fs.String("data", "gateway-data", "`DIR` for the store")
	callback := fs.String("callback", "", "`URL` to POST each settlement to (empty: log it)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := os.MkdirAll(*data, 0o700); err != nil {
		log.Error("creating -data", "error", err)
		return 1
	}

	// Posts to the callback get until the end of the shutdown grace period.
	cbCtx, cancelCallbacks := context.WithCancel(context.Background())
	defer cancelCallbacks()
	srv, err := reliable.NewServer(filepath.Join(*data, "gateway.db"),
		func(ctx context.Context, m *reliable.Message) error {
			return nil // devices may send too; this gateway only pushes
		},
		&reliable.ServerOptions{
			// Called once a push is acked, rejected, expired or evicted,
			// from one goroutine. The settlement is marked reported only
			// after it returns, so a crash mid-post posts it again on the
			// next start: the callback sees every outcome at least once.
			OnSettled: func(s reliable.Settlement) { settled(cbCtx, *callback, s, log) },
			Logger:    log,
		})
	if err != nil {
		log.Error("opening the store", "error", err)
		return 1
	}
	defer srv.Close()

	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	mux.HandleFunc("POST /notify", func(w http.ResponseWriter, r *http.Request) { notify(srv, w, r) })
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("listening", "error", err)
		return 1
	}
	if ready != nil {
		ready(l.Addr())
	}
	log.Info("listening", "addr", l.Addr().String())
	served := make(chan error, 1)
	go func() { served <- hs.Serve(l) }()

	select {
	case <-ctx.Done():
	case err := <-served:
		log.Error("serving", "error", err)
		return 1
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	context.AfterFunc(sctx, cancelCallbacks)
	// First the HTTP side (no new /notify), then the WebSocket sessions,
	// which http.Server.Shutdown does not see.
	code := 0
	if err := hs.Shutdown(sctx); err != nil {
		log.Error("http shutdown", "error", err)
		code = 1
	}
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("reliable shutdown", "error", err)
		code = 1
	}
	return code
}

// notifyRequest is the body of POST /notify: one device or several.
type notifyRequest struct {
	Device  string   `json:"device"`
	Devices []string `json:"devices"`
	Text    string   `json:"text"`
	TTL     string   `json:"ttl"` // optional, e.g. "1h": undelivered after that, it settles as expired
}

// notify queues the push and answers {"id":…} (or {"ids":[…]}) only once
// it is committed to disk: a 200 means the gateway will not lose it.
func notify(srv *reliable.Server, w http.ResponseWriter, r *http.Request) {
	var req notifyRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
		return
	}
	m := reliable.OutgoingMessage{Payload: []byte(req.Text)}
	if req.TTL != "" {
		var err error
		if m.TTL, err = time.ParseDuration(req.TTL); err != nil {
			http.Error(w, "bad ttl", http.StatusBadRequest)
			return
		}
	}
	devices := req.Devices
	if req.Device != "" {
		devices = append(devices, req.Device)
	}
	if len(devices) == 0 {
		http.Error(w, "device or devices required", http.StatusBadRequest)
		return
	}
	// SendMany: one commit and one fsync for every recipient, all or none.
	rs, err := srv.SendMany(r.Context(), devices, m)
	if err != nil {
		http.Error(w, err.Error(), httpStatus(err)) // nothing was queued
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if req.Device != "" && len(req.Devices) == 0 {
		json.NewEncoder(w).Encode(map[string]string{"id": rs[0].ID().String()})
		return
	}
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.ID().String()
	}
	json.NewEncoder(w).Encode(map[string][]string{"ids": ids})
}

// httpStatus maps SendMany's errors to HTTP statuses.
func httpStatus(err error) int {
	switch {
	case errors.Is(err, reliable.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, reliable.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, reliable.ErrQueueFull), errors.Is(err, reliable.ErrDiskFull):
		return http.StatusInsufficientStorage
	}
	return http.StatusServiceUnavailable // closed: shutting down
}

// settlement is what the callback receives.
type settlement struct {
	ID     string `json:"id"`
	Device string `json:"device"`
	Status string `json:"status"` // acked, rejected, expired or evicted
	Reason string `json:"reason,omitempty"`
}

// settled posts s to url, or logs it when url is empty. OnSettled must not
// block for long: each post gets 5 s.
func settled(ctx context.Context, url string, s reliable.Settlement, log *slog.Logger) {
	attrs := []any{"id", s.ID, "device", s.ClientID, "status", s.Status, "reason", s.Reason}
	if url == "" {
		log.Info("push settled", attrs...)
		return
	}
	body, _ := json.Marshal(settlement{ID: s.ID.String(), Device: s.ClientID, Status: s.Status.String(), Reason: s.Reason})
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			err = errors.New(resp.Status)
		}
	}
	if err != nil {
		log.Warn("callback failed; the outcome stays in the log", append(attrs, "error", err)...)
	}
}
