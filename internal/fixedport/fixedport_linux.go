package fixedport

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// errNoRange reports a range file that does not hold two ports.
var errNoRange = errors.New("not two port numbers")

// rangeFile holds the ephemeral range of the caller's network namespace.
const rangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

func ephemeralRange() (low, high int, err error) {
	b, err := os.ReadFile(rangeFile)
	if err != nil {
		return 0, 0, err
	}
	return parseRange(string(b))
}

// parseRange parses the range file's "low<TAB>high\n".
func parseRange(s string) (low, high int, err error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("%s: %q: %w", rangeFile, s, errNoRange)
	}
	low, err1 := strconv.Atoi(f[0])
	high, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || low < 1 || high < low || high > maxPort {
		return 0, 0, fmt.Errorf("%s: %q: %w", rangeFile, s, errNoRange)
	}
	return low, high, nil
}

// reserve binds a TCP socket to 127.0.0.1:port, first without
// SO_REUSEADDR, so that it fails while any socket holds the port, then
// sets SO_REUSEADDR so that a listener can bind beside it. Linux lets two
// SO_REUSEADDR sockets share a port as long as at most one listens.
func reserve(port int) (release func() error, err error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	defer func() {
		if err != nil {
			syscall.Close(fd)
		}
	}()
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return nil, fmt.Errorf("port %d: %w", port, os.NewSyscallError("bind", err))
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return nil, os.NewSyscallError("setsockopt SO_REUSEADDR", err)
	}
	return func() error { return syscall.Close(fd) }, nil
}
