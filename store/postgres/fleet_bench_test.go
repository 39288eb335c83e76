package postgres_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
	"github.com/wsreliable/wsreliable/store/postgres"
	"github.com/wsreliable/wsreliable/store/postgres/pgtest"
)

// BenchmarkFleet: three gateway nodes on PostgreSQL against one node on
// bbolt, measured in the same run on the same machine (issue 11,
// "Benchmarks"). Each sub-benchmark measures the bbolt node first, then
// the fleet, and reports both and their ratio (fleet ÷ bbolt).
//
// The three nodes run in this process: three reliable.Servers, each on
// its own postgres.Store (its own node ID, pool and LISTEN connection)
// on one shared database, each behind its own http.Server on a
// 127.0.0.1 listener. Clients are spread round-robin over the nodes
// (client i connects to node i mod 3, the other two as FallbackURLs).
// The bbolt node is reliable.NewServer on a file in b.TempDir(), with
// its default durability (fsync per group commit). Clients use NoSync
// on their own bbolt queues so that both sides pay the same client
// cost and the difference is the server's store. Client and server
// timings (heartbeat, backoff) are the defaults.
//
// The cluster is started once (pgtest: fsync on); "nostandby" runs
// first on the primary alone, then a synchronous streaming standby is
// started on the same machine and "standby" runs (the way the fleet is
// meant to be run). Each measurement ignores b.N and runs for a fixed
// time: run with -benchtime=1x. ns/op is not meaningful and is zeroed.
//
//	go test ./store/postgres -run '^$' -bench BenchmarkFleet -benchtime=1x -count=3
func BenchmarkFleet(b *testing.B) {
	cluster := pgtest.Start(b)
	for _, mode := range []string{"nostandby", "standby"} {
		if mode == "standby" {
			cluster.StartStandby()
		}
		b.Run(mode+"/throughput", func(b *testing.B) { benchThroughput(b, cluster, true, true) })
		b.Run(mode+"/throughput-up-only", func(b *testing.B) { benchThroughput(b, cluster, true, false) })
		b.Run(mode+"/throughput-down-only", func(b *testing.B) { benchThroughput(b, cluster, false, true) })
		b.Run(mode+"/send-ack", func(b *testing.B) { benchSendAck(b, cluster) })
		b.Run(mode+"/push", func(b *testing.B) { benchPush(b, cluster) })
		b.Run(mode+"/failover", func(b *testing.B) { benchFailover(b, cluster) })
	}
}

const benchPayload = 256

// gateway is one node: a reliable.Server behind an http.Server whose
// listener remembers every connection, so that kill can drop them all
// at once, as a crash of the process would.
type gateway struct {
	srv   *reliable.Server
	store *postgres.Store // nil for bbolt
	http  *http.Server
	ln    *trackingListener
	url   string
	done  chan struct{} // closed when Serve has returned
	once  sync.Once
}

type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

// serve starts srv on addr ("127.0.0.1:0" for any port).
func serve(b *testing.B, srv *reliable.Server, st *postgres.Store, addr string) *gateway {
	b.Helper()
	raw, err := net.Listen("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	g := &gateway{srv: srv, store: st, ln: &trackingListener{Listener: raw}, url: "ws://" + raw.Addr().String() + "/", done: make(chan struct{})}
	g.http = &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		_ = g.http.Serve(g.ln)
		close(g.done)
	}()
	b.Cleanup(g.stop)
	return g
}

// kill drops the node abruptly: the listener and every connection are
// closed first (the clients see their connections reset, as after a
// crash), then the server and its store are closed.
func (g *gateway) kill() {
	g.once.Do(func() {
		_ = g.ln.Close()
		g.ln.mu.Lock()
		for _, c := range g.ln.conns {
			_ = c.Close()
		}
		g.ln.mu.Unlock()
		_ = g.http.Close()
		<-g.done
		_ = g.srv.Close()
		if g.store != nil {
			_ = g.store.Close()
		}
	})
}

// stop closes the node in order: the server (its sessions), then HTTP,
// then the store.
func (g *gateway) stop() {
	g.once.Do(func() {
		_ = g.srv.Close()
		_ = g.http.Close()
		<-g.done
		g.ln.mu.Lock()
		for _, c := range g.ln.conns {
			_ = c.Close()
		}
		g.ln.mu.Unlock()
		if g.store != nil {
			_ = g.store.Close()
		}
	})
}

// setup is the nodes of one measurement and what their handler counts.
type setup struct {
	nodes []*gateway
	path  string // the bbolt node's file
	// received counts client→server messages handled, per client ID
	// and sequence number (payload prefix), for duplicate checks.
	mu       sync.Mutex
	received map[string]map[int]int
	handled  atomic.Int64
}

