package main

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestParseTrustedProxies(t *testing.T) {
	for _, in := range []string{"", " , ", "10.0.0.1", "10.0.0.0/8, ::1", "192.168.1.7/24", "::ffff:10.0.0.1"} {
		if _, err := parseTrustedProxies(in); err != nil {
			t.Errorf("parseTrustedProxies(%q): %v", in, err)
		}
	}
	for _, in := range []string{"proxy.example", "10.0.0.0/33", "10.0.0.1:80", "1.2.3"} {
		if _, err := parseTrustedProxies(in); err == nil {
			t.Errorf("parseTrustedProxies(%q) accepted it", in)
		}
	}
}

func TestForwardedFor(t *testing.T) {
	trusted, err := parseTrustedProxies("10.0.0.0/8, 127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		remote string
		xff    []string // header lines
		want   string   // RemoteAddr the next handler sees
	}{
		{"untrusted peer's header ignored", "203.0.113.5:4000", []string{"198.51.100.1"}, "203.0.113.5:4000"},
		{"nginx appends to one line", "127.0.0.1:4000", []string{"198.51.100.1"}, "198.51.100.1:0"},
		{"haproxy adds a line", "10.1.2.3:4000", []string{"192.0.2.9", "198.51.100.1"}, "198.51.100.1:0"},
		{"client's claim left of the proxy's entry ignored", "127.0.0.1:4000", []string{"192.0.2.66, 198.51.100.1"}, "198.51.100.1:0"},
		{"chain of trusted proxies skipped", "127.0.0.1:4000", []string{"198.51.100.1, 10.9.9.9"}, "198.51.100.1:0"},
		{"IPv6 client", "127.0.0.1:4000", []string{"2001:db8::1"}, "[2001:db8::1]:0"},
		{"no header", "127.0.0.1:4000", nil, "127.0.0.1:4000"},
		{"only trusted entries", "127.0.0.1:4000", []string{"10.0.0.2"}, "127.0.0.1:4000"},
		{"garbage entry", "127.0.0.1:4000", []string{"198.51.100.1, unknown"}, "127.0.0.1:4000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			h := forwardedFor{next: http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r.RemoteAddr }), trusted: trusted, log: slog.New(slog.DiscardHandler)}
			r := httptest.NewRequest("GET", "/ws", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			h.ServeHTTP(httptest.NewRecorder(), r)
			if got != tc.want {
				t.Errorf("RemoteAddr = %q, want %q", got, tc.want)
			}
			if r.RemoteAddr != tc.remote {
				t.Errorf("the caller's request was changed: RemoteAddr %q", r.RemoteAddr)
			}
		})
	}
}
