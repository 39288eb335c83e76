// Package reliable carries application messages over WebSocket and loses
// none of them, in both directions. A [Client] writes each message to a
// local store before [Client.Send] returns and keeps it there until the
// [Server] acknowledges it; the server hands each message to its [Handler]
// once, in order, and commits its per-stream watermark before it
// acknowledges. The other way, [Server.Send] and [Server.SendMany] queue a
// push durably in the recipient client's outbox on the server (offline
// clients cost disk, not memory), and a client with
// ClientOptions.Handler receives it under the same guarantees.
//
// Both directions are built from the same two parts: an outbox (one
// outgoing stream: durable entries, the send window, replay, skips,
// settlement) and an inbox (one incoming stream: handler calls in order,
// Flush, watermark commits, acks). A client is one of each; a server holds
// an inbox per client stream and an outbox per client.
//
// # Guarantees
//
//   - No loss: once Send returns nil the message is on disk and reaches the
//     peer's handler, across dropped and half-open connections and restarts
//     of either process, until it is acknowledged, rejected, expires (its
//     TTL) or is evicted (a full outbox with OutboxEvict). Every settlement
//     is reported: receipts in process, OnSettled as it happens.
//   - No duplicates: the server keeps, per client stream, the highest
//     sequence delivered contiguously (the watermark) and drops anything at
//     or below it. This costs O(1) per stream and survives restarts. The one
//     exception is a receiver crash between a handler's return and the
//     commit of its watermark: up to AckBatch messages of that stream may
//     then be handed to the handler again.
//   - Order: per client, the handler sees messages in Send order.
//   - Dead links found: both sides ping every heartbeat interval and give up
//     on a link that is silent for interval + timeout; the client then
//     reconnects with exponential backoff and full jitter (one quick redial
//     first when the lost connection had worked for a while; see
//     ClientOptions.HealthyAfter).
//
// # Sessions
//
// The client dials with the subprotocol wsreliable.v2 and sends a hello:
// client ID, its stream ID and the lowest sequence it still holds, its
// watermark for the server's stream to it, and its limits. The server
// authenticates the HTTP request first, binds the client ID to the
// identity, and answers with its watermark for the client's stream, its
// push stream to the client with the lowest sequence it still holds, and
// its limits. Each side drops what the other already has and replays the
// rest. A receiver without state for a stream (it lost its store) resumes
// from the sender's lowest held sequence instead of waiting for sequences
// that will never come. The server's welcome also carries its heartbeat
// settings, which the Go client does not use: each side keeps its own. A
// message larger than the receiver accepts, or
// past its TTL, is skipped: it settles as rejected (too large) or expired
// and never blocks the stream. A second connection with the same client ID
// takes over; the older one is closed with [protocol.CloseSuperseded].
// While idle, the server also sends heartbeat frames, which a browser can
// see where it cannot see pings.
//
// # Close codes
//
// The client reconnects after normal closes, going-away (server restart),
// try-again-later (waiting at least the server's hint) and errors. An HTTP
// 401 ([ErrUnauthorized]) is retried with backoff, calling
// ClientOptions.Header again before each dial so a refreshed token is
// sent. It stops, reporting an error matching [ErrStopped] from
// [Client.Err] and from pending receipts, after an HTTP 403
// ([ErrForbidden]), a policy refusal (1008), an unsupported protocol
// (4002) or an identity mismatch (4004). See the protocol package for the
// full list.
//
// # Durability
//
// By default every group commit is fsynced: a message whose Send returned
// survives a power cut. With ClientOptions.NoSync (or ServerOptions.NoSync)
// commits skip fsync and survive a crash of the process but not of the
// machine.
//
// # Fleets
//
// Several servers may share one store that implements queue.Owner and
// queue.Notifier (the PostgreSQL store, module
// github.com/wsreliable/wsreliable/store/postgres), so that any of them
// serves any client: give clients the other servers in
// ClientOptions.FallbackURLs. A server claims a client's state when its
// session starts and reads it afresh; a write the store fences out (another
// server claimed the client since) ends the session with 1001, and the
// client is then talking to the other server. A push made on any server
// reaches the client wherever it is connected.
//
// # Concurrency
//
// Client and Server are safe for concurrent use. Handlers for one client run
// one at a time, in order (each call begins after the previous one
// returned, though not always on the same goroutine: an idle session keeps
// none for delivery); handlers for different clients run concurrently.
// Client.Close and Server.Close wait for every goroutine they started.
//
// # Security
//
// Authenticate runs on every dial, before the upgrade; resume never skips
// it. Client IDs are namespaced by identity: the server keeps a client's
// watermarks and pushes under its [Address] (identity and client ID), so
// nobody can resume, take over or acknowledge another identity's stream,
// nor claim its client ID first. Push to a client by its address
// ([Message.Address], [ClientInfo.Address]). Browser clients are subject
// to CheckOrigin. Limits on connections, memory, the store
// (MaxStoreBytes), each identity's message and byte rates (MaxMessageRate,
// MaxByteRate) and the handshake rates per IP and per identity
// (MaxHandshakeRatePerIP, MaxHandshakeRatePerIdentity; 429 with
// Retry-After before the upgrade) are listed with their defaults in
// SECURITY.md.
package reliable