func (s *setup) handler(_ context.Context, m *reliable.Message) error {
	s.handled.Add(1)
	if k, err := strconv.Atoi(string(m.Payload[:10])); err == nil {
		s.mu.Lock()
		if s.received[m.ClientID] == nil {
			s.received[m.ClientID] = map[int]int{}
		}
		s.received[m.ClientID][k]++
		s.mu.Unlock()
	}
	return nil
}

// payload is 256 bytes starting with k in ten digits.
func payload(k int) []byte {
	p := make([]byte, benchPayload)
	copy(p, fmt.Sprintf("%010d", k))
	for i := 10; i < len(p); i++ {
		p[i] = 'x'
	}
	return p
}

func seqOf(p []byte) int {
	k, _ := strconv.Atoi(string(p[:10]))
	return k
}

// boltSetup starts one node on a bbolt file.
func boltSetup(b *testing.B) *setup {
	b.Helper()
	s := &setup{received: map[string]map[int]int{}, path: filepath.Join(b.TempDir(), "server.db")}
	srv, err := reliable.NewServer(s.path, s.handler, nil)
	if err != nil {
		b.Fatal(err)
	}
	s.nodes = []*gateway{serve(b, srv, nil, "127.0.0.1:0")}
	return s
}

// fleetSetup starts three nodes on a fresh schema of cluster.
func fleetSetup(b *testing.B, cluster *pgtest.Cluster) *setup {
	b.Helper()
	dsn := cluster.NewSchema(b)
	s := &setup{received: map[string]map[int]int{}}
	for range 3 {
		st, err := postgres.Open(context.Background(), dsn, nil)
		if err != nil {
			b.Fatal(err)
		}
		srv, err := reliable.NewServer("", s.handler, &reliable.ServerOptions{Store: st})
		if err != nil {
			_ = st.Close()
			b.Fatal(err)
		}
		s.nodes = append(s.nodes, serve(b, srv, st, "127.0.0.1:0"))
	}
	return s
}

