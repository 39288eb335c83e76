package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
)

// testAPIKey is the key the push API tests run serve with.
const testAPIKey = "test-key-5f0c2a"

// pushed is one entry of a 200 answer of POST /v1/push.
type pushed struct {
	Client string `json:"client"`
	ID     string `json:"id"`
	Seq    uint64 `json:"seq"`
}

// pushStatusAnswer is the answer of GET /v1/messages/{id}.
type pushStatusAnswer struct {
	ID     string `json:"id"`
	Client string `json:"client"`
	Seq    uint64 `json:"seq"`
	Status string `json:"status"`
	Reason string `json:"reason"`
}

// received is one line of recv's stdout.
type received struct {
	ID         string  `json:"id"`
	Seq        uint64  `json:"seq"`
	Payload    *string `json:"payload"`
	PayloadB64 *string `json:"payload_b64"`
}

// apiClient talks to serve's push API.
type apiClient struct {
	base string // http://host:port
	key  string
	hc   *http.Client
}

func newAPIClient(t *testing.T, addr, key string) *apiClient {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &apiClient{base: "http://" + addr, key: key, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// do sends a request with auth as its Authorization header (none if
// empty) and returns the response with its body read.
func (c *apiClient) do(t testing.TB, method, path, auth, body string) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := c.try(method, path, auth, body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// try is do for any goroutine: it returns the error instead.
func (c *apiClient) try(method, path, auth, body string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: reading the body: %w", method, path, err)
	}
	return resp, b, nil
}

// push POSTs body to /v1/push with the key.
func (c *apiClient) push(t testing.TB, body string) (*http.Response, []byte) {
	t.Helper()
	return c.do(t, http.MethodPost, "/v1/push", "Bearer "+c.key, body)
}

// pushOK pushes body and fails the test unless the answer is 200.
func (c *apiClient) pushOK(t testing.TB, body string) []pushed {
	t.Helper()
	resp, b := c.push(t, body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push %.200s: HTTP %d %s", body, resp.StatusCode, b)
	}
	var out struct {
		Messages []pushed `json:"messages"`
	}
	decodeStrict(t, b, &out)
	return out.Messages
}

// pushText pushes one text payload to one client and returns its entry.
func (c *apiClient) pushText(t testing.TB, client, payload string) pushed {
	t.Helper()
	ms := c.pushOK(t, pushBody(map[string]any{"client": client, "payload": payload}))
	if len(ms) != 1 || ms[0].Client != client {
		t.Fatalf("push to %q answered %+v", client, ms)
	}
	return ms[0]
}

// status GETs /v1/messages/{id}.
func (c *apiClient) status(t testing.TB, id string) (int, pushStatusAnswer) {
	t.Helper()
	resp, b := c.do(t, http.MethodGet, "/v1/messages/"+id, "Bearer "+c.key, "")
	var st pushStatusAnswer
	if resp.StatusCode == http.StatusOK {
		decodeStrict(t, b, &st)
	}
	return resp.StatusCode, st
}

// waitStatus polls id's status until it is want.
func (c *apiClient) waitStatus(t testing.TB, id, want string) pushStatusAnswer {
	t.Helper()
	var st pushStatusAnswer
	var code int
	testkit.Eventually(t, 20*time.Second, func() bool {
		code, st = c.status(t, id)
		return code == http.StatusOK && st.Status == want
	}, "status of %s: HTTP %d %+v, want %q", id, code, st, want)
	return st
}

func pushBody(v map[string]any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func decodeStrict(t testing.TB, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
}

// checkError checks an error answer: its status, JSON content type and
// {"error":"..."} body.
func checkError(t testing.TB, resp *http.Response, body []byte, want int) string {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("HTTP %d %s, want %d", resp.StatusCode, body, want)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var e struct {
		Error string `json:"error"`
	}
	decodeStrict(t, body, &e)
	if e.Error == "" {
		t.Errorf("empty error in %s", body)
	}
	return e.Error
}

// startServeAPI runs serve in-process with the push API enabled (key
// testAPIKey) and the extra flags.
func startServeAPI(t *testing.T, extra ...string) (*serveProc, *apiClient) {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("  "+testAPIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, filepath.Join(t.TempDir(), "srv"), append([]string{"-api-key-file", keyFile}, extra...)...)
	return srv, newAPIClient(t, srv.addr, testAPIKey)
}

// recvProc is a recv command running in-process.
type recvProc struct {
	stdout *syncBuffer
	stderr *syncBuffer
	stop   func() int
}

// startRecv runs recv for clientID with its store in dataDir, and extra
// flags, until stop is called (or the test ends).
func startRecv(t *testing.T, url, dataDir, clientID string, extra ...string) *recvProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &recvProc{stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	codes := make(chan int, 1)
	args := append([]string{"-url", url, "-data", dataDir, "-client-id", clientID, "-heartbeat", "500ms", "-heartbeat-timeout", "1s"}, extra...)
	go func() { codes <- runRecv(ctx, args, nil, p.stdout, p.stderr) }()
	var once sync.Once
	code := -1
	p.stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-codes:
			case <-time.After(20 * time.Second):
				t.Errorf("recv did not stop within 20s after cancellation")
			}
		})
		return code
	}
	t.Cleanup(func() { p.stop() })
	return p
}

