package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// isLoopbackHost reports whether host (no port, no brackets) is
// "localhost" or an address in 127.0.0.0/8 or ::1.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// isLoopbackListen reports whether serve's -listen address only accepts
// connections from this machine. An empty host (":8080"), 0.0.0.0, :: and
// any other name count as reachable from elsewhere.
func isLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && isLoopbackHost(host)
}

// isLoopbackHostHeader reports whether a request's Host header names this
// machine by a loopback name or address, with or without a port:
// 127.x.y.z, [::1], localhost.
func isLoopbackHostHeader(h string) bool {
	host := h
	if hh, _, err := net.SplitHostPort(h); err == nil {
		host = hh
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		host = h[1 : len(h)-1]
	}
	return isLoopbackHost(host)
}

// refusalLog logs refused handshakes at most once a second and counts the
// refusals it did not log, so a flood of bad requests cannot flood the log.
// It is safe for concurrent use.
type refusalLog struct {
	log *slog.Logger

	mu       sync.Mutex
	last     time.Time
	unlogged int
}

// refused logs one refusal (msg and attrs) unless one was logged in the
// last second; the line carries how many refusals went unlogged before it.
// attrs must hold no secret.
func (l *refusalLog) refused(msg string, attrs ...any) {
	now := time.Now()
	l.mu.Lock()
	if !l.last.IsZero() && now.Sub(l.last) < time.Second {
		l.unlogged++
		l.mu.Unlock()
		return
	}
	n := l.unlogged
	l.last, l.unlogged = now, 0
	l.mu.Unlock()
	l.log.Warn(msg, append(attrs, "unlogged_before", n)...)
}

// flush logs the count of refusals not logged yet, if any.
func (l *refusalLog) flush() {
	l.mu.Lock()
	n := l.unlogged
	l.unlogged = 0
	l.mu.Unlock()
	if n > 0 {
		l.log.Warn("refused handshakes not logged", "count", n)
	}
}

// httpErrorLog is the http.Server's ErrorLog writer: TLS handshake
// failures (a client without a certificate, a scanner) are refusals and
// go through the refusal log; other errors are logged as warnings.
type httpErrorLog struct {
	log      *slog.Logger
	refusals *refusalLog
}

func (w httpErrorLog) Write(p []byte) (int, error) {
	msg := string(bytes.TrimSpace(p))
	if strings.Contains(msg, "TLS handshake error") {
		w.refusals.refused("TLS handshake refused", "error", truncate(msg, 200))
	} else {
		w.log.Warn(msg)
	}
	return len(p), nil
}

// hostGuard refuses, with 403, requests whose Host header is not a
// loopback name or address: on a loopback listener, that is a browser
// page whose own name was rebound to 127.0.0.1 (DNS rebinding).
type hostGuard struct {
	next     http.Handler
	refusals *refusalLog
}

func (g hostGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !isLoopbackHostHeader(r.Host) {
		g.refusals.refused("request refused", "reason", "Host header is not a loopback name or address", "host", truncate(r.Host, 100), "remote", r.RemoteAddr, "status", http.StatusForbidden)
		http.Error(w, "wsreliable: Host must be a loopback name or address on this listener", http.StatusForbidden)
		return
	}
	g.next.ServeHTTP(w, r)
}

// wsAuth authenticates WebSocket handshakes before the library sees them
// and hands the identity on in the request's context, where
// authenticatedIdentity (the server's Authenticate hook) finds it.
//
// Tokens identify, certificates authenticate the transport: with
// -client-ca the TLS layer has already required and verified a client
// certificate, and the identity is the certificate's (certIdentity); with
// -tokens-file the request needs "Authorization: Bearer TOKEN" with a
// listed token, and the identity is the token's, even when a certificate
// was presented too.
type wsAuth struct {
	next        http.Handler
	tokens      *atomic.Pointer[tokenSet] // nil: no -tokens-file
	clientCerts bool
	refusals    *refusalLog
}

type identityKey struct{}

