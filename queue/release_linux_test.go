package queue_test

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/queue"
)

// mappedKiB is the resident size of this process's mappings of path
// (the Rss lines of /proc/self/smaps).
func mappedKiB(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("SKIPPING: no /proc/self/smaps: %v", err)
	}
	defer f.Close()
	var kib int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-"):
			in = len(fields) >= 6 && fields[5] == path
		case in && fields[0] == "Rss:":
			n, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			kib += n
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return kib
}

// TestBoltReleasesMappedPages: the pages of the file that reads mapped
// into the process (here every client's outbox, read back) leave it once
// the writer has been idle for a while, and the data is all there after.
func TestBoltReleasesMappedPages(t *testing.T) {
	path := tempPath(t)
	b := openBolt(t, path, &queue.Options{NoSync: true})
	queue.SetReleaseIdle(b, time.Hour) // not before the test has looked
	const clients, per = 400, 20
	payload := make([]byte, 1000)
	for c := range clients {
		msgs := make([]queue.Push, per)
		for i := range msgs {
			e := entry(i)
			e.Payload, e.Headers = payload, nil
			client := fmt.Sprintf("client-%03d", c)
			msgs[i] = queue.Push{Client: client, Entry: withID(e, client)}
		}
		mustPush(t, b, msgs...)
	}
	readAll := func() {
		t.Helper()
		for c := range clients {
			got, err := b.ReadOutbox(fmt.Sprintf("client-%03d", c), 0, per+1, 0)
			if err != nil || len(got) != per {
				t.Fatalf("ReadOutbox(client-%03d) = %d entries, %v; want %d", c, len(got), err, per)
			}
		}
	}
	readAll()
	before := mappedKiB(t, path)
	if before < 4<<10 {
		t.Fatalf("%d KiB of the file mapped after reading 8 MB back: the test measures nothing", before)
	}
	released := queue.Releases(b)
	queue.SetReleaseIdle(b, 10*time.Millisecond)
	mustTouch(t, b, "kick") // a commit arms the idle release
	eventually(t, "a release of the mapped pages", func() bool { return queue.Releases(b) > released })
	after := mappedKiB(t, path)
	t.Logf("mapped: %d KiB after reading every outbox, %d KiB after the release", before, after)
	if after > before/8 {
		t.Errorf("mapped %d KiB after the release, %d KiB before: want most of it gone", after, before)
	}
	readAll()
}

// TestBoltReleasesUnderLoad: a store that is never idle releases its
// mapped pages once its commits have written enough pages.
func TestBoltReleasesUnderLoad(t *testing.T) {
	b := openBolt(t, tempPath(t), &queue.Options{NoSync: true})
	queue.SetReleaseIdle(b, time.Hour)
	queue.SetReleaseAfter(b, 1<<20)
	payload := make([]byte, 1000)
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; queue.Releases(b) == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no release after %d pushes of 64 KB", i)
		}
		msgs := make([]queue.Push, 64)
		for j := range msgs {
			e := entry(i*64 + j)
			e.Payload, e.Headers = payload, nil
			client := fmt.Sprintf("client-%03d", j)
			msgs[j] = queue.Push{Client: client, Entry: withID(e, client)}
		}
		mustPush(t, b, msgs...)
	}
}