// waitReceived waits until out holds n lines and returns them decoded.
func waitReceived(t *testing.T, out *syncBuffer, n int) []received {
	t.Helper()
	return decodeLines[received](t, waitLines(t, out, n, 30*time.Second))
}

// checkReceived checks that got is exactly want, in order: same IDs,
// sequences and payloads.
func checkReceived(t *testing.T, got []received, want []pushed, payloads []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("recv printed %d lines, want %d: %+v", len(got), len(want), got)
	}
	for i, g := range got {
		if p := payloadOf(t, g.Payload, g.PayloadB64); g.ID != want[i].ID || g.Seq != want[i].Seq || p != payloads[i] {
			t.Fatalf("line %d: id %s seq %d payload %q, want id %s seq %d payload %q", i+1, g.ID, g.Seq, p, want[i].ID, want[i].Seq, payloads[i])
		}
	}
}

func TestPushAPIDisabled(t *testing.T) {
	srv := startServe(t, filepath.Join(t.TempDir(), "srv"))
	c := newAPIClient(t, srv.addr, testAPIKey)
	for _, r := range []struct{ method, path string }{
		{http.MethodPost, "/v1/push"},
		{http.MethodGet, "/v1/messages/0190a3c5-0000-7000-8000-000000000000"},
	} {
		resp, b := c.do(t, r.method, r.path, "Bearer "+testAPIKey, `{"client":"a","payload":"x"}`)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s without -api-key-file: HTTP %d %s, want 404", r.method, r.path, resp.StatusCode, b)
		}
	}
}

func TestPushAPIKeyFile(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n\t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, file, want string }{
		{"empty", empty, "is empty"},
		{"missing", filepath.Join(dir, "missing"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb syncBuffer
			code := serve(t.Context(), []string{"-listen", "127.0.0.1:0", "-data", filepath.Join(dir, "srv"), "-api-key-file", tc.file}, &out, &errb, func(a net.Addr) {
				t.Errorf("serve listened on %v with a bad key file", a)
			})
			if code != exitFail {
				t.Errorf("exit %d, want %d", code, exitFail)
			}
			if !strings.Contains(errb.String(), "-api-key-file") || !strings.Contains(errb.String(), tc.want) {
				t.Errorf("stderr lacks -api-key-file and %q:\n%s", tc.want, errb.String())
			}
		})
	}
}

