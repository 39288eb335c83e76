//go:build linux

package testkit

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// MountTmpfs mounts a tmpfs of size (for example "2m") on a fresh
// directory, so a test can fill a disk, and lazily unmounts it at cleanup.
// It needs root: without it the test skips with a loud reason, or fails
// when CI=true, where disk-full paths must be covered.
func MountTmpfs(tb testing.TB, size string) string {
	tb.Helper()
	ci := os.Getenv("CI") == "true"
	if os.Geteuid() != 0 {
		msg := "DISK-FULL TEST NOT RUN: it mounts a small tmpfs and needs root"
		if ci {
			tb.Fatal(msg)
		}
		tb.Skip("SKIPPED!!! " + msg)
	}
	dir := tb.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		if ci {
			tb.Fatalf("mount tmpfs at %s: %v: %s", dir, err, out)
		}
		tb.Skipf("SKIPPED!!! DISK-FULL TEST NOT RUN: cannot mount tmpfs at %s: %v: %s", dir, err, out)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "umount", "-l", dir).CombinedOutput(); err != nil {
			tb.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}
