// Package reliable carries application messages over WebSocket and loses
// none of them. A [Client] writes each message to a local store before
// [Client.Send] returns and keeps it there until the [Server] acknowledges
// it; the server hands each message to its [Handler] once, in order, and
// commits its per-stream watermark before it acknowledges.
//
// # Guarantees
//
//   - No loss: once Send returns nil the message is on disk and reaches the
//     handler, across dropped and half-open connections and restarts of
//     either process, until it is acknowledged or rejected.
//   - No duplicates: the server keeps, per client stream, the highest
//     sequence delivered contiguously (the watermark) and drops anything at
//     or below it. This costs O(1) per stream and survives restarts. The one
//     exception is a server crash between a handler's return and the commit
//     of its watermark: up to ServerOptions.AckBatch messages of each client
//     may then be handed to the handler again.
//   - Order: per client, the handler sees messages in Send order.
//   - Dead links found: both sides ping every heartbeat interval and give up
//     on a link that is silent for interval + timeout; the client then
//     reconnects with exponential backoff and full jitter.
//
// # Sessions
//
// The client dials with the subprotocol wsreliable.v1 and sends a hello
// (client ID, stream ID); the server authenticates the HTTP request first,
// binds the client ID to the identity, and answers with its watermark for
// the stream. The client drops what the server already has and replays the
// rest. A second connection with the same client ID takes over; the older
// one is closed with [protocol.CloseSuperseded].
//
// # Close codes
//
// The client reconnects after normal closes, going-away (server restart),
// try-again-later (waiting at least the server's hint) and errors. It stops,
// reporting an error matching [ErrStopped] from [Client.Err] and from
// pending receipts, after an HTTP 401/403 ([ErrUnauthorized]), a policy
// refusal (1008), an unsupported protocol (4002) or an identity mismatch
// (4004). See the protocol package for the full list.
//
// # Durability
//
// By default every group commit is fsynced: a message whose Send returned
// survives a power cut. With ClientOptions.NoSync (or ServerOptions.NoSync)
// commits skip fsync and survive a crash of the process but not of the
// machine.
//
// # Concurrency
//
// Client and Server are safe for concurrent use. Handlers for one client run
// one at a time, in order (each call begins after the previous one
// returned, though not always on the same goroutine: an idle session keeps
// none for delivery); handlers for different clients run concurrently. Client.Close and Server.Close wait
// for every goroutine they started.
//
// # Security
//
// Authenticate runs on every dial, before the upgrade; resume never skips
// it. A client ID is bound to the first identity that used it, so nobody can
// resume or acknowledge another identity's stream. Browser clients are
// subject to CheckOrigin.
package reliable
