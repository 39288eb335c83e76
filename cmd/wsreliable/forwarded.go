package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// trustedProxies holds the addresses of -trusted-proxies: the reverse
// proxies whose X-Forwarded-For header serve believes.
type trustedProxies []netip.Prefix

// parseTrustedProxies parses a comma-separated list of IP addresses and
// CIDR prefixes. Empty means none.
func parseTrustedProxies(s string) (trustedProxies, error) {
	var tp trustedProxies
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("%q is not an IP address or CIDR prefix", f)
			}
			tp = append(tp, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or CIDR prefix", f)
		}
		a = a.Unmap()
		tp = append(tp, netip.PrefixFrom(a, a.BitLen()))
	}
	return tp, nil
}

// contains reports whether a is one of the trusted proxies.
func (tp trustedProxies) contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range tp {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr returns the address of the client behind r when r's peer is
// a trusted proxy: the rightmost X-Forwarded-For entry that is not itself
// a trusted proxy (each proxy appends the address it was reached from,
// so entries to the left of that one are whatever the client claimed).
// It reports false, and the peer stays the client, when the peer is not
// trusted, the header is missing, or that entry is not an IP address.
func (tp trustedProxies) clientAddr(r *http.Request) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || !tp.contains(peer) {
		return netip.Addr{}, false
	}
	// HAProxy adds a header line of its own; nginx appends to the last.
	entries := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(entries) - 1; i >= 0; i-- {
		e := strings.TrimSpace(entries[i])
		if e == "" {
			continue
		}
		a, err := netip.ParseAddr(e)
		if err != nil {
			return netip.Addr{}, false
		}
		if !tp.contains(a) {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// forwardedFor makes the client's address from X-Forwarded-For the
// request's RemoteAddr (port 0) when the request came through a trusted
// proxy, so per-IP connection limits and logs see clients, not the proxy.
type forwardedFor struct {
	next    http.Handler
	trusted trustedProxies
	log     *slog.Logger
}

func (f forwardedFor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if a, ok := f.trusted.clientAddr(r); ok {
		f.log.Debug("client address from X-Forwarded-For", "proxy", r.RemoteAddr, "client", a.String())
		r = r.WithContext(r.Context()) // a shallow copy; r is the caller's
		r.RemoteAddr = netip.AddrPortFrom(a, 0).String()
	}
	f.next.ServeHTTP(w, r)
}
