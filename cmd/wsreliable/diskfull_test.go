//go:build linux

package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
)

func TestDiskFullSendCLI(t *testing.T) {
	dir := testkit.MountTmpfs(t, "2m")
	data := filepath.Join(dir, "cli")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	// Fill the disk, leaving a little room for the store.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	fi, _ := f.Stat()
	if err := f.Truncate(fi.Size() - 128<<10); err != nil {
		t.Fatal(err)
	}
	f.Close()

	var in strings.Builder
	for i := range 20000 {
		in.WriteString("line " + strconv.Itoa(i) + "\n")
	}
	code, out, errOut := sendRun(t, in.String(), "-url", deadURL(t), "-data", data, "-receipts", "-wait", "1s")
	if code == exitOK {
		t.Fatal("send on a full disk exited 0")
	}
	if !strings.Contains(errOut, "disk full") {
		t.Fatalf("stderr lacks \"disk full\":\n%s", errOut)
	}
	queued := 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Contains(l, `"event":"queued"`) {
			queued++
		}
	}
	t.Logf("first run: exit %d, %d lines queued before disk full", code, queued)
	if queued == 0 {
		t.Fatal("nothing queued before the disk filled")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, filepath.Join(t.TempDir(), "srv"))
	code, _, errOut = sendRun(t, "", "-url", srv.url, "-data", data, "-wait", "30s")
	if code != exitOK {
		t.Fatalf("rerun exited %d:\n%s", code, errOut)
	}
	got := decodeLines[delivered](t, waitLines(t, srv.stdout, queued, 30*time.Second))
	if len(got) != queued {
		t.Fatalf("serve printed %d lines, want %d", len(got), queued)
	}
	for i, d := range got {
		if p := payloadOf(t, d.Payload, d.PayloadB64); d.Seq != uint64(i+1) || p != "line "+strconv.Itoa(i) {
			t.Fatalf("delivery %d: seq %d payload %q", i, d.Seq, p)
		}
	}
}

// TestDiskFullPushAPI: a push that does not fit on the disk is answered
// 507 and queues nothing; once there is room again pushes succeed, and the
// client receives exactly the pushes answered 200, in order.
func TestDiskFullPushAPI(t *testing.T) {
	dir := testkit.MountTmpfs(t, "4m")
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(testAPIKey), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, filepath.Join(dir, "srv"), "-api-key-file", keyFile)
	c := newAPIClient(t, srv.addr, testAPIKey)
	var ok []pushed
	var payloads []string
	ok = append(ok, c.pushText(t, "d", "before"))
	payloads = append(payloads, "before")

	// Fill the disk, leaving a little room for the store.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	fi, _ := f.Stat()
	if err := f.Truncate(fi.Size() - 128<<10); err != nil {
		t.Fatal(err)
	}
	f.Close()

	big := strings.Repeat("x", 32<<10)
	full := false
	for i := 0; i < 200 && !full; i++ {
		p := fmt.Sprintf("%04d %s", i, big)
		resp, b := c.push(t, pushBody(map[string]any{"client": "d", "payload": p}))
		switch resp.StatusCode {
		case http.StatusOK:
			var out struct {
				Messages []pushed `json:"messages"`
			}
			decodeStrict(t, b, &out)
			ok, payloads = append(ok, out.Messages[0]), append(payloads, p)
		case http.StatusInsufficientStorage:
			full = true
			if e := checkError(t, resp, b, http.StatusInsufficientStorage); !strings.Contains(e, "disk") {
				t.Errorf("507 error %q does not mention the disk", e)
			}
		default:
			t.Fatalf("push %d on a filling disk: HTTP %d %s", i, resp.StatusCode, b)
		}
	}
	if !full {
		t.Fatal("200 pushes of 32 KiB fitted in 128 KiB of free disk")
	}
	t.Logf("%d pushes queued before the disk was full", len(ok)-1)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	ok = append(ok, c.pushText(t, "d", "after"))
	payloads = append(payloads, "after")
	r := startRecv(t, srv.url, filepath.Join(t.TempDir(), "d"), "d")
	checkReceived(t, waitReceived(t, r.stdout, len(ok)), ok, payloads)
}
