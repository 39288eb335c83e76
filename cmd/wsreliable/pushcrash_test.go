package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
)

// TestPushServeSIGKILL pushes numbered messages through the API to one
// client while serve, a child process, is SIGKILLed three times and
// started again on the same -data and address; one recv process prints
// them throughout. A push is confirmed when its POST answered 200. A POST
// that failed in transport (serve died under it) is retried, so its push
// may be queued twice if the first attempt had committed: those extra
// copies, and only those, are allowed (they carry their own message ID
// and sequence). Everything else is held exactly: every confirmed push is
// printed, the first copy of each in push order, sequences 1, 2, 3 …
// without a gap, and no message ID twice, since recv's watermark drops
// what the restarted server sends again. The API then reports a sample of
// the confirmed pushes as acked.
func TestPushServeSIGKILL(t *testing.T) {
	const n, kills = 3000, 3
	addr := testkit.FreeAddr(t)
	data := filepath.Join(t.TempDir(), "srv")
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(testAPIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hb := []string{"-heartbeat", "200ms", "-heartbeat-timeout", "500ms"}
	c := newAPIClient(t, addr, testAPIKey)

	type proc struct {
		cmd    *exec.Cmd
		stderr *syncBuffer
		wait   func(time.Duration) (int, error)
	}
	serves := 0
	startServeProc := func() proc {
		serves++
		cmd, _, stderr, wait := startBinary(t, "", append([]string{"serve", "-listen", addr, "-data", data, "-api-key-file", keyFile}, hb...)...)
		testkit.Eventually(t, 20*time.Second, func() bool { return listeningRE.MatchString(stderr.String()) },
			"serve %d did not listen; stderr:\n%s", serves, stderr)
		return proc{cmd, stderr, wait}
	}

	srv := startServeProc()
	recvCmd, recvOut, recvErr, recvWait := startBinary(t, "",
		append([]string{"recv", "-url", "ws://" + addr + "/ws", "-data", filepath.Join(t.TempDir(), "recv"), "-client-id", "k"}, hb...)...)

	// The pusher sends push i (payload "i") until a POST answers 200,
	// one request at a time. Until it is done, only it touches confirmed
	// and failed; the test reads them after pusherDone.
	var (
		confirmed = make([]pushed, n) // the 200 answer of push i
		failed    = make([]int, n)    // POSTs of push i that failed in transport
		nConfirm  atomic.Int64
	)
	pushErr := make(chan error, 1)
	stop, pusherDone := make(chan struct{}), make(chan struct{})
	defer func() {
		close(stop)
		<-pusherDone
	}()
	go func() {
		defer close(pusherDone)
		deadline := time.Now().Add(3 * time.Minute)
		for i := range n {
			for {
				select {
				case <-stop:
					pushErr <- fmt.Errorf("stopped at push %d", i)
					return
				default:
				}
				if time.Now().After(deadline) {
					pushErr <- fmt.Errorf("push %d not confirmed within 3 minutes of the start", i)
					return
				}
				resp, b, err := c.try(http.MethodPost, "/v1/push", "Bearer "+testAPIKey, `{"client":"k","payload":"`+strconv.Itoa(i)+`"}`)
				if err != nil {
					// serve is down or died under the request: it
					// may have committed it. Retry at a modest pace
					// until the restarted serve answers.
					failed[i]++
					time.Sleep(5 * time.Millisecond)
					continue
				}
				if resp.StatusCode != http.StatusOK {
					pushErr <- fmt.Errorf("push %d: HTTP %d %s", i, resp.StatusCode, b)
					return
				}
				var out struct {
					Messages []pushed `json:"messages"`
				}
				if err := json.Unmarshal(b, &out); err != nil || len(out.Messages) != 1 || out.Messages[0].Client != "k" {
					pushErr <- fmt.Errorf("push %d answered %s", i, b)
					return
				}
				confirmed[i] = out.Messages[0]
				nConfirm.Add(1)
				break
			}
		}
		pushErr <- nil
	}()

	for k := 1; k <= kills; k++ {
		at := int64(k * n / (kills + 1))
		testkit.Eventually(t, time.Minute, func() bool { return nConfirm.Load() >= at || len(pushErr) > 0 },
			"kill %d: %d pushes confirmed, waiting for %d; serve's stderr:\n%s", k, nConfirm.Load(), at, srv.stderr)
		if err := srv.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.wait(20 * time.Second); err != nil {
			t.Fatalf("killed serve: %v", err)
		}
		srv = startServeProc()
	}
	select {
	case err := <-pushErr:
		if err != nil {
			t.Fatalf("%v; serve's stderr:\n%s", err, srv.stderr)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("the pushes did not finish within 3 minutes")
	}
	<-pusherDone

	// Order by sequence means the last confirmed push is printed last of
	// the confirmed ones.
	last := confirmed[n-1]
	var lines []received
	testkit.Eventually(t, time.Minute, func() bool {
		lines = decodeLines[received](t, recvOut.lines())
		return len(lines) > 0 && lines[len(lines)-1].Seq >= last.Seq
	}, "recv printed %d lines, waiting for seq %d; recv's stderr:\n%s", len(lines), last.Seq, recvErr)

	// The status API remembers a sample of the confirmed pushes as acked.
	for i := 0; i < n; i += 97 {
		c.waitStatus(t, confirmed[i].ID, "acked")
	}
	c.waitStatus(t, last.ID, "acked")

	if err := recvCmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := recvWait(20 * time.Second); err != nil || code != 0 {
		t.Fatalf("recv after SIGTERM: exit %d, %v; stderr:\n%s", code, err, recvErr)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := srv.wait(20 * time.Second); err != nil || code != 0 {
		t.Fatalf("serve after SIGTERM: exit %d, %v; stderr:\n%s", code, err, srv.stderr)
	}

	// Every line recv printed, including any after the wait above.
	lines = decodeLines[received](t, recvOut.lines())
	var (
		next     int                 // the next push whose first copy is due
		copies   = make([]int, n)    // lines per push
		printed  = map[string]bool{} // message IDs printed
		sameID   int                 // lines whose message ID was printed before
		prevSeq  uint64
		failures int
	)
	for j, r := range lines {
		if r.Payload == nil {
			t.Fatalf("line %d %+v has no text payload", j+1, r)
		}
		i, err := strconv.Atoi(*r.Payload)
		if err != nil || i < 0 || i >= n {
			t.Fatalf("line %d %+v: payload is not a push number", j+1, r)
		}
		if printed[r.ID] {
			sameID++
			t.Errorf("line %d: message %s (push %d, seq %d) printed again", j+1, r.ID, i, r.Seq)
			continue
		}
		printed[r.ID] = true
		if r.Seq != prevSeq+1 {
			t.Errorf("line %d: seq %d after seq %d", j+1, r.Seq, prevSeq)
		}
		prevSeq = r.Seq
		copies[i]++
		switch {
		case i == next:
			next++
		case i > next:
			t.Fatalf("line %d: push %d printed before push %d", j+1, i, next)
		}
	}
	var doubleQueued, maybeTwice int
	for i := range n {
		failures += failed[i]
		if failed[i] > 0 {
			maybeTwice++
		}
		if !printed[confirmed[i].ID] {
			t.Errorf("confirmed push %d (id %s seq %d) was not printed", i, confirmed[i].ID, confirmed[i].Seq)
		}
		if extra := copies[i] - 1; extra > 0 {
			doubleQueued += extra
			if extra > failed[i] {
				t.Errorf("push %d printed %d times as distinct messages, but only %d of its POSTs failed", i, copies[i], failed[i])
			}
		}
	}
	t.Logf("%d pushes through %d serve processes (%d SIGKILLed): %d lines, %d POSTs failed in transport over %d pushes (maybe queued twice), %d queued twice, %d message IDs printed twice",
		n, serves, kills, len(lines), failures, maybeTwice, doubleQueued, sameID)
	if next != n {
		t.Fatalf("only pushes 0..%d were printed of %d", next-1, n)
	}
}