func TestPushAPIUnauthorized(t *testing.T) {
	srv, c := startServeAPI(t)
	body := `{"client":"victim","payload":"must not be queued"}`
	cases := []struct{ name, method, path, auth string }{
		{"no header", http.MethodPost, "/v1/push", ""},
		{"wrong key", http.MethodPost, "/v1/push", "Bearer wrong-key"},
		{"key prefix", http.MethodPost, "/v1/push", "Bearer " + testAPIKey[:len(testAPIKey)-1]},
		{"key and more", http.MethodPost, "/v1/push", "Bearer " + testAPIKey + "x"},
		{"basic scheme", http.MethodPost, "/v1/push", "Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+testAPIKey))},
		{"bare key", http.MethodPost, "/v1/push", testAPIKey},
		{"status without key", http.MethodGet, "/v1/messages/0190a3c5-0000-7000-8000-000000000000", ""},
		{"status with wrong key", http.MethodGet, "/v1/messages/0190a3c5-0000-7000-8000-000000000000", "Bearer nope"},
		{"wrong method without key", http.MethodGet, "/v1/push", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := c.do(t, tc.method, tc.path, tc.auth, body)
			checkError(t, resp, b, http.StatusUnauthorized)
			if resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	// The scheme is case-insensitive.
	resp, b := c.do(t, http.MethodGet, "/v1/messages/0190a3c5-0000-7000-8000-000000000000", "bearer "+testAPIKey, "")
	checkError(t, resp, b, http.StatusNotFound)

	// None of the refused pushes was queued: the victim's first message is
	// the one pushed now.
	want := c.pushText(t, "victim", "first")
	if want.Seq != 1 {
		t.Errorf("first accepted push has seq %d, want 1", want.Seq)
	}
	r := startRecv(t, srv.url, filepath.Join(t.TempDir(), "victim"), "victim")
	checkReceived(t, waitReceived(t, r.stdout, 1), []pushed{want}, []string{"first"})
}

func TestPushAPIBadRequests(t *testing.T) {
	srv, c := startServeAPI(t)
	long := strings.Repeat("x", 257)
	cases := []struct{ name, body string }{
		{"empty body", ``},
		{"not JSON", `nope`},
		{"truncated", `{"client":"victim","payload":"x"`},
		{"array", `[{"client":"victim","payload":"x"}]`},
		{"two values", `{"client":"victim","payload":"x"}{}`},
		{"unknown field", `{"client":"victim","payload":"x","priority":1}`},
		{"payload not a string", `{"client":"victim","payload":5}`},
		{"both payloads", `{"client":"victim","payload":"x","payload_b64":"eA=="}`},
		{"no payload", `{"client":"victim"}`},
		{"null payload", `{"client":"victim","payload":null}`},
		{"both client fields", `{"client":"victim","clients":["victim"],"payload":"x"}`},
		{"no client", `{"payload":"x"}`},
		{"empty client list", `{"clients":[],"payload":"x"}`},
		{"empty client ID", `{"client":"","payload":"x"}`},
		{"empty ID in list", `{"clients":["victim",""],"payload":"x"}`},
		{"client ID too long", `{"client":"` + long + `","payload":"x"}`},
		{"duplicate clients", `{"clients":["victim","other","victim"],"payload":"x"}`},
		{"bad ttl", `{"client":"victim","payload":"x","ttl":"soon"}`},
		{"ttl without unit", `{"client":"victim","payload":"x","ttl":"30"}`},
		{"negative ttl", `{"client":"victim","payload":"x","ttl":"-1s"}`},
		{"numeric ttl", `{"client":"victim","payload":"x","ttl":30}`},
		{"bad base64", `{"client":"victim","payload_b64":"%%%"}`},
		{"url base64", `{"client":"victim","payload_b64":"-_8="}`},
		{"bad id", `{"client":"victim","payload":"x","id":"42"}`},
		{"zero id", `{"client":"victim","payload":"x","id":"00000000-0000-0000-0000-000000000000"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := c.push(t, tc.body)
			checkError(t, resp, b, http.StatusBadRequest)
		})
	}

	t.Run("wrong method", func(t *testing.T) {
		for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
			resp, b := c.do(t, m, "/v1/push", "Bearer "+testAPIKey, `{"client":"victim","payload":"x"}`)
			checkError(t, resp, b, http.StatusMethodNotAllowed)
			if allow := resp.Header.Get("Allow"); allow != http.MethodPost {
				t.Errorf("%s: Allow %q, want POST", m, allow)
			}
		}
		resp, b := c.do(t, http.MethodPost, "/v1/messages/0190a3c5-0000-7000-8000-000000000000", "Bearer "+testAPIKey, "")
		checkError(t, resp, b, http.StatusMethodNotAllowed)
		if allow := resp.Header.Get("Allow"); !strings.Contains(allow, http.MethodGet) {
			t.Errorf("Allow %q lacks GET", allow)
		}
	})
	t.Run("malformed message ID", func(t *testing.T) {
		for _, id := range []string{"nope", "0190a3c5-0000-7000-8000-00000000000", "0190a3c5-0000-7000-8000-00000000000g"} {
			resp, b := c.do(t, http.MethodGet, "/v1/messages/"+id, "Bearer "+testAPIKey, "")
			checkError(t, resp, b, http.StatusBadRequest)
		}
	})
	t.Run("unknown message", func(t *testing.T) {
		resp, b := c.do(t, http.MethodGet, "/v1/messages/0190a3c5-0000-7000-8000-000000000000", "Bearer "+testAPIKey, "")
		if e := checkError(t, resp, b, http.StatusNotFound); e != "unknown message" {
			t.Errorf("error %q, want \"unknown message\"", e)
		}
	})
	t.Run("unknown path", func(t *testing.T) {
		resp, b := c.do(t, http.MethodGet, "/v1/nothing", "Bearer "+testAPIKey, "")
		checkError(t, resp, b, http.StatusNotFound)
	})

	// Nothing was queued by the refused requests.
	want := c.pushText(t, "victim", "first")
	r := startRecv(t, srv.url, filepath.Join(t.TempDir(), "victim"), "victim")
	checkReceived(t, waitReceived(t, r.stdout, 1), []pushed{want}, []string{"first"})
}

func TestPushAPITooLarge(t *testing.T) {
	srv, c := startServeAPI(t)
	// One byte over the API's payload limit, as base64: the body fits
	// under the request cap, the message does not.
	over := make([]byte, maxPushPayload+1)
	for i := range over {
		over[i] = byte(i)
	}
	resp, b := c.push(t, pushBody(map[string]any{"client": "victim", "payload_b64": base64.StdEncoding.EncodeToString(over)}))
	if e := checkError(t, resp, b, http.StatusRequestEntityTooLarge); !strings.Contains(e, "too large") {
		t.Errorf("error %q does not say too large", e)
	}
	// A request body over the cap is cut off while it is read.
	resp, b = c.push(t, pushBody(map[string]any{"client": "victim", "payload": strings.Repeat("y", 2*maxPushPayload)}))
	if e := checkError(t, resp, b, http.StatusRequestEntityTooLarge); !strings.Contains(e, "request body larger than") {
		t.Errorf("error %q does not name the body limit", e)
	}

	// Exactly the limit is accepted and delivered, and is the first
	// message queued for a client with room for it.
	fits := over[:maxPushPayload]
	ms := c.pushOK(t, pushBody(map[string]any{"client": "big", "payload_b64": base64.StdEncoding.EncodeToString(fits)}))
	vm := c.pushText(t, "victim", "first")
	rb := startRecv(t, srv.url, filepath.Join(t.TempDir(), "big"), "big")
	checkReceived(t, waitReceived(t, rb.stdout, 1), ms, []string{string(fits)})
	rv := startRecv(t, srv.url, filepath.Join(t.TempDir(), "victim"), "victim")
	checkReceived(t, waitReceived(t, rv.stdout, 1), []pushed{vm}, []string{"first"})
}

func TestPushAPIQuotaFull(t *testing.T) {
	srv, c := startServeAPI(t, "-outbox-max-messages", "2", "-outbox-max-bytes", "4096")
	// Larger than a client's whole outbox: the library's ErrTooLarge.
	resp, b := c.push(t, pushBody(map[string]any{"client": "full", "payload": strings.Repeat("z", 5000)}))
	if e := checkError(t, resp, b, http.StatusRequestEntityTooLarge); !strings.Contains(e, "too large") {
		t.Errorf("error %q does not say too large", e)
	}
	var full []pushed
	for _, p := range []string{"q1", "q2"} {
		full = append(full, c.pushText(t, "full", p))
	}
	resp, b = c.push(t, `{"client":"full","payload":"q3"}`)
	checkError(t, resp, b, http.StatusInsufficientStorage)
	// Over the byte quota, under the count quota.
	resp, b = c.push(t, pushBody(map[string]any{"client": "bytes", "payload": strings.Repeat("b", 3000)}))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push of 3000 bytes: HTTP %d %s", resp.StatusCode, b)
	}
	resp, b = c.push(t, pushBody(map[string]any{"client": "bytes", "payload": strings.Repeat("b", 3000)}))
	checkError(t, resp, b, http.StatusInsufficientStorage)
	// A fan-out including the full client is refused for every recipient.
	resp, b = c.push(t, `{"clients":["other","full"],"payload":"fan-out"}`)
	checkError(t, resp, b, http.StatusInsufficientStorage)

	other := c.pushText(t, "other", "last")
	if other.Seq != 1 {
		t.Errorf("other's first accepted push has seq %d, want 1: the refused fan-out was queued", other.Seq)
	}
	ro := startRecv(t, srv.url, filepath.Join(t.TempDir(), "other"), "other")
	checkReceived(t, waitReceived(t, ro.stdout, 1), []pushed{other}, []string{"last"})

	// Once the client has taken its pushes, there is room again.
	rf := startRecv(t, srv.url, filepath.Join(t.TempDir(), "full"), "full")
	checkReceived(t, waitReceived(t, rf.stdout, 2), full, []string{"q1", "q2"})
	for _, m := range full {
		c.waitStatus(t, m.ID, "acked")
	}
	more := c.pushText(t, "full", "q4")
	if more.Seq != 3 {
		t.Errorf("push after draining has seq %d, want 3", more.Seq)
	}
	checkReceived(t, waitReceived(t, rf.stdout, 3)[2:], []pushed{more}, []string{"q4"})
}

func TestPushAPIEvict(t *testing.T) {
	srv, c := startServeAPI(t, "-outbox-max-messages", "2", "-outbox-evict")
	var ms []pushed
	for _, p := range []string{"e1", "e2", "e3"} {
		ms = append(ms, c.pushText(t, "ev", p))
	}
	st := c.waitStatus(t, ms[0].ID, "evicted")
	if st.Client != "ev" || st.Seq != 1 || st.Reason == "" {
		t.Errorf("status of the evicted push: %+v", st)
	}
	r := startRecv(t, srv.url, filepath.Join(t.TempDir(), "ev"), "ev")
	checkReceived(t, waitReceived(t, r.stdout, 2), ms[1:], []string{"e2", "e3"})
}

func TestPushAPIStatus(t *testing.T) {
	srv, c := startServeAPI(t)
	m := c.pushText(t, "st", "hello")
	code, st := c.status(t, m.ID)
	if code != http.StatusOK {
		t.Fatalf("status of a fresh push: HTTP %d", code)
	}
	if want := (pushStatusAnswer{ID: m.ID, Client: "st", Seq: m.Seq, Status: "pending"}); st != want {
		t.Fatalf("status %+v, want %+v", st, want)
	}
	// The ID is also accepted in upper case.
	if code, st := c.status(t, strings.ToUpper(m.ID)); code != http.StatusOK || st.ID != m.ID {
		t.Errorf("status by upper-case ID: HTTP %d %+v", code, st)
	}
	r := startRecv(t, srv.url, filepath.Join(t.TempDir(), "st"), "st")
	checkReceived(t, waitReceived(t, r.stdout, 1), []pushed{m}, []string{"hello"})
	st = c.waitStatus(t, m.ID, "acked")
	if st.Client != "st" || st.Seq != m.Seq || st.Reason != "" {
		t.Errorf("acked status %+v", st)
	}
}

// TestPushTTLExpired: a push whose TTL passes while its client is offline
// is never printed by recv, and its status says expired.
func TestPushTTLExpired(t *testing.T) {
	const ttl = 300 * time.Millisecond
	srv, c := startServeAPI(t)
	start := time.Now()
	stale := c.pushOK(t, fmt.Sprintf(`{"client":"late","payload":"stale","ttl":%q}`, ttl.String()))[0]
	if code, st := c.status(t, stale.ID); code != http.StatusOK || st.Status != "pending" {
		t.Fatalf("status before the TTL: HTTP %d %+v", code, st)
	}
	// The client stays away until the TTL has passed.
	testkit.Eventually(t, 10*time.Second, func() bool { return time.Since(start) > ttl+100*time.Millisecond },
		"the clock did not pass the TTL")
	r := startRecv(t, srv.url, filepath.Join(t.TempDir(), "late"), "late")
	fresh := c.pushText(t, "late", "fresh")
	// fresh comes after stale in the client's stream: once it is printed,
	// stale had its chance.
	checkReceived(t, waitReceived(t, r.stdout, 1), []pushed{fresh}, []string{"fresh"})
	st := c.waitStatus(t, stale.ID, "expired")
	if st.Client != "late" || st.Seq != stale.Seq {
		t.Errorf("expired status %+v", st)
	}
	c.waitStatus(t, fresh.ID, "acked")
	if n := len(r.stdout.lines()); n != 1 {
		t.Errorf("recv printed %d lines, want 1:\n%s", n, r.stdout)
	}
}

// TestPushAPIIdentity: with tokens, a client's pushes are addressed by
// identity and client ID, either as "identity" and "client" or as the
// address serve prints; a push to the bare client ID is another client's
// (the empty identity's) and never reaches the authenticated one.
func TestPushAPIIdentity(t *testing.T) {
	dir := t.TempDir()
	tokens := writeFile(t, dir, "tokens", "bob tok-bob-1\n")
	srv, c := startServeAPI(t, "-tokens-file", tokens)
	bare := c.pushText(t, "phone", "not for bob")
	byIdentity := c.pushOK(t, `{"identity":"bob","client":"phone","payload":"one"}`)
	byAddress := c.pushOK(t, `{"client":"bob/phone","payload":"two"}`)
	if byIdentity[0].Client != "bob/phone" {
		t.Errorf("the answer names %q, want the address bob/phone", byIdentity[0].Client)
	}
	resp, b := c.push(t, `{"identity":"bob","client":"bob/phone","payload":"x"}`)
	checkError(t, resp, b, http.StatusBadRequest)

	token := writeFile(t, dir, "token", "tok-bob-1\n")
	r := startRecv(t, srv.url, filepath.Join(dir, "recv"), "phone", "-token-file", token)
	checkReceived(t, waitReceived(t, r.stdout, 2), []pushed{byIdentity[0], byAddress[0]}, []string{"one", "two"})
	if st := c.waitStatus(t, bare.ID, "pending"); st.Client != "phone" {
		t.Errorf("the bare push's status: %+v", st)
	}
}

// TestPushAPIStoreQuota: at -max-store-bytes pushes answer 507 (the
// server stays up); once the client has taken its pushes they are
// accepted again.
func TestPushAPIStoreQuota(t *testing.T) {
	srv, c := startServeAPI(t, "-max-store-bytes", "262144")
	payload := strings.Repeat("q", 16<<10)
	var ok []pushed
	for len(ok) < 100 {
		resp, b := c.push(t, pushBody(map[string]any{"client": "hoarder", "payload": payload}))
		if resp.StatusCode == http.StatusInsufficientStorage {
			if e := checkError(t, resp, b, http.StatusInsufficientStorage); !strings.Contains(e, "quota") {
				t.Errorf("507 error %q does not name the quota", e)
			}
			break
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("push %d: HTTP %d %s", len(ok), resp.StatusCode, b)
		}
		var pr struct{ Messages []pushed }
		decodeStrict(t, b, &pr)
		ok = append(ok, pr.Messages...)
	}
	if len(ok) == 100 {
		t.Fatal("100 pushes of 16 KiB went into a 256 KiB store")
	}
	r := startRecv(t, srv.url, filepath.Join(t.TempDir(), "hoarder"), "hoarder")
	waitReceived(t, r.stdout, len(ok))
	for _, m := range ok {
		c.waitStatus(t, m.ID, "acked")
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		resp, _ := c.push(t, `{"client":"later","payload":"accepted again"}`)
		return resp.StatusCode == http.StatusOK
	}, "pushes still refused after the store drained")
}

// TestPushAPIIdempotent: a caller that retries a push with the "id" it
// gave (its first answer lost, say) gets the first push's answer back and
// recv prints the message once; a fan-out retried with its "id" too; the
// id of one client's push given for another is 409.
func TestPushAPIIdempotent(t *testing.T) {
	srv, c := startServeAPI(t)
	const id = "6f1c2a1e-9b1d-4c55-8a53-2b9a7d1e0c11"
	one := pushBody(map[string]any{"client": "idem", "payload": "once", "id": id})
	first := c.pushOK(t, one)
	if len(first) != 1 || first[0].ID != id {
		t.Fatalf("push with id: %+v, want the message to have ID %s", first, id)
	}
	if again := c.pushOK(t, one); again[0] != first[0] {
		t.Fatalf("retry answered %+v, first %+v", again[0], first[0])
	}
	many := pushBody(map[string]any{"clients": []string{"idem", "idem-2"}, "payload": "fan", "id": id})
	fan := c.pushOK(t, many)
	if fan[0].ID == id || fan[0].ID == fan[1].ID {
		t.Fatalf("fan-out IDs %+v: want one of each recipient's, derived from %s", fan, id)
	}
	if again := c.pushOK(t, many); again[0] != fan[0] || again[1] != fan[1] {
		t.Fatalf("fan-out retry answered %+v, first %+v", again, fan)
	}
	resp, b := c.push(t, pushBody(map[string]any{"client": "idem-2", "payload": "once", "id": id}))
	checkError(t, resp, b, http.StatusConflict)

	r := startRecv(t, srv.url, filepath.Join(t.TempDir(), "idem"), "idem")
	end := c.pushText(t, "idem", "end")
	checkReceived(t, waitReceived(t, r.stdout, 3), []pushed{first[0], fan[0], end}, []string{"once", "fan", "end"})
	c.waitStatus(t, end.ID, "acked")
	if again := c.pushOK(t, one); again[0] != first[0] {
		t.Fatalf("retry after the ack answered %+v, first %+v", again[0], first[0])
	}
}
