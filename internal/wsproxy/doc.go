// Package wsproxy is a WebSocket man-in-the-middle proxy on the loopback
// interface that injects message-level faults: duplicated, reordered,
// dropped and truncated messages, and injected garbage. Where
// internal/faultnet breaks the TCP link, wsproxy keeps the link healthy and
// breaks what travels on it, the faults a buggy middlebox or a broken peer
// produces and that only the receiver's protocol checks can catch.
//
// It is a test tool: tests and the demo use it, the library never does.
//
// # Proxying
//
// [Listen] starts a [Proxy] on 127.0.0.1. For each WebSocket upgrade it
// receives, the proxy first dials the target with the same path, query and
// request headers (Authorization, Cookie, Origin and the rest; not the
// hop-by-hop and handshake headers) and the subprotocols the client
// offered, and only then upgrades the client with the subprotocol the
// target chose (protocol.Subprotocol for a wsreliable server). An HTTP refusal
// from the target (401, 403, 503 with Retry-After, …) is passed back to
// the client with its status and Retry-After header; a target that cannot
// be reached is answered with 502.
//
// Data messages (binary and text) are forwarded in both directions and may
// be faulted. Pings and pongs are forwarded untouched, so heartbeats stay
// end to end. A close frame is forwarded to the other side with its code
// and reason, and that side's answer is forwarded back, so both endpoints
// see a real closing handshake. The close codes each side started a
// closing handshake with are counted in [Stats] (echoes are not), which is
// how tests observe how a receiver reacted to a fault.
//
// # Faults
//
// [Config] holds one [Faults] per direction. For every data message the
// proxy draws once from a seeded random source and applies at most one
// fault, with the given probabilities:
//
//   - Drop: the message is not forwarded.
//   - Duplicate: the message is forwarded twice.
//   - Reorder: the message is held and forwarded after the next message in
//     the same direction (injected garbage does not count), or after
//     Config.ReorderTimeout if none comes, so a reorder never turns into a
//     drop.
//   - Truncate: the message is cut to a random shorter length (possibly
//     zero bytes).
//   - Garbage: an extra message is injected before it: either random bytes
//     whose first byte is not protocol.Version, or a well-framed frame of
//     an unknown type. The real message follows.
//
// The first message of each direction of a connection (the wsreliable
// hello and welcome) is never faulted unless Config.FaultHandshake is set.
// [Proxy.SetConfig] changes the faults of open and future connections at
// once; tests turn faults off this way to let everything drain.
//
// # Concurrency and lifecycle
//
// A Proxy is safe for concurrent use. Each proxied connection has one
// reader and one writer goroutine per direction; every write has a
// deadline. [Proxy.Close] stops accepting, aborts every proxied connection
// and returns after all of the proxy's goroutines have exited.
package wsproxy
