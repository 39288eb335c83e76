package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// inspectCmd runs inspect with args and returns its exit code, stdout
// and stderr.
func inspectCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runInspect(t.Context(), args, nil, &out, &errb)
	return code, out.String(), errb.String()
}

func testStream(b byte) protocol.StreamID {
	var s protocol.StreamID
	for i := range s {
		s[i] = b
	}
	return s
}

// buildServerStore writes dir/server.db with pushes to three clients,
// bindings and watermarks, and returns the clients inspect -json must
// show (their Oldest within [start, now]).
func buildServerStore(t *testing.T, dir string) (queue.Meta, []clientDoc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := queue.Open(filepath.Join(dir, serveStoreName), &queue.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var pushes []queue.Push
	for i, client := range []string{"alpha", "alpha", "alpha", "beta"} {
		var id protocol.MessageID
		copy(id[:], fmt.Sprintf("msg-%d", i))
		pushes = append(pushes, queue.Push{Client: client, Entry: queue.Entry{ID: id, Payload: []byte("hello")}})
	}
	if _, _, err := s.Push(ctx, pushes); err != nil {
		t.Fatal(err)
	}
	if err := s.AckOutbox(ctx, "alpha", 1, nil); err != nil {
		t.Fatal(err)
	}
	for _, b := range [][2]string{{"alpha", "alice"}, {"beta", "bob"}, {"gamma", "carol"}} {
		if err := s.Bind(ctx, b[0], b[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range []struct {
		client string
		stream byte
		seq    uint64
	}{{"alpha", 0xa1, 12}, {"gamma", 0xc1, 3}, {"gamma", 0xc2, 40}} {
		if err := s.SetWatermark(ctx, w.client, testStream(w.stream), w.seq); err != nil {
			t.Fatal(err)
		}
	}
	push := func(client string) outboxDoc {
		i, err := s.OutboxInfo(client)
		if err != nil {
			t.Fatal(err)
		}
		return outboxDoc{Stream: i.Stream.String(), Messages: i.Messages, Bytes: i.Bytes,
			FirstSeq: i.FirstSeq, LastSeq: i.LastSeq, Acked: i.Acked, Oldest: i.Oldest.UTC()}
	}
	want := []clientDoc{
		{Client: "alpha", Identity: "alice", Push: push("alpha"), Watermarks: map[string]uint64{testStream(0xa1).String(): 12}},
		{Client: "beta", Identity: "bob", Push: push("beta"), Watermarks: map[string]uint64{}},
		{Client: "gamma", Identity: "carol", Watermarks: map[string]uint64{testStream(0xc1).String(): 3, testStream(0xc2).String(): 40}},
	}
	if want[0].Push.Messages != 2 || want[0].Push.FirstSeq != 2 || want[1].Push.Messages != 1 {
		t.Fatalf("store built wrong: %+v", want)
	}
	meta := s.Meta()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return meta, want
}

func TestInspectServerJSON(t *testing.T) {
	dir := t.TempDir()
	meta, want := buildServerStore(t, dir)
	code, out, errOut := inspectCmd(t, "-data", dir, "-json")
	if code != exitOK {
		t.Fatalf("inspect -json exited with %d: %s", code, errOut)
	}
	var doc inspectDoc
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("decoding %s: %v", out, err)
	}
	if len(doc.Stores) != 1 {
		t.Fatalf("%d stores in %s", len(doc.Stores), out)
	}
	s := doc.Stores[0]
	if !reflect.DeepEqual(s.Clients, want) {
		t.Errorf("clients =\n%+v\nwant\n%+v", s.Clients, want)
	}
	fi, _ := os.Stat(filepath.Join(dir, serveStoreName))
	if s.Role != roleServer || s.Path != filepath.Join(dir, serveStoreName) || s.ClientID != meta.ClientID ||
		s.Stream != meta.Stream.String() || s.FormatVersion != 4 || s.FileSize != fi.Size() ||
		s.Outboxes != 2 || s.PushMessages != 3 || s.PushBytes != 15 || s.Bindings != 3 || s.WatermarkN != 3 ||
		s.Settled != (settledDoc{Pending: 3, Unreported: 1}) || s.NextAfter != "" || s.Watermarks != nil {
		t.Errorf("store = %+v", s)
	}
	// The field names are the command's interface.
	for _, field := range []string{`"client_id"`, `"format_version"`, `"first_seq"`, `"oldest"`, `"push"`, `"watermarks"`, `"unreported"`} {
		if !strings.Contains(out, field) {
			t.Errorf("output lacks %s:\n%s", field, out)
		}
	}

	// Pages: one client each, linked by next_after.
	var clients []string
	after := ""
	for range 4 {
		code, out, errOut := inspectCmd(t, "-data", dir, "-json", "-limit", "1", "-after", after)
		if code != exitOK {
			t.Fatalf("inspect -limit 1 exited with %d: %s", code, errOut)
		}
		var page inspectDoc
		if err := json.Unmarshal([]byte(out), &page); err != nil {
			t.Fatal(err)
		}
		for _, c := range page.Stores[0].Clients {
			clients = append(clients, c.Client)
		}
		if after = page.Stores[0].NextAfter; after == "" {
			break
		}
	}
	if got := strings.Join(clients, ","); got != "alpha,beta,gamma" {
		t.Errorf("pages list %s", got)
	}
}

func TestInspectServerTable(t *testing.T) {
	dir := t.TempDir()
	buildServerStore(t, dir)
	code, out, errOut := inspectCmd(t, "-data", dir)
	if code != exitOK {
		t.Fatalf("inspect exited with %d: %s", code, errOut)
	}
	t.Logf("\n%s", out)
	for _, re := range []string{
		`(?m)^store: +\S+server\.db \(server, format 4\)$`,
		`(?m)^clients: +2 pushed to \(3 messages, 15 bytes queued\), 3 bound, 3 watermarks$`,
		`(?m)^settled: +3 pending, 1 unreported, 0 reported$`,
		`(?m)^CLIENT +IDENTITY +DEPTH +BYTES +OLDEST +FIRST +LAST +WATERMARKS$`,
		`(?m)^alpha +alice +2 +10 +\d+s +2 +3 +a1a1a1a1:12$`,
		`(?m)^beta +bob +1 +5 +\d+s +1 +1 +-$`,
		`(?m)^gamma +carol +0 +0 +- +0 +0 +c1c1c1c1:3 c2c2c2c2:40$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %s", re)
		}
	}

	code, out, _ = inspectCmd(t, "-data", dir, "-limit", "2")
	if code != exitOK || !strings.Contains(out, "more clients follow: -after beta\n") || strings.Contains(out, "gamma") {
		t.Errorf("inspect -limit 2 exited with %d:\n%s", code, out)
	}
}

func TestInspectClientStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, clientStoreName)
	s, err := queue.Open(path, &queue.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for range 3 {
		if _, err := s.Append(ctx, queue.Entry{Payload: []byte("abcd")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Ack(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWatermark(ctx, "server", testStream(0x5e), 17); err != nil {
		t.Fatal(err)
	}
	meta := s.Meta()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := inspectCmd(t, "-data", dir)
	if code != exitOK {
		t.Fatalf("inspect exited with %d: %s", code, errOut)
	}
	t.Logf("\n%s", out)
	for _, line := range []string{
		"client id:  " + meta.ClientID + "\n",
		"queued:     2 messages, 8 bytes\n",
		"first seq:  2\n",
		"last seq:   3\n",
		"acked:      1\n",
		"watermark:  " + testStream(0x5e).String() + ":17\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("output lacks %q", line)
		}
	}
	if strings.Contains(out, "CLIENT") {
		t.Error("a client store shows a client table")
	}

	code, out, errOut = inspectCmd(t, "-data", path, "-json")
	if code != exitOK {
		t.Fatalf("inspect -json exited with %d: %s", code, errOut)
	}
	var doc inspectDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	got := doc.Stores[0]
	want := storeDoc{
		Path: path, Role: roleClient, FormatVersion: 4, FileSize: got.FileSize,
		ClientID: meta.ClientID, Stream: meta.Stream.String(),
		Outbox:     outboxDoc{Messages: 2, Bytes: 8, FirstSeq: 2, LastSeq: 3, Acked: 1},
		WatermarkN: 1,
		Watermarks: map[string]uint64{testStream(0x5e).String(): 17},
	}
	if !reflect.DeepEqual(got, want) || got.FileSize <= 0 {
		t.Errorf("inspect -json =\n%+v\nwant\n%+v", got, want)
	}
}

// TestInspectLocked: a store held by a running process is refused at
// once, naming the case.
func TestInspectLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := queue.Open(filepath.Join(dir, serveStoreName), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	code, out, errOut := inspectCmd(t, "-data", dir, "-lock-timeout", "100ms")
	if code != exitFail || out != "" {
		t.Errorf("inspect of a locked store exited with %d, stdout %q", code, out)
	}
	if !strings.Contains(errOut, "in use by another process") || !strings.Contains(errOut, "running process") {
		t.Errorf("unclear error: %s", errOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("inspect took %v with -lock-timeout 100ms", d)
	}
}

func TestInspectUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"-data", "x", "-limit", "0"}, {"-data", "x", "-lock-timeout", "0s"}} {
		if code, _, _ := inspectCmd(t, args...); code != exitUsage {
			t.Errorf("inspect %q exited with %d, want %d", args, code, exitUsage)
		}
	}
}
