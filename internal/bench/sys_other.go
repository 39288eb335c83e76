//go:build !linux

package bench

import "errors"

var errNotLinux = errors.New("bench: the memory, storm, fanout and offline scenarios need Linux (/proc, RLIMIT_NOFILE)")

func raiseNoFile() (uint64, error) { return 0, errNotLinux }

func rss() (int64, error) { return 0, errNotLinux }

func memStatus() (MemSample, error) { return MemSample{}, errNotLinux }

// settleDisk does nothing here; see the Linux version.
func settleDisk() {}
