// Package bench measures wsreliable against a raw gorilla/websocket
// baseline on the same machine, in the same run, and renders the results
// as a Markdown report and an SVG chart. It backs the "wsreliable bench"
// command ([Main]); each scenario is also callable on its own and returns
// a result struct.
//
// # Scenarios
//
//   - [Baseline]: raw gorilla/websocket, one-way, one WebSocket message per
//     payload, no acknowledgement and no disk.
//   - [Throughput]: client to server through the public reliable API, with
//     fsync on both sides (the default) or with NoSync on both sides. A
//     message counts once the server acknowledged it.
//   - [Latency]: Send to receipt settlement, unloaded (one message at a
//     time) or paced at a fixed rate (the report uses half the measured
//     peak); latency is taken from the scheduled send time, so a stall is
//     not hidden by the pacer waiting for it.
//   - [IdleMemory]: a server holding N idle connections opened by a child
//     process; server RSS per connection, for a raw gorilla server and ours.
//   - [Recovery]: a backlog queued while the server is down, then drained.
//   - [Storm]: N connected clients (in a child process), the server
//     restarted, the time until all reconnect and catch up.
//   - [Pipe]: lines piped into `wsreliable send` and printed by
//     `wsreliable serve` (child processes), against a raw gorilla pipe
//     that carries and prints the same lines.
//   - Push ([Throughput] and [Baseline] with Config.Push): server to
//     client, Server.Send into ClientOptions.Handler, against raw gorilla
//     writing from the server.
//   - [Fanout]: one message to N clients with one Server.SendMany, to
//     connected clients (in a child process) and to offline ones.
//   - [Offline]: a server's memory (in a child process) with pushes
//     queued for N offline clients, against the same server with none.
//
// # Child processes
//
// The memory, storm and fanout scenarios need more connections than one
// process may hold open (each loopback connection costs one descriptor per
// side), and the memory and offline scenarios a server with a fresh heap,
// so they start copies of the running executable in a hidden child mode:
// the program is re-executed with [Launcher.Args], then [ChildArg], with
// [ChildEnv] set in its environment. [Main] serves the child mode when its
// first argument is ChildArg; a test binary serves it from TestMain when
// ChildEnv is set.
//
// # Caveats
//
// Every measurement uses 127.0.0.1 only, so it shows the cost of the
// library and the disk, not of a network. Timings on a shared machine are
// noisy: the report states the machine and the command, and the tests
// check only counts and correctness, never a timing. Every loop is bounded
// both in count and in time.
package bench
