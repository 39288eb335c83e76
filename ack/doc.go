// Package ack holds the pure bookkeeping of reliable delivery: the sender's
// window of unacknowledged sequences ([Window]), the receiver's watermark
// that drops duplicates and closes gaps left by skips ([Watermark]), and the
// coalescing of cumulative acks by count ([Coalescer]).
//
// # No I/O
//
// Nothing in this package reads a clock, starts a goroutine or touches the
// network or the disk; timing (when an idle receiver flushes its ack) is
// the caller's. That keeps every rule here testable with plain table and
// model tests, and the same types serve both directions of a session.
//
// # Concurrency
//
// The types are not safe for concurrent use; their owner serialises access.
package ack
