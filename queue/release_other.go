//go:build !linux

package queue

// releaseMapping does nothing here: only Linux is known to keep a
// shared file mapping's pages in the page cache when advised away.
func releaseMapping(data uintptr, size int64) error { return nil }
