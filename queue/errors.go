package queue

import "errors"

// Errors returned by stores. Errors from a [Store] wrap one of them where
// one applies; test with errors.Is.
var (
	// ErrClosed is returned by calls on a closed store.
	ErrClosed = errors.New("queue: store closed")
	// ErrFull reports that the store is at its message or byte limit.
	ErrFull = errors.New("queue: queue full")
	// ErrTooLarge reports a single entry larger than the byte limit.
	ErrTooLarge = errors.New("queue: entry larger than the queue's byte limit")
	// ErrLocked reports that another process holds the store file.
	ErrLocked = errors.New("queue: store file in use by another process")
	// ErrCorrupt reports a store file that is damaged or not a wsreliable
	// store.
	ErrCorrupt = errors.New("queue: store file corrupt or not a wsreliable store")
	// ErrVersion reports a store file written by a newer format version.
	ErrVersion = errors.New("queue: store file has an unsupported format version")
	// ErrDiskFull reports that the disk holding the store is full. Errors
	// wrapping it also match syscall.ENOSPC.
	ErrDiskFull = errors.New("queue: disk full")
	// ErrIDInUse reports a push whose message ID the store has recorded
	// for another client (see [Outboxes.Push]).
	ErrIDInUse = errors.New("queue: message ID already used for another client")
)
