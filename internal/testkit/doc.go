// Package testkit holds helpers for wsreliable's tests: a fault-injecting
// TCP proxy on the loopback interface and small synchronisation helpers. It
// is imported by test code only, never by the library.
//
// # Proxy
//
// [NewProxy] puts a [Proxy] between a client and a real server on
// 127.0.0.1. The test then breaks the link the way networks break:
//
//   - [Proxy.Reset] aborts every connection with a TCP RST on both sides.
//   - [Proxy.Stall] stops forwarding without closing anything, the
//     half-open case that only heartbeats can detect.
//   - [Proxy.Resume] ends a stall; the stalled connections are dropped.
//   - [Proxy.Refuse] makes the proxy hang up on new connections, as if the
//     server were down.
//
// # Lifecycle
//
// A Proxy is closed by the test's cleanup, which waits for every goroutine
// the proxy started, so packages that use it can check for leaks with
// goleak.
//
// # Addresses
//
// [FreeAddr] gives a test a 127.0.0.1 address for a server it starts,
// kills and restarts on a fixed port, or for a dial that must find no
// listener. The port is outside the kernel's ephemeral range and stays
// reserved until the test ends, so no other process on a busy host (a
// parallel test package, a gateway with thousands of connections) can be
// handed it while the server is down.
//
// # Waiting
//
// Tests never sleep to let something happen. [Eventually] polls a condition
// until a deadline; [Deadline] bounds a whole test with a context.
//
// # Other helpers
//
// MountTmpfs (Linux only) mounts a small tmpfs for disk-full tests; it
// needs root, and without it the test skips loudly, or fails when
// CI=true. [GoroutinesIn] counts the goroutines running given functions,
// for tests that bound them.
package testkit
