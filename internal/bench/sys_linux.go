package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// settleDisk flushes every dirty page in the system (sync(2)), so that
// the writeback of an earlier run's files does not land in the fsyncs of
// the next measurement.
func settleDisk() { syscall.Sync() }

// raiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and returns
// the new soft limit.
func raiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("bench: getrlimit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("bench: setrlimit: %w", err)
		}
	}
	return lim.Cur, nil
}

// rss returns this process's resident set size (VmRSS) in bytes.
func rss() (int64, error) {
	m, err := memStatus()
	return m.RSS, err
}

// memStatus reads VmRSS and its anonymous and file-backed parts (RssAnon;
// RssFile, where a mapped file's pages such as bbolt's count) from
// /proc/self/status.
func memStatus() (MemSample, error) {
	var m MemSample
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return m, fmt.Errorf("bench: %w", err)
	}
	defer f.Close()
	fields := map[string]*int64{"VmRSS": &m.RSS, "RssAnon": &m.Anon, "RssFile": &m.File}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		dst := fields[k]
		if !ok || dst == nil {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return m, fmt.Errorf("bench: %s %q: %w", k, v, err)
		}
		*dst = kb << 10
		delete(fields, k)
	}
	if len(fields) > 0 {
		return m, fmt.Errorf("bench: /proc/self/status lacks %d of VmRSS, RssAnon, RssFile", len(fields))
	}
	return m, sc.Err()
}
