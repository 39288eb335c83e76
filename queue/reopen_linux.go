package queue

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// reopenDB opens the store at path again: a new bbolt handle on a new
// descriptor of the open file description that file, the descriptor of
// the current handle, refers to. bbolt's flock lock belongs to that
// description, so the new handle takes it at once and the file is locked
// throughout: no other process can open it in between. file's descriptor
// is then pointed at /dev/null, so closing the current handle afterwards
// unlocks and closes nothing of the store's.
//
// On an error the current handle is left as it was, holding the lock.
func reopenDB(path string, o *Options, file *os.File) (*bolt.DB, *os.File, error) {
	if file == nil {
		return nil, nil, errors.New("queue: reopen: no file")
	}
	old := int(file.Fd())
	// F_DUPFD_CLOEXEC: a process started meanwhile must not inherit the
	// descriptor, and with it a share of the lock.
	fd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(old), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return nil, nil, fmt.Errorf("queue: reopen %s: dup: %w", path, errno)
	}
	nf := os.NewFile(fd, path)
	null, err := os.Open(os.DevNull)
	if err != nil {
		_ = nf.Close() // the old descriptor still holds the description
		return nil, nil, fmt.Errorf("queue: reopen %s: %w", path, err)
	}
	defer null.Close()
	db, _, err := openBolt(path, o, false, nf)
	if err != nil {
		// bbolt unlocks the file it was given when Open fails after
		// locking it: the description's lock, which the current handle
		// relies on.
		return nil, nil, errors.Join(fmt.Errorf("queue: reopen %s: %w", path, err), relock(path, old))
	}
	if err := dup3(int(null.Fd()), old); err != nil {
		// Closing the new handle unlocks the shared description too.
		_ = db.Close()
		return nil, nil, errors.Join(fmt.Errorf("queue: reopen %s: dup3: %w", path, err), relock(path, old))
	}
	return db, nf, nil
}

// dup3 points descriptor to at from's open file description, retrying
// when interrupted.
func dup3(from, to int) error {
	for {
		err := syscall.Dup3(from, to, syscall.O_CLOEXEC)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// relock takes the lock of fd's description again after a failed reopen
// released it.
func relock(path string, fd int) error {
	if err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("%w: %s: the file lock was lost in a failed reopen: %v", ErrLocked, path, err)
	}
	return nil
}
