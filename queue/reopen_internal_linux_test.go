package queue

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestReopenFailureKeepsLock: when the new handle cannot be opened, bbolt
// unlocks the file description it was given, which the current handle
// shares; reopenDB must take the lock back, so the store stays locked
// against other processes.
func TestReopenFailureKeepsLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "junk.db")
	if err := os.WriteFile(path, bytes.Repeat([]byte{0xAB}, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if _, _, err := reopenDB(path, &Options{LockTimeout: 50 * time.Millisecond}, f); err == nil {
		t.Fatal("reopenDB of a file that is not a store succeeded")
	} else {
		t.Logf("reopenDB: %v", err)
	}
	other, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("another description locking the file after the failed reopen: %v, want EWOULDBLOCK", err)
	}
}
