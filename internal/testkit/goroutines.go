package testkit

import (
	"runtime"
	"strings"
)

// GoroutinesIn counts the goroutines whose stack has a call of any of fns
// (package-qualified names, as in a stack dump, e.g.
// "wsconn.(*Conn).writeLoop").
func GoroutinesIn(fns ...string) int {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, fn := range fns {
			if strings.Contains(g, fn+"(") {
				count++
				break
			}
		}
	}
	return count
}
