//go:build !linux

package queue_test

import "os"

// fdatasync flushes f; bbolt uses fsync where fdatasync is missing.
func fdatasync(f *os.File) error { return f.Sync() }
