//go:build linux

package queue_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/wsreliable/wsreliable/queue"
)

// mountTmpfs mounts a tmpfs of size bytes and returns its directory, or
// skips the test (loudly) where that needs privileges we lack.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: the disk-full test mounts a small tmpfs and must run as root; run `go test -run DiskFull` as root to cover ENOSPC")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("SKIPPED: cannot mount tmpfs at %s (%v); the disk-full path is untested here", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes a file into dir until the disk is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return path
		}
	}
}

func TestBoltDiskFull(t *testing.T) {
	dir := mountTmpfs(t, "4m")
	path := filepath.Join(dir, "queue.db")
	b, err := queue.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = b.Close()
		}
	}()
	for i := range 10 {
		mustAppend(t, b, entry(i))
	}
	filler := fill(t, dir)

	var last uint64
	var diskErr error
	for range 1000 {
		seq, err := b.Append(testCtx(t), entryWithPayload(64<<10))
		if err != nil {
			diskErr = err
			break
		}
		last = seq
	}
	if diskErr == nil {
		t.Fatal("1000 appends of 64 KiB fitted on a full 4 MiB tmpfs")
	}
	if !errors.Is(diskErr, queue.ErrDiskFull) || !errors.Is(diskErr, syscall.ENOSPC) {
		t.Fatalf("Append on a full disk = %v, want ErrDiskFull and ENOSPC", diskErr)
	}
	t.Logf("disk full after seq %d: %v", max(last, 10), diskErr)
	committed := max(last, 10)
	st := b.Stats()
	if st.LastSeq != committed || st.Messages != int(committed) {
		t.Fatalf("Stats after a failed commit = %+v, want last %d", st, committed)
	}
	if es := mustRead(t, b, 0, 0, 0); len(es) != int(committed) {
		t.Fatalf("Read after a failed commit = %d entries, want %d", len(es), committed)
	}

	// Free space: the same store commits again, with no sequence gap.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if seq := mustAppend(t, b, entry(1)); seq != committed+1 {
		t.Fatalf("Append after freeing space = %d, want %d", seq, committed+1)
	}
	if err := b.Ack(testCtx(t), 5); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if err := queue.Check(path); err != nil {
		t.Fatalf("Check after disk full: %v", err)
	}
	b2 := openBolt(t, path, nil)
	if st := b2.Stats(); st.LastSeq != committed+1 || st.FirstSeq != 6 {
		t.Fatalf("Stats after reopen = %+v", st)
	}
}

func TestBoltOpenOnFullDisk(t *testing.T) {
	dir := mountTmpfs(t, "1m")
	fill(t, dir)
	b, err := queue.Open(filepath.Join(dir, "queue.db"), nil)
	if err == nil {
		_ = b.Close()
		t.Fatal("Open on a full disk succeeded")
	}
	if !errors.Is(err, queue.ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Open on a full disk = %v, want ErrDiskFull and ENOSPC", err)
	}
}