// client i of s: connected to node i mod len(nodes), the others as
// fallbacks; handler (may be nil) receives pushes.
func (s *setup) client(b *testing.B, i int, handler reliable.Handler) *reliable.Client {
	b.Helper()
	n := len(s.nodes)
	var fallback []string
	for k := 1; k < n; k++ {
		fallback = append(fallback, s.nodes[(i+k)%n].url)
	}
	c, err := reliable.NewClient(s.nodes[i%n].url, filepath.Join(b.TempDir(), "client.db"), &reliable.ClientOptions{
		ClientID:     fmt.Sprintf("client-%d", i),
		FallbackURLs: fallback,
		Handler:      handler,
		NoSync:       true,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// waitConnected waits until every client is connected.
func waitConnected(b *testing.B, cs []*reliable.Client) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range cs {
		for c.State() != reliable.StateConnected {
			if time.Now().After(deadline) {
				b.Fatalf("client %s not connected: %v", c.ID(), c.State())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func zeroNsPerOp(b *testing.B) { b.ReportMetric(0, "ns/op") }

// --- throughput ---

const (
	tpClients    = 6  // two per fleet node
	tpSenders    = 32 // Send+wait loops per client
	tpPushers    = 8  // Server.Send loops per client
	tpPushWindow = 64 // pushes queued and not yet handled, per client
	tpWarmup     = 500 * time.Millisecond
	tpWindow     = 3 * time.Second
)

// throughput runs both directions at once for tpWindow (after
// tpWarmup) and returns messages/s up (client→server, acknowledged)
// and down (server→client, handled by the client). Pushes are made on
// node k mod len(nodes) for the k-th pusher: on the fleet two thirds of
// them cross nodes.
func throughput(b *testing.B, s *setup, senders, pushers int) (up, down float64) {
	b.Helper()
	var acked, pushed atomic.Int64
	sems := make([]chan struct{}, tpClients)
	cs := make([]*reliable.Client, tpClients)
	for i := range cs {
		sem := make(chan struct{}, tpPushWindow)
		sems[i] = sem
		cs[i] = s.client(b, i, func(context.Context, *reliable.Message) error {
			pushed.Add(1)
			select {
			case <-sem:
			default:
			}
			return nil
		})
	}
	waitConnected(b, cs)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, c := range cs {
		for j := range senders {
			wg.Go(func() {
				for k := j; ctx.Err() == nil; k += senders {
					r, err := c.Send(ctx, payload(k))
					if err != nil {
						return
					}
					select {
					case <-r.Done():
						if r.Err() == nil {
							acked.Add(1)
						}
					case <-ctx.Done():
						return
					}
				}
			})
		}
		for j := range pushers {
			node := s.nodes[(i+j)%len(s.nodes)].srv
			wg.Go(func() {
				for k := j; ; k += pushers {
					select {
					case sems[i] <- struct{}{}:
					case <-ctx.Done():
						return
					}
					if _, err := node.Send(ctx, c.ID(), payload(k)); err != nil {
						return
					}
				}
			})
		}
	}
	time.Sleep(tpWarmup)
	a0, p0, t0 := acked.Load(), pushed.Load(), time.Now()
	time.Sleep(tpWindow)
	a1, p1, el := acked.Load(), pushed.Load(), time.Since(t0)
	cancel()
	wg.Wait()
	for _, c := range cs {
		_ = c.Close()
	}
	return float64(a1-a0) / el.Seconds(), float64(p1-p0) / el.Seconds()
}

// benchThroughput: up and down are whether clients send and servers
// push; both at once is the measurement the issue asks for, each alone
// shows how much the two directions cost each other.
func benchThroughput(b *testing.B, cluster *pgtest.Cluster, up, down bool) {
	senders, pushers := 0, 0
	if up {
		senders = tpSenders
	}
	if down {
		pushers = tpPushers
	}
	bu, bd := throughput(b, boltSetup(b), senders, pushers)
	fu, fd := throughput(b, fleetSetup(b, cluster), senders, pushers)
	zeroNsPerOp(b)
	if up {
		b.ReportMetric(bu, "bolt-up-msgs/s")
		b.ReportMetric(fu, "fleet-up-msgs/s")
		b.ReportMetric(fu/bu, "up-ratio")
	}
	if down {
		b.ReportMetric(bd, "bolt-down-msgs/s")
		b.ReportMetric(fd, "fleet-down-msgs/s")
		b.ReportMetric(fd/bd, "down-ratio")
	}
}

// --- send → ack latency ---

const latWindow = 2 * time.Second

func percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(p * float64(len(d)-1))
	return float64(d[i]) / float64(time.Millisecond)
}

// sendAck: three clients (one per fleet node; all on the bbolt node),
// each sending one message at a time and waiting for its ack, for
// latWindow after 20 warm-up messages each.
func sendAck(b *testing.B, s *setup) []time.Duration {
	b.Helper()
	cs := make([]*reliable.Client, 3)
	for i := range cs {
		cs[i] = s.client(b, i, nil)
	}
	waitConnected(b, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	errs := make(chan error, len(cs))
	end := time.Now().Add(latWindow + time.Second)
	for _, c := range cs {
		wg.Go(func() {
			for k := 0; time.Now().Before(end); k++ {
				t0 := time.Now()
				r, err := c.Send(ctx, payload(k))
				if err == nil {
					err = r.Wait(ctx)
				}
				if err != nil {
					errs <- err
					return
				}
				if k >= 20 {
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	for _, c := range cs {
		_ = c.Close()
	}
	return lat
}

func benchSendAck(b *testing.B, cluster *pgtest.Cluster) {
	bl := sendAck(b, boltSetup(b))
	fl := sendAck(b, fleetSetup(b, cluster))
	reportLatency(b, "", bl, fl)
}

func reportLatency(b *testing.B, prefix string, bl, fl []time.Duration) {
	zeroNsPerOp(b)
	b50, b99 := percentile(bl, 0.5), percentile(bl, 0.99)
	f50, f99 := percentile(fl, 0.5), percentile(fl, 0.99)
	b.ReportMetric(b50, prefix+"bolt-p50-ms")
	b.ReportMetric(b99, prefix+"bolt-p99-ms")
	b.ReportMetric(f50, prefix+"fleet-p50-ms")
	b.ReportMetric(f99, prefix+"fleet-p99-ms")
	b.ReportMetric(f50/b50, prefix+"p50-ratio")
	b.ReportMetric(f99/b99, prefix+"p99-ratio")
	b.ReportMetric(float64(len(bl)), prefix+"bolt-samples")
	b.ReportMetric(float64(len(fl)), prefix+"fleet-samples")
}

// --- push latency ---

// pushLatency: three clients (one per fleet node); one goroutine
// pushes to them in turn, one at a time, from Server.Send until the
// client's handler has the message. On the fleet each push is made on
// the node after the client's: always cross-node. On bbolt the one
// node pushes to its own clients.
func pushLatency(b *testing.B, s *setup) []time.Duration {
	b.Helper()
	type arrival struct {
		k  int
		at time.Time
	}
	arrived := make([]chan arrival, 3)
	cs := make([]*reliable.Client, 3)
	for i := range cs {
		ch := make(chan arrival, 16)
		arrived[i] = ch
		cs[i] = s.client(b, i, func(_ context.Context, m *reliable.Message) error {
			ch <- arrival{seqOf(m.Payload), time.Now()}
			return nil
		})
	}
	waitConnected(b, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lat []time.Duration
	end := time.Now().Add(latWindow + time.Second)
	for k := 0; time.Now().Before(end); k++ {
		i := k % 3
		node := s.nodes[(i+1)%len(s.nodes)].srv
		t0 := time.Now()
		if _, err := node.Send(ctx, cs[i].ID(), payload(k)); err != nil {
			b.Fatal(err)
		}
		for got := false; !got; {
			select {
			case a := <-arrived[i]:
				if a.k == k {
					got = true
					if k >= 30 {
						lat = append(lat, a.at.Sub(t0))
					}
				}
			case <-ctx.Done():
				b.Fatalf("push %d to client %d never arrived", k, i)
			}
		}
	}
	for _, c := range cs {
		_ = c.Close()
	}
	return lat
}

func benchPush(b *testing.B, cluster *pgtest.Cluster) {
	bl := pushLatency(b, boltSetup(b))
	fl := pushLatency(b, fleetSetup(b, cluster))
	reportLatency(b, "push-", bl, fl)
}

// --- failover ---

const (
	foClients = 6 // two per fleet node
	foWarmup  = time.Second
)

// failover: foClients clients each send one message at a time (waiting
// for its ack). After foWarmup, kill() drops nodes; then the time from
// the kill until every client that was on a killed node has an ack
// again (received by the client after its connection was dropped) is
// measured: max over those clients, and the first. restart, if not
// nil, runs right after the kill (the bbolt node restarted in place).
// It also returns the messages handled twice by the servers (a
// plain handler: duplicates are allowed within AckBatch of a crash)
// and the acknowledged messages the servers never handled.
func failover(b *testing.B, s *setup, victims []int, kill, restart func()) (all, first time.Duration, dups, lost int) {
	b.Helper()
	cs := make([]*reliable.Client, foClients)
	for i := range cs {
		cs[i] = s.client(b, i, nil)
	}
	waitConnected(b, cs)
	lastAck := make([]atomic.Int64, foClients) // Unix ns
	ackedUpTo := make([]atomic.Int64, foClients)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				r, err := c.Send(ctx, payload(k))
				if err == nil {
					err = r.Wait(ctx)
				}
				if err != nil {
					return
				}
				ackedUpTo[i].Store(int64(k + 1))
				lastAck[i].Store(time.Now().UnixNano())
			}
		})
	}
	time.Sleep(foWarmup)
	t0 := time.Now()
	kill()
	killed := time.Now().UnixNano()
	if restart != nil {
		restart()
	}
	var onVictim []int // the clients that were on a killed node
	for i := range cs {
		if slices.Contains(victims, i%len(s.nodes)) {
			onVictim = append(onVictim, i)
		}
	}
	for {
		done, firstAt, lastAt := 0, int64(0), int64(0)
		for _, i := range onVictim {
			if at := lastAck[i].Load(); at > killed {
				done++
				if firstAt == 0 || at < firstAt {
					firstAt = at
				}
				lastAt = max(lastAt, at)
			}
		}
		if done == len(onVictim) {
			// The ack time is when the waiting goroutine saw it; the
			// last ack before it may have come up to one send earlier.
			all = time.Duration(lastAt - t0.UnixNano())
			first = time.Duration(firstAt - t0.UnixNano())
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("after the kill, %d of %d clients delivering again within 60 s", done, len(onVictim))
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	for _, c := range cs {
		_ = c.Close()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, c := range cs {
		got := s.received[c.ID()]
		for k := range int(ackedUpTo[i].Load()) {
			if got[k] == 0 {
				lost++
			}
		}
		for _, n := range got {
			dups += n - 1
		}
	}
	return all, first, dups, lost
}

func benchFailover(b *testing.B, cluster *pgtest.Cluster) {
	// bbolt: the node is killed and a new one started at once on the same
	// file and address (the best case for a single node: no process
	// start, no supervisor delay).
	bs := boltSetup(b)
	addr := bs.nodes[0].ln.Addr().String()
	ball, bfirst, bdups, blost := failover(b, bs, []int{0}, bs.nodes[0].kill, func() {
		srv, err := reliable.NewServer(bs.path, bs.handler, nil)
		if err != nil {
			b.Fatal(err)
		}
		bs.nodes[0] = serve(b, srv, nil, addr)
	})
	fs := fleetSetup(b, cluster)
	fall, ffirst, fdups, flost := failover(b, fs, []int{0}, fs.nodes[0].kill, nil)
	zeroNsPerOp(b)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(ball), "bolt-restart-all-ms")
	b.ReportMetric(ms(bfirst), "bolt-restart-first-ms")
	b.ReportMetric(ms(fall), "fleet-failover-all-ms")
	b.ReportMetric(ms(ffirst), "fleet-failover-first-ms")
	b.ReportMetric(ms(fall)/ms(ball), "all-ratio")
	b.ReportMetric(float64(bdups), "bolt-dups")
	b.ReportMetric(float64(fdups), "fleet-dups")
	b.ReportMetric(float64(blost+flost), "lost")
}
