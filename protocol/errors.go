package protocol

import "errors"

// Decoding errors. Errors returned by [Decode] wrap exactly one of them.
var (
	// ErrMalformed reports a truncated or garbled message or frame.
	ErrMalformed = errors.New("protocol: malformed frame")
	// ErrUnknownFrame reports a frame type this version does not know.
	ErrUnknownFrame = errors.New("protocol: unknown frame type")
	// ErrVersion reports a message written with an unknown codec version.
	ErrVersion = errors.New("protocol: unsupported codec version")
)
