package queue

import "syscall"

// releaseMapping tells the kernel that the size bytes of bbolt's memory
// map at data are not needed (madvise MADV_DONTNEED). The mapping is
// shared and read-only, and bbolt writes the file with pwrite, so nothing
// is lost: the file's pages stay in the page cache, where the kernel may
// reclaim them first, and a later read maps them in again.
func releaseMapping(data uintptr, size int64) error {
	if data == 0 || size <= 0 {
		return nil
	}
	if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, data, uintptr(size), syscall.MADV_DONTNEED); errno != 0 {
		return errno
	}
	return nil
}
