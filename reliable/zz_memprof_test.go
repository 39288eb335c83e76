package reliable_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

func vmrss() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n * 1024
		}
	}
	return 0
}

func snap() (runtime.MemStats, int64, int) {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m, vmrss(), runtime.NumGoroutine()
}

func TestZZMemProf(t *testing.T) {
	if os.Getenv("MEMPROF_RATE1") != "" {
		runtime.MemProfileRate = 1
	}
	n, _ := strconv.Atoi(os.Getenv("MEMPROF_N"))
	if n == 0 {
		t.Skip("MEMPROF_N not set")
	}
	srv, err := reliable.NewServer(filepath.Join(t.TempDir(), "s.db"), func(context.Context, *reliable.Message) error { return nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	m0, r0, g0 := snap()
	cmd := exec.Command("/tmp/wsr", "bench", "__bench-child", "clients", "-kind", "wsreliable", "-url", "ws://"+ln.Addr().String()+"/", "-n", strconv.Itoa(n))
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	sc.Scan()
	t.Log(sc.Text())
	time.Sleep(2 * time.Second)
	m1, r1, g1 := snap()
	d := func(a, b uint64) float64 { return float64(int64(b)-int64(a)) / float64(n) }
	fmt.Printf("conns=%d rss/conn=%.0f goroutines/conn=%.2f\n", srv.Stats().Sessions, float64(r1-r0)/float64(n), float64(g1-g0)/float64(n))
	fmt.Printf("HeapInuse/conn=%.0f HeapAlloc/conn=%.0f StackInuse/conn=%.0f MSpanInuse/conn=%.0f Sys/conn=%.0f GCSys=%.0f OtherSys=%.0f\n",
		d(m0.HeapInuse, m1.HeapInuse), d(m0.HeapAlloc, m1.HeapAlloc), d(m0.StackInuse, m1.StackInuse), d(m0.MSpanInuse, m1.MSpanInuse), d(m0.Sys, m1.Sys), d(m0.GCSys, m1.GCSys), d(m0.OtherSys, m1.OtherSys))
	f, _ := os.Create("/tmp/prof/heap.pprof")
	pprof.Lookup("heap").WriteTo(f, 0)
	f.Close()
	g, _ := os.Create("/tmp/prof/goroutine.txt")
	pprof.Lookup("goroutine").WriteTo(g, 1)
	g.Close()
	sm, _ := os.ReadFile("/proc/self/smaps_rollup")
	fmt.Println(string(sm))
	in.Write([]byte("quit\n"))
	in.Close()
	cmd.Wait()
	hs.Close()
	srv.Close()
}
