// Package fixedport reserves a TCP port on 127.0.0.1 for a server that
// stops and starts again on the same address (a crash test's child, a
// benchmark's restarted server), or for a dial that must find no listener.
//
// # Why not port 0
//
// A port from net.Listen("tcp", "127.0.0.1:0") comes from the kernel's
// ephemeral range (/proc/sys/net/ipv4/ip_local_port_range on Linux).
// Once that listener closes, the kernel may hand the same port to any
// process: to another listener on port 0, or as the source port of an
// outgoing connection. A client that dials the address while its server
// is down then reaches a stranger (a test's HTTP server answering 401
// stops a reliable.Client for good), and the restarted server cannot
// listen while the stranger holds the port.
//
// # What Reserve does
//
// [Reserve] picks a random port outside the ephemeral range, which the
// kernel never hands out on its own, and checks that no socket holds it.
// On Linux it also keeps the port bound, without listening, until
// [Port.Close]: the reserving socket binds without SO_REUSEADDR (so it
// fails on a port any socket holds, TIME_WAIT included) and then sets
// SO_REUSEADDR, which lets a listener bind beside it (Go sets
// SO_REUSEADDR on every listener) while a second Reserve, anywhere on
// the host, still finds the port taken. Elsewhere the port is only
// checked: another Reserve may pick it again, with a chance of about
// one in the size of the range below the ephemeral one.
//
// # Concurrency
//
// Reserve and the methods of [Port] are safe for concurrent use.
package fixedport
