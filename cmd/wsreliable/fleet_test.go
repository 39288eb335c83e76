package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/store/postgres/pgtest"
)

// TestServeFleet: two serve processes share a PostgreSQL store (-store);
// send is given both URLs. The first node is SIGKILLed mid-stream: send
// moves to the second, which resumes the client's stream where the
// store has it, and every line is printed (by one node or the other),
// in order, with duplicates only within the dead node's last ack batch.
func TestServeFleet(t *testing.T) {
	cluster := pgtest.Start(t)
	const n, ackBatch = 20_000, 256
	var in strings.Builder
	for i := range n {
		fmt.Fprintf(&in, "line-%06d\n", i)
	}
	hb := []string{"-heartbeat", "200ms", "-heartbeat-timeout", "500ms"}
	type node struct {
		url    string
		stdout *syncBuffer
		kill   func()
		stop   func() (int, error)
	}
	startNode := func() node {
		addr := testkit.FreeAddr(t)
		cmd, stdout, stderr, wait := startBinary(t, "", append([]string{"serve", "-listen", addr, "-store", cluster.DSN()}, hb...)...)
		testkit.Eventually(t, 30*time.Second, func() bool { return listeningRE.MatchString(stderr.String()) },
			"serve -store did not listen; stderr:\n%s", stderr)
		if !strings.Contains(stderr.String(), "fleet=true") {
			t.Errorf("serve -store does not log that it runs as a fleet node:\n%s", stderr)
		}
		return node{
			url:    "ws://" + addr + "/ws",
			stdout: stdout,
			kill: func() {
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				if _, err := wait(20 * time.Second); err != nil {
					t.Fatalf("killed serve: %v", err)
				}
			},
			stop: func() (int, error) {
				if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				return wait(20 * time.Second)
			},
		}
	}
	a, b := startNode(), startNode()
	_, _, sendErr, sendWait := startBinary(t, in.String(),
		append([]string{"send", "-url", a.url + "," + b.url, "-data", filepath.Join(t.TempDir(), "cli"), "-wait", "2m"}, hb...)...)
	testkit.Eventually(t, time.Minute, func() bool { return len(a.stdout.lines()) >= n/3 },
		"node A printed %d lines, waiting for %d", len(a.stdout.lines()), n/3)
	a.kill()
	code, err := sendWait(2 * time.Minute)
	if err != nil || code != exitOK {
		t.Fatalf("send: exit %d, %v; stderr:\n%s", code, err, sendErr)
	}
	if code, err := b.stop(); err != nil || code != exitOK {
		t.Fatalf("node B after SIGTERM: exit %d, %v", code, err)
	}

	seq := firstCopies{what: "line"}
	client := ""
	for _, o := range []*syncBuffer{a.stdout, b.stdout} {
		for _, d := range decodeLines[delivered](t, o.lines()) {
			if client == "" {
				client = d.Client
			}
			if d.Client != client || d.Payload == nil {
				t.Fatalf("unexpected line %+v (client %q)", d, client)
			}
			var i int
			if _, err := fmt.Sscanf(*d.Payload, "line-%06d", &i); err != nil {
				t.Fatal(err)
			}
			seq.see(t, i)
		}
	}
	t.Logf("%d lines through two fleet nodes, the first SIGKILLed after %d: %d printed twice",
		n, len(a.stdout.lines()), seq.dups)
	seq.check(t, n, 1, ackBatch)
}