func (a *wsAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	identity, status, reason := a.authenticate(r)
	if status != 0 {
		a.refusals.refused("handshake refused", "reason", reason, "remote", r.RemoteAddr, "status", status)
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wsreliable"`)
		}
		http.Error(w, http.StatusText(status), status)
		return
	}
	a.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, identity)))
}

// authenticate returns the request's identity, or the HTTP status to
// refuse it with and a reason for the log. The reason never says which
// part of a token was wrong, and the answer to the client says only
// "Unauthorized".
func (a *wsAuth) authenticate(r *http.Request) (identity string, status int, reason string) {
	if a.clientCerts {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			return "", http.StatusUnauthorized, "no verified client certificate"
		}
		identity = certIdentity(r.TLS.VerifiedChains[0][0])
	}
	if a.tokens != nil {
		id, ok := a.tokens.Load().lookup(bearerToken(r.Header.Get("Authorization")))
		if !ok {
			return "", http.StatusUnauthorized, "missing or unknown bearer token"
		}
		return id, 0, ""
	}
	if identity == "" {
		return "", http.StatusForbidden, "client certificate has no URI SAN, DNS SAN or Common Name"
	}
	return identity, 0, ""
}

// authenticatedIdentity is the server's Authenticate hook behind wsAuth.
func authenticatedIdentity(r *http.Request) (string, error) {
	id, ok := r.Context().Value(identityKey{}).(string)
	if !ok {
		return "", errors.New("wsreliable: request did not pass authentication")
	}
	return id, nil
}

// certIdentity is the identity a verified client certificate stands for:
// its first URI SAN if it has one (e.g. spiffe://example.org/app), else
// its first DNS SAN, else its Subject Common Name.
func certIdentity(c *x509.Certificate) string {
	switch {
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return c.Subject.CommonName
}

// parseOrigins parses -allowed-origins: comma-separated origins, each
// scheme://host[:port] with scheme http or https and nothing after the
// host. It returns them in canonical form (lower case).
func parseOrigins(list string) (map[string]bool, error) {
	allowed := make(map[string]bool)
	for o := range strings.SplitSeq(list, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		c, ok := canonicalOrigin(o)
		if !ok {
			return nil, fmt.Errorf("%q is not an origin like https://app.example or http://localhost:3000", o)
		}
		allowed[c] = true
	}
	return allowed, nil
}

// canonicalOrigin returns origin as lower-case scheme://host[:port], and
// false if it is not such an origin.
func canonicalOrigin(origin string) (string, bool) {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), true
}

// originChecker returns the server's CheckOrigin: a request without an
// Origin header (not from a browser) passes; one with an Origin passes if
// the origin is in allowed or names the same host as the request's Host
// header (gorilla's default); the others are refused (403) and logged.
func originChecker(allowed map[string]bool, refusals *refusalLog) func(*http.Request) bool {
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if origin == "" {
			return true
		}
		if c, ok := canonicalOrigin(origin); ok {
			if allowed[c] {
				return true
			}
			if u, err := url.Parse(origin); err == nil && strings.EqualFold(u.Host, r.Host) {
				return true
			}
		}
		refusals.refused("handshake refused", "reason", "origin not allowed (see -allowed-origins)", "origin", truncate(origin, 100), "remote", r.RemoteAddr, "status", http.StatusForbidden)
		return false
	}
}

// serverTLSConfig returns serve's TLS configuration: TLS 1.2 at least,
// HTTP/1.1, and with clientCA a client certificate required and verified
// against the CA certificates in that PEM file.
func serverTLSConfig(certFile, keyFile, clientCA string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert/-tls-key: %w", err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"http/1.1"},
	}
	if clientCA != "" {
		pool, err := loadCertPool(clientCA)
		if err != nil {
			return nil, fmt.Errorf("-client-ca: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// loadCertPool returns a pool of the PEM certificates in path; a file
// without any is an error.
func loadCertPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// truncate returns s cut to at most n bytes.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
