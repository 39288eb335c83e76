package main

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseTokens(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want []tokenEntry
		err  string // expected in the error; "" for none
	}{
		{"empty", "", nil, ""},
		{"comments and blanks", "# a comment\n\n   \n  # indented comment\n", nil, ""},
		{"entries", "alice tok-a\r\n\tbob   tok-b  \n# x\nalice tok-a2", []tokenEntry{{"alice", "tok-a"}, {"bob", "tok-b"}, {"alice", "tok-a2"}}, ""},
		{"one field", "alice tok-a\nbob\n", nil, "line 2: "},
		{"three fields", "\n\nalice tok-a extra\n", nil, "line 3: "},
		{"trailing comment is a field", "alice tok-a # note\n", nil, "line 1: "},
		{"duplicate token", "alice t1\nbob t2\ncarol t1\n", nil, "line 3: duplicate token (also on line 1)"},
		{"control character", "alice t\x001\n", nil, "line 1: control character"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTokens([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestParseTokensErrorsHideTokens: an error names the line, never the
// token on it, so a log of a bad tokens file leaks nothing.
func TestParseTokensErrorsHideTokens(t *testing.T) {
	for _, in := range []string{"alice s3cr3t extra", "s3cr3t", "a s3cr3t\nb s3cr3t", "a s3cr3t\x01"} {
		_, err := parseTokens([]byte(in))
		if err == nil || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%q: error %v", in, err)
		}
	}
}

// FuzzParseTokens: parsing never panics, and whatever parses comes back
// unchanged through formatTokens and parseTokens.
func FuzzParseTokens(f *testing.F) {
	for _, s := range []string{"", "a b", "a b\nc d\n", "# x\n\na b\r\n", "a b c", "a b\nc b", "é\u00a0ü", "a\x85b", "#a b", " a\tb ", "a b\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := parseTokens(data)
		if err != nil {
			return
		}
		again, err := parseTokens(formatTokens(entries))
		if err != nil {
			t.Fatalf("%q parsed as %q, whose formatting does not parse: %v", data, entries, err)
		}
		if len(again) != len(entries) || (len(entries) > 0 && !reflect.DeepEqual(again, entries)) {
			t.Fatalf("%q parsed as %q, then as %q", data, entries, again)
		}
		for _, e := range entries {
			if e.identity == "" || e.token == "" {
				t.Fatalf("%q: empty field in %q", data, e)
			}
		}
	})
}

func TestTokenSetLookup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("alice tok-a\nbob tok-b\nalice tok-a2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts, err := loadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	for token, want := range map[string]string{"tok-a": "alice", "tok-b": "bob", "tok-a2": "alice", "tok-": "", "tok-a ": "", "": "", "TOK-A": ""} {
		got, ok := ts.lookup(token)
		if got != want || ok != (want != "") {
			t.Errorf("lookup(%q) = %q, %v; want %q", token, got, ok, want)
		}
	}
	if err := os.WriteFile(path, []byte("# nothing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadTokens(path); err == nil || !strings.Contains(err.Error(), "no tokens") {
		t.Errorf("empty tokens file: %v", err)
	}
}

func TestBearerToken(t *testing.T) {
	for h, want := range map[string]string{"Bearer abc": "abc", "bearer abc": "abc", "Bearer  abc ": "abc", "Basic abc": "", "Bearer": "", "": "", "abc": ""} {
		if got := bearerToken(h); got != want {
			t.Errorf("bearerToken(%q) = %q, want %q", h, got, want)
		}
	}
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		content, want string
		ok            bool
	}{
		{"tok\n", "tok", true},
		{"  tok \r\n", "tok", true},
		{"\n", "", false},
		{"s3cr3t en\n", "", false},
		{"s3cr3t\nen\n", "", false},
	}
	for i, tc := range cases {
		path := filepath.Join(dir, string(rune('a'+i)))
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := readTokenFile(path)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("%q: %q, %v", tc.content, got, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%q: the error quotes the token: %v", tc.content, err)
		}
	}
}

func TestCertIdentity(t *testing.T) {
	u, _ := url.Parse("spiffe://example.org/sensor/1")
	u2, _ := url.Parse("urn:example:2")
	cases := []struct {
		name string
		cert x509.Certificate
		want string
	}{
		{"URI first", x509.Certificate{URIs: []*url.URL{u, u2}, DNSNames: []string{"a.example"}, Subject: pkix.Name{CommonName: "cn"}}, "spiffe://example.org/sensor/1"},
		{"DNS next", x509.Certificate{DNSNames: []string{"a.example", "b.example"}, Subject: pkix.Name{CommonName: "cn"}}, "a.example"},
		{"CN last", x509.Certificate{Subject: pkix.Name{CommonName: "cn"}}, "cn"},
		{"nothing", x509.Certificate{}, ""},
	}
	for _, tc := range cases {
		if got := certIdentity(&tc.cert); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "127.1.2.3:0": true, "[::1]:80": true, "localhost:8080": true, "LocalHost:1": true,
		"0.0.0.0:8080": false, ":8080": false, "[::]:80": false, "192.168.1.2:80": false, "example.com:80": false,
		"127.0.0.1": false, "[::ffff:127.0.0.1]:1": true,
	} {
		if got := isLoopbackListen(addr); got != want {
			t.Errorf("isLoopbackListen(%q) = %v", addr, got)
		}
	}
	for host, want := range map[string]bool{
		"127.0.0.1": true, "127.0.0.1:8080": true, "[::1]:8080": true, "[::1]": true, "localhost": true, "localhost:1": true,
		"evil.example": false, "evil.example:8080": false, "": false, "127.0.0.1.evil.example": false, "localhost.evil.example:1": false, "10.0.0.1:80": false,
	} {
		if got := isLoopbackHostHeader(host); got != want {
			t.Errorf("isLoopbackHostHeader(%q) = %v", host, got)
		}
	}
}

func TestParseOrigins(t *testing.T) {
	got, err := parseOrigins(" https://App.example, http://localhost:3000 ,")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]bool{"https://app.example": true, "http://localhost:3000": true}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v", got)
	}
	for _, bad := range []string{"*", "app.example", "https://app.example/path", "ftp://x", "https://u@app.example"} {
		if _, err := parseOrigins(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestRefusalLog: a burst of refusals makes one log line; the rest are
// counted and reported.
func TestRefusalLog(t *testing.T) {
	var buf bytes.Buffer
	l := &refusalLog{log: slog.New(slog.NewTextHandler(&buf, nil))}
	for range 50 {
		l.refused("handshake refused", "reason", "test")
	}
	if n := strings.Count(buf.String(), "handshake refused"); n != 1 {
		t.Fatalf("%d lines for 50 refusals within a second:\n%s", n, &buf)
	}
	l.flush()
	if !strings.Contains(buf.String(), "refused handshakes not logged\" count=49") {
		t.Fatalf("flush did not report the 49 refusals not logged:\n%s", &buf)
	}
}
