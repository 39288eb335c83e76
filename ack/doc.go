// Package ack holds the pure bookkeeping of reliable delivery: the sender's
// window of unacknowledged sequences, the receiver's watermark that drops
// duplicates, and the coalescing of cumulative acks.
//
// # No I/O
//
// Nothing in this package reads a clock, starts a goroutine or touches the
// network or the disk; callers pass the current time where it matters. That
// keeps every rule here testable with plain table and property tests, and
// the same types serve both directions of a session.
//
// # Concurrency
//
// The types are not safe for concurrent use; their owner serialises access.
package ack
