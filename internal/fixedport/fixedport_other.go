//go:build !linux

package fixedport

import (
	"net"
	"strconv"
)

// ephemeralRange is IANA's dynamic range, the default of macOS and
// Windows; other systems may use a wider one.
func ephemeralRange() (low, high int, err error) { return 49152, 65535, nil }

// reserve only checks that the port is free: outside Linux a socket kept
// bound would stop the server from listening on the port.
func reserve(port int) (release func() error, err error) {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	return func() error { return nil }, ln.Close()
}
