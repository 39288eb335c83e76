package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/reliable"
)

// testCA is a certificate authority made for one test; its files live in
// the test's temporary directory.
type testCA struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{t: t, dir: t.TempDir(), cert: cert, key: key}
	ca.file = ca.write(name+"-ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(name, typ string, der []byte) string {
	ca.t.Helper()
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return path
}

var serial int64 = 100

// issue signs a certificate shaped by tmpl (names, key usage) and returns
// its certificate and key files.
func (ca *testCA) issue(name string, tmpl *x509.Certificate) (certFile, keyFile string) {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	return ca.write(name+".pem", "CERTIFICATE", der), ca.write(name+"-key.pem", "PRIVATE KEY", kder)
}

// serverCert issues a certificate for 127.0.0.1 and localhost.
func (ca *testCA) serverCert() (certFile, keyFile string) {
	return ca.issue("server", &x509.Certificate{
		Subject:     pkix.Name{CommonName: "server"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// clientCert issues a client certificate with the given names.
func (ca *testCA) clientCert(name string, uris []string, dns []string, cn string) (certFile, keyFile string) {
	ca.t.Helper()
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, DNSNames: dns, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			ca.t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	return ca.issue(name, tmpl)
}

// writeFile writes content to a new file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sendOne sends one line with send and returns its exit code and stderr.
func sendOne(t *testing.T, line string, args ...string) (int, string) {
	t.Helper()
	code, _, errOut := sendRun(t, line+"\n", append([]string{"-data", filepath.Join(t.TempDir(), "cli")}, args...)...)
	return code, errOut
}

// deliveredOne waits for the n-th line of serve's stdout and returns it.
func deliveredOne(t *testing.T, stdout *syncBuffer, n int) delivered {
	t.Helper()
	lines := waitLines(t, stdout, n, 20*time.Second)
	return decodeLines[delivered](t, lines[n-1:n])[0]
}

func identityOf(d delivered) string {
	if d.Identity == nil {
		return "<absent>"
	}
	return *d.Identity
}

func TestServeTLS(t *testing.T) {
	ca := newTestCA(t, "test")
	cert, key := ca.serverCert()
	srv := startServe(t, filepath.Join(t.TempDir(), "srv"), "-tls-cert", cert, "-tls-key", key)
	wss := "wss://" + srv.addr + "/ws"

	if code, errOut := sendOne(t, "over tls", "-url", wss, "-ca", ca.file, "-wait", "30s"); code != exitOK {
		t.Fatalf("send -ca exited with %d: %s", code, errOut)
	}
	d := deliveredOne(t, srv.stdout, 1)
	if *d.Payload != "over tls" || identityOf(d) != "" {
		t.Fatalf("serve printed %+v (identity %q), want payload \"over tls\" and identity \"\"", d, identityOf(d))
	}

	// Without -ca the server's certificate does not verify: send gives up
	// at once, long before -wait, and says why.
	start := time.Now()
	code, errOut := sendOne(t, "untrusted", "-url", wss, "-wait", "45s")
	if code != exitFail {
		t.Fatalf("send without -ca exited with %d, want %d: %s", code, exitFail, errOut)
	}
	t.Logf("send without -ca: %s", errOut)
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("send without -ca took %v to give up", took)
	}
	for _, want := range []string{"cannot verify the server's TLS certificate", "-ca", "x509", "stay queued"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("send's stderr lacks %q:\n%s", want, errOut)
		}
	}

	// A plain ws:// URL against the TLS listener is not delivered either.
	if code, errOut := sendOne(t, "plain", "-url", srv.url, "-wait", "2s"); code != exitFail {
		t.Errorf("ws:// against a TLS server: exit %d: %s", code, errOut)
	}
	// And -ca with a ws:// URL is a usage error.
	if code, errOut := sendOne(t, "x", "-url", srv.url, "-ca", ca.file); code != exitUsage || !strings.Contains(errOut, "wss://") {
		t.Errorf("-ca with ws://: exit %d: %s", code, errOut)
	}
}

func TestServeMTLS(t *testing.T) {
	ca := newTestCA(t, "test")
	cert, key := ca.serverCert()
	srv := startServe(t, filepath.Join(t.TempDir(), "srv"), "-tls-cert", cert, "-tls-key", key, "-client-ca", ca.file)
	wss := "wss://" + srv.addr + "/ws"

	cases := []struct {
		name, uri, dns, cn, want string
	}{
		{"uri", "spiffe://example.org/sensor-1", "sensor-1.example", "sensor one", "spiffe://example.org/sensor-1"},
		{"dns", "", "sensor-2.example", "sensor two", "sensor-2.example"},
		{"cn", "", "", "sensor three", "sensor three"},
	}
	for i, tc := range cases {
		var uris, dns []string
		if tc.uri != "" {
			uris = []string{tc.uri}
		}
		if tc.dns != "" {
			dns = []string{tc.dns}
		}
		ccert, ckey := ca.clientCert("client-"+tc.name, uris, dns, tc.cn)
		if code, errOut := sendOne(t, "from "+tc.name, "-url", wss, "-ca", ca.file, "-cert", ccert, "-key", ckey, "-client-id", tc.name, "-wait", "30s"); code != exitOK {
			t.Fatalf("%s: send exited with %d: %s", tc.name, code, errOut)
		}
		d := deliveredOne(t, srv.stdout, i+1)
		if *d.Payload != "from "+tc.name || identityOf(d) != tc.want || d.Address != reliable.Address(tc.want, tc.name) {
			t.Errorf("%s: serve printed %+v with identity %q, want %q", tc.name, d, identityOf(d), tc.want)
		}
	}

	// Without a client certificate, or with one from another CA, the TLS
	// handshake is refused and nothing is delivered.
	other := newTestCA(t, "other")
	ocert, okey := other.clientCert("stranger", []string{"spiffe://example.org/sensor-1"}, nil, "")
	for name, extra := range map[string][]string{"no cert": nil, "other CA": {"-cert", ocert, "-key", okey}} {
		code, errOut := sendOne(t, "refused", append([]string{"-url", wss, "-ca", ca.file, "-wait", "2s"}, extra...)...)
		t.Logf("%s: %s", name, errOut)
		if code != exitFail || !strings.Contains(errOut, "tls") {
			t.Errorf("%s: send exited with %d, want %d and a TLS error: %s", name, code, exitFail, errOut)
		}
	}
	if n := len(srv.stdout.lines()); n != len(cases) {
		t.Errorf("serve printed %d lines, want %d", n, len(cases))
	}
	if !strings.Contains(srv.stderr.String(), "TLS handshake refused") {
		t.Errorf("serve did not log the refused handshakes:\n%s", srv.stderr)
	}
}

func TestServeTokens(t *testing.T) {
	dir := t.TempDir()
	tokens := writeFile(t, dir, "tokens", "# who may send\nalice tok-alice-1\n\nbob tok-bob-1\n")
	srv := startServe(t, filepath.Join(dir, "srv"), "-tokens-file", tokens)
	good := writeFile(t, dir, "good", "tok-bob-1\n")
	wrong := writeFile(t, dir, "wrong", "tok-wrong-1\n")

	if code, errOut := sendOne(t, "hello", "-url", srv.url, "-token-file", good, "-wait", "30s"); code != exitOK {
		t.Fatalf("send with a good token exited with %d: %s", code, errOut)
	}
	if d := deliveredOne(t, srv.stdout, 1); *d.Payload != "hello" || identityOf(d) != "bob" || d.Address != "bob/"+d.Client {
		t.Fatalf("serve printed %+v with identity %q, want bob and the address bob/CLIENT", d, identityOf(d))
	}

	for name, extra := range map[string][]string{"wrong token": {"-token-file", wrong}, "no token": nil} {
		code, errOut := sendOne(t, "refused", append([]string{"-url", srv.url, "-wait", "2s"}, extra...)...)
		t.Logf("%s: %s", name, errOut)
		if code != exitFail || !strings.Contains(errOut, "401") {
			t.Errorf("%s: send exited with %d, want %d naming 401: %s", name, code, exitFail, errOut)
		}
		if strings.Contains(errOut, "tok-") {
			t.Errorf("%s: send's stderr shows a token:\n%s", name, errOut)
		}
	}
	if n := len(srv.stdout.lines()); n != 1 {
		t.Errorf("serve printed %d lines, want 1", n)
	}
	logs := srv.stderr.String()
	if !strings.Contains(logs, "handshake refused") {
		t.Errorf("serve did not log the refusals:\n%s", logs)
	}
	if strings.Contains(logs, "tok-") {
		t.Errorf("serve's log shows a token:\n%s", logs)
	}

	// A missing or empty token file is reported before connecting.
	empty := writeFile(t, dir, "empty", "\n")
	if code, errOut := sendOne(t, "x", "-url", srv.url, "-token-file", empty); code != exitFail || !strings.Contains(errOut, "-token-file") {
		t.Errorf("empty -token-file: exit %d: %s", code, errOut)
	}
}

// TestServeTokensSIGHUP runs serve as a process and rotates its tokens
// with SIGHUP: a bad file keeps the old tokens; a good one replaces them.
func TestServeTokensSIGHUP(t *testing.T) {
	dir := t.TempDir()
	tokens := writeFile(t, dir, "tokens", "alice tok-old\n")
	cmd, stdout, stderr, wait := startBinary(t, "", "serve", "-listen", "127.0.0.1:0", "-data", filepath.Join(dir, "srv"), "-tokens-file", tokens)
	var addr string
	testkit.Eventually(t, 20*time.Second, func() bool {
		m := listeningRE.FindStringSubmatch(stderr.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	}, "serve did not log its address; stderr:\n%s", stderr)
	wsURL := "ws://" + addr + "/ws"
	oldTok := writeFile(t, dir, "old", "tok-old")
	newTok := writeFile(t, dir, "new", "tok-new")
	sends := 0
	mustSend := func(tokenFile, what string) {
		t.Helper()
		if code, errOut := sendOne(t, what, "-url", wsURL, "-token-file", tokenFile, "-wait", "30s"); code != exitOK {
			t.Fatalf("%s: send exited with %d: %s", what, code, errOut)
		}
		sends++
		if d := deliveredOne(t, stdout, sends); *d.Payload != what || identityOf(d) != "alice" {
			t.Fatalf("%s: serve printed %+v with identity %q", what, d, identityOf(d))
		}
	}
	hup := func(logLine string, n int) {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 20*time.Second, func() bool { return strings.Count(stderr.String(), logLine) >= n },
			"serve did not log %q after SIGHUP; stderr:\n%s", logLine, stderr)
	}

	mustSend(oldTok, "before")

	// A bad file: the old token stays in force.
	writeFile(t, dir, "tokens", "alice tok-old\nbroken line here\n")
	hup("tokens file not reloaded", 1)
	if !strings.Contains(stderr.String(), "line 2") {
		t.Errorf("the reload error does not name line 2:\n%s", stderr)
	}
	mustSend(oldTok, "after a bad reload")

	// A good file: the new token works, the old one no longer does.
	writeFile(t, dir, "tokens", "alice tok-new\n")
	hup("tokens reloaded", 1)
	mustSend(newTok, "after rotation")
	if code, errOut := sendOne(t, "old token", "-url", wsURL, "-token-file", oldTok, "-wait", "2s"); code != exitFail || !strings.Contains(errOut, "401") {
		t.Errorf("old token after rotation: send exited with %d: %s", code, errOut)
	}
	if strings.Contains(stderr.String(), "tok-") {
		t.Errorf("serve's log shows a token:\n%s", stderr)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := wait(20 * time.Second); err != nil || code != 0 {
		t.Fatalf("serve after SIGTERM: exit %d, %v; stderr:\n%s", code, err, stderr)
	}
}

// TestSendTokenRotation: send reads -token-file before every dial, so a
// token fixed while send retries after a 401 is picked up.
func TestSendTokenRotation(t *testing.T) {
	dir := t.TempDir()
	srv := startServe(t, filepath.Join(dir, "srv"), "-tokens-file", writeFile(t, dir, "tokens", "carol tok-good\n"))
	tokenFile := writeFile(t, dir, "token", "tok-stale")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	codes := make(chan int, 1)
	var errb syncBuffer
	go func() {
		var out bytes.Buffer
		codes <- runSend(ctx, []string{"-url", srv.url, "-data", filepath.Join(dir, "cli"), "-token-file", tokenFile, "-wait", "45s"}, strings.NewReader("rotated\n"), &out, &errb)
	}()
	testkit.Eventually(t, 20*time.Second, func() bool { return strings.Contains(errb.String(), "HTTP 401") },
		"send did not report the 401; stderr:\n%s", &errb)
	writeFile(t, dir, "token", "tok-good\n")
	select {
	case code := <-codes:
		if code != exitOK {
			t.Fatalf("send exited with %d: %s", code, errb.String())
		}
	case <-time.After(50 * time.Second):
		t.Fatal("send did not finish after the token was fixed")
	}
	if d := deliveredOne(t, srv.stdout, 1); identityOf(d) != "carol" {
		t.Fatalf("identity %q, want carol", identityOf(d))
	}
}

func TestServeRefusesNonLoopbackWithoutAuth(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		var out, errb syncBuffer
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		code := serve(ctx, []string{"-listen", listen, "-data", filepath.Join(t.TempDir(), "srv")}, &out, &errb, nil)
		cancel()
		if code == exitOK || !strings.Contains(errb.String(), "-insecure") {
			t.Errorf("-listen %s without auth: exit %d; stderr:\n%s", listen, code, errb.String())
		}
	}
	// -insecure, or any authentication, lets it start.
	startServe(t, filepath.Join(t.TempDir(), "srv"), "-listen", "0.0.0.0:0", "-insecure")
	dir := t.TempDir()
	startServe(t, filepath.Join(dir, "srv"), "-listen", "0.0.0.0:0", "-tokens-file", writeFile(t, dir, "tokens", "a b\n"))
}

func TestServeHostCheck(t *testing.T) {
	srv := startServe(t, filepath.Join(t.TempDir(), "srv"))
	_, port, _ := net.SplitHostPort(srv.addr)
	client := &http.Client{Timeout: 10 * time.Second}
	for host, refused := range map[string]bool{
		"evil.example":             true,
		"evil.example:" + port:     true,
		"127.0.0.1.nip.io:" + port: true,
		"127.0.0.1:" + port:        false,
		"localhost:" + port:        false,
		"LOCALHOST:" + port:        false,
		"[::1]:" + port:            false,
		"127.0.0.1":                false,
	} {
		req, err := http.NewRequest(http.MethodGet, "http://"+srv.addr+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// A plain GET that passes the check reaches the upgrader (400).
		if got := resp.StatusCode == http.StatusForbidden; got != refused {
			t.Errorf("Host %q: HTTP %d, want refused (403): %v", host, resp.StatusCode, refused)
		}
	}
}

func TestServeOrigin(t *testing.T) {
	srv := startServe(t, filepath.Join(t.TempDir(), "srv"), "-allowed-origins", "https://app.example")
	for origin, ok := range map[string]bool{
		"":                        true,
		"https://app.example":     true,
		"http://" + srv.addr:      true, // same host
		"https://evil.example":    false,
		"http://app.example":      false,
		"https://app.example:444": false,
	} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 10 * time.Second}
		ws, resp, err := d.Dial(srv.url, h)
		if ws != nil {
			ws.Close()
		}
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		if (err == nil) != ok || (!ok && status != http.StatusForbidden) {
			t.Errorf("Origin %q: HTTP %d, %v; want accepted: %v", origin, status, err, ok)
		}
	}
}

// TestServeClientIDOfAnotherIdentity is the issue's first row through
// the CLI: bob sends with alice's client ID between two runs of alice's.
// Before, bob's lines were printed under alice's ID. Now each send exits
// 0 only once its lines are printed, under its own address, and all ten
// of alice's lines are there, in order. (Injection on alice's stream ID:
// TestAttackClientIDOfAnotherIdentity in reliable.)
func TestServeClientIDOfAnotherIdentity(t *testing.T) {
	dir := t.TempDir()
	tokens := writeFile(t, dir, "tokens", "alice tok-alice-1\nbob tok-bob-1\n")
	srv := startServe(t, filepath.Join(dir, "srv"), "-tokens-file", tokens)
	send := func(who string, lines ...string) {
		t.Helper()
		token := writeFile(t, dir, who+".token", "tok-"+who+"-1\n")
		code, _, errOut := sendRun(t, strings.Join(lines, "\n")+"\n", "-url", srv.url, "-data", filepath.Join(dir, who),
			"-client-id", "shared", "-token-file", token, "-wait", "30s")
		if code != exitOK {
			t.Fatalf("%s's send exited with %d: %s", who, code, errOut)
		}
	}
	send("alice", "a1", "a2", "a3", "a4", "a5")
	send("bob", "b1", "b2", "b3")
	send("alice", "a6", "a7", "a8", "a9", "a10")

	got := map[string][]string{}
	for _, d := range decodeLines[delivered](t, srv.stdout.lines()) {
		if d.Client != "shared" || d.Address != identityOf(d)+"/shared" {
			t.Errorf("line %+v: want client shared under the address IDENTITY/shared", d)
		}
		got[d.Address] = append(got[d.Address], payloadOf(t, d.Payload, d.PayloadB64))
	}
	want := map[string][]string{
		"alice/shared": {"a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "a10"},
		"bob/shared":   {"b1", "b2", "b3"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("serve printed %v, want %v", got, want)
	}
}
