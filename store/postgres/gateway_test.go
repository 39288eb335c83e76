package postgres_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wsreliable/wsreliable/internal/fixedport"
	"github.com/wsreliable/wsreliable/internal/testkit"
	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/reliable"
	"github.com/wsreliable/wsreliable/store/postgres"
	"github.com/wsreliable/wsreliable/store/postgres/pgtest"
)

// A gateway node is this test binary started again with nodeEnv set: a
// reliable.Server on the PostgreSQL store whose handler writes each
// message to the application's table in the transaction that advances
// the watermark (Store.Handler). The test SIGKILLs, stops and restarts
// such processes.
const (
	nodeEnv     = "WSR_TEST_GATEWAY_NODE" // the node's name
	nodeDSNEnv  = "WSR_TEST_GATEWAY_DSN"
	nodeAddrEnv = "WSR_TEST_GATEWAY_ADDR"
)

// appTable is the application's table: one row per message applied.
const appTable = `CREATE TABLE app_messages (client text NOT NULL, payload text NOT NULL, node text NOT NULL)`

// runNode runs a gateway node until the process is killed; it returns
// only if it cannot start.
func runNode() int {
	name, dsn, addr := os.Getenv(nodeEnv), os.Getenv(nodeDSNEnv), os.Getenv(nodeAddrEnv)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", name)
	ctx := context.Background()
	// The node ID names the process, so the test can tell who owns what.
	st, err := postgres.Open(ctx, dsn, &postgres.Options{NodeID: fmt.Sprintf("%s-%d", name, os.Getpid())})
	if err != nil {
		fmt.Fprintln(os.Stderr, "node: open store:", err)
		return 1
	}
	handler := st.Handler(func(ctx context.Context, tx pgx.Tx, m *reliable.Message) error {
		_, err := tx.Exec(ctx, `INSERT INTO app_messages (client, payload, node) VALUES ($1, $2, $3)`, m.ClientID, string(m.Payload), name)
		return err
	})
	srv, err := reliable.NewServer("", handler, &reliable.ServerOptions{
		Store:             st,
		HeartbeatInterval: 200 * time.Millisecond,
		HeartbeatTimeout:  time.Second,
		Logger:            log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "node: server:", err)
		return 1
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "node: listen:", err)
		return 1
	}
	fmt.Println("ready")
	err = (&http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}).Serve(ln)
	fmt.Fprintln(os.Stderr, "node: serve:", err)
	return 1
}

// lazy formats as what its function returns when formatted: a failure
// message's detail, read when the failure happens.
type lazy func() string

func (l lazy) String() string { return l() }

// node is one gateway process, restartable on the same port.
type node struct {
	t      *testing.T
	name   string
	dsn    string
	port   *fixedport.Port
	url    string
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *lockedBuffer
}

// lockedBuffer collects a node's stderr across its restarts.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newNode(t *testing.T, name, dsn string) *node {
	t.Helper()
	p, err := fixedport.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	n := &node{t: t, name: name, dsn: dsn, port: p, url: "ws://" + p.Addr() + "/", stderr: &lockedBuffer{}}
	t.Cleanup(n.kill)
	return n
}

// start starts the node's process and waits until it listens.
func (n *node) start() {
	t := n.t
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), nodeEnv+"="+n.name, nodeDSNEnv+"="+n.dsn, nodeAddrEnv+"="+n.port.Addr())
	cmd.Stderr = n.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line == "ready\n"
		_, _ = io.Copy(io.Discard, out)
	}()
	done := n.done
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("node %s did not start:\n%s", n.name, n.stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("node %s not ready within 60s:\n%s", n.name, n.stderr)
	}
}

// kill SIGKILLs the node and waits for it to be gone.
func (n *node) kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGCONT) // a stopped process dies too, but be sure
	_ = n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
}

func (n *node) signal(sig syscall.Signal) {
	n.t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil {
		n.t.Fatalf("node %s: %v: %v", n.name, sig, err)
	}
}

// TestGatewayFleet: three gateway nodes on PostgreSQL with a synchronous
// standby; clients spread over them send, and a fourth process-less
// server (this test) pushes to them, whichever node they are on. While
// traffic flows, nodes are SIGKILLed and restarted, the primary is
// SIGKILLed and the standby promoted, and a node is stopped (SIGSTOP)
// past its clients' heartbeat and resumed. Every message sent is in
// the application table exactly once (the transactional handler), every
// push arrives exactly once in order, and the stopped node's late
// writes are refused.
func TestGatewayFleet(t *testing.T) {
	ctx := testkit.Deadline(t, 4*time.Minute)
	cluster := pgtest.Start(t)
	cluster.StartStandby()
	dsn := cluster.MultiHostDSN()
	conn, err := pgx.Connect(ctx, cluster.DSN())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, appTable); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)

	nodes := make([]*node, 3)
	for i := range nodes {
		nodes[i] = newNode(t, fmt.Sprintf("n%d", i), dsn)
		nodes[i].start()
	}
	// The pusher: a server without clients of its own, on the same
	// store. Every push crosses to another process.
	pst := openStore(t, dsn, nil)
	pusher, err := reliable.NewServer("", func(context.Context, *reliable.Message) error { return nil }, &reliable.ServerOptions{Store: pst})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pusher.Close() })

	const clients, perClient = 6, 150
	type client struct {
		c    *reliable.Client
		mu   sync.Mutex
		got  []string // payloads, as they arrived
		ids  []string // their message IDs
		wake chan struct{}

		confirmed []string     // IDs of the pushes Send confirmed, in order
		retried   map[int]bool // pushes sent again after an error
	}
	cs := make([]*client, clients)
	for i := range cs {
		cl := &client{wake: make(chan struct{}, 1), retried: map[int]bool{}}
		var fallback []string
		for k := 1; k < len(nodes); k++ {
			fallback = append(fallback, nodes[(i+k)%len(nodes)].url)
		}
		c, err := reliable.NewClient(nodes[i%len(nodes)].url, filepath.Join(t.TempDir(), "c.db"), &reliable.ClientOptions{
			ClientID:     fmt.Sprintf("device-%d", i),
			FallbackURLs: fallback,
			Handler: func(_ context.Context, m *reliable.Message) error {
				cl.mu.Lock()
				cl.got = append(cl.got, string(m.Payload))
				cl.ids = append(cl.ids, m.ID.String())
				cl.mu.Unlock()
				select {
				case cl.wake <- struct{}{}:
				default:
				}
				return nil
			},
			HeartbeatInterval: 200 * time.Millisecond,
			HeartbeatTimeout:  time.Second,
			BackoffMax:        300 * time.Millisecond,
			AckBatch:          16,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		cl.c = c
		cs[i] = cl
	}

	var sent, pushed atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 2*clients)
	for i, cl := range cs {
		wg.Go(func() {
			for k := range perClient {
				if _, err := cl.c.Send(ctx, []byte(strconv.Itoa(k))); err != nil {
					errs <- fmt.Errorf("client %d: send %d: %w", i, k, err)
					return
				}
				sent.Add(1)
				if k%10 == 9 { // a pace the faults can fall between
					if err := cl.c.Drain(ctx); err != nil {
						errs <- fmt.Errorf("client %d: drain: %w", i, err)
						return
					}
				}
			}
		})
		wg.Go(func() {
			for k := range perClient {
				// The push's ID, kept across retries: pushes are
				// idempotent by ID.
				id := protocol.MessageID(uuid.New())
				for {
					r, err := pusher.SendMessage(ctx, cl.c.ID(), reliable.OutgoingMessage{ID: id, Payload: []byte(strconv.Itoa(k))})
					if err == nil {
						cl.mu.Lock()
						cl.confirmed = append(cl.confirmed, r.ID().String())
						cl.mu.Unlock()
						break
					}
					// The primary is failing over. A push whose commit
					// was cut off may have committed all the same (an
					// error leaves the outcome unknown): the producer
					// retries with the same ID, which queues it once.
					if ctx.Err() != nil {
						errs <- fmt.Errorf("push %d to client %d: %w", k, i, err)
						return
					}
					cl.mu.Lock()
					cl.retried[k] = true
					cl.mu.Unlock()
				}
				pushed.Add(1)
				if k%10 == 9 {
					select {
					case <-time.After(20 * time.Millisecond): // a pace, not a synchronisation
					case <-ctx.Done():
						return
					}
				}
			}
		})
	}

	total := int64(clients * perClient)
	at := func(frac float64, what string) {
		t.Helper()
		target := int64(frac * float64(total))
		testkit.Eventually(t, 2*time.Minute, func() bool { return sent.Load() >= target && pushed.Load() >= target },
			"traffic reaching %d before %s (sent %d, pushed %d)", target, what, sent.Load(), pushed.Load())
	}
	at(0.15, "killing n0")
	nodes[0].kill()
	at(0.25, "restarting n0")
	nodes[0].start()
	at(0.35, "killing n1")
	nodes[1].kill()
	at(0.45, "killing the primary")
	cluster.Kill()
	cluster.Promote()
	at(0.55, "restarting n1")
	nodes[1].start()
	at(0.65, "stopping n2")
	nodes[2].signal(syscall.SIGSTOP)
	// Stopped past its clients' heartbeat (1.2 s): they move to the
	// other nodes, which claim them.
	stoppedClients := []string{cs[2].c.ID(), cs[5].c.ID()}
	owners, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer owners.Close(context.WithoutCancel(ctx))
	var why string
	testkit.Eventually(t, time.Minute, func() bool {
		for i, id := range stoppedClients {
			var owner string
			err := owners.QueryRow(ctx, `SELECT owner FROM wsr_owners WHERE peer = $1`, []byte(id)).Scan(&owner)
			if err != nil || strings.HasPrefix(owner, "n2-") {
				why = fmt.Sprintf("client %s: owner %q, %v; client %+v", id, owner, err, cs[2+3*i].c.Stats())
				return false
			}
		}
		return true
	}, "the stopped node's clients to be claimed elsewhere (%s)", lazy(func() string { return why }))
	nodes[2].signal(syscall.SIGCONT)
	at(0.8, "killing n0 again")
	nodes[0].kill()
	nodes[0].start()

	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	doubled, retries := 0, 0
	for i, cl := range cs {
		if err := cl.c.Drain(ctx); err != nil {
			t.Fatalf("client %d: drain: %v", i, err)
		}
		// Every confirmed push arrives; wait for the last one.
		arrived := func() map[string]bool {
			cl.mu.Lock()
			defer cl.mu.Unlock()
			m := map[string]bool{}
			for _, id := range cl.ids {
				m[id] = true
			}
			return m
		}
		for last := cl.confirmed[len(cl.confirmed)-1]; !arrived()[last]; {
			select {
			case <-cl.wake:
			case <-ctx.Done():
				t.Fatalf("client %d: the last confirmed push never arrived", i)
			}
		}
		cl.mu.Lock()
		byID := map[string]int{}
		for _, id := range cl.ids {
			if byID[id]++; byID[id] > 1 {
				t.Errorf("client %d: push %s arrived twice", i, id)
			}
		}
		for _, id := range cl.confirmed {
			if byID[id] != 1 {
				t.Errorf("client %d: confirmed push %s arrived %d times", i, id, byID[id])
			}
		}
		// Every push once and in order, retried or not.
		for k, p := range cl.got {
			if p != strconv.Itoa(k) {
				t.Errorf("client %d: arrival %d is push %s (retried: %v)", i, k, p, cl.retried[k])
				break
			}
		}
		if len(cl.got) != perClient {
			t.Errorf("client %d: %d pushes arrived, want %d", i, len(cl.got), perClient)
		}
		doubled += max(len(cl.got)-perClient, 0)
		retries += len(cl.retried)
		cl.mu.Unlock()
	}

	// The application's table: every message once.
	conn, err = pgx.Connect(ctx, cluster.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT client, payload, count(*), string_agg(node, ',') FROM app_messages GROUP BY client, payload`)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	byNode := map[string]int{}
	for rows.Next() {
		var client, payload, nodesCSV string
		var count int
		if err := rows.Scan(&client, &payload, &count, &nodesCSV); err != nil {
			t.Fatal(err)
		}
		if count != 1 {
			t.Errorf("client %s message %s applied %d times (nodes %s)", client, payload, count, nodesCSV)
		}
		seen[client]++
		byNode[nodesCSV]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for i, cl := range cs {
		if got := seen[cl.c.ID()]; got != perClient {
			t.Errorf("client %d: %d distinct messages applied, want %d", i, got, perClient)
		}
	}
	fenced := strings.Count(nodes[2].stderr.String(), "fenced out")
	t.Logf("%d clients × %d messages each way; 3 node kills, a primary failover, a node stopped and resumed: "+
		"0 lost, 0 applied twice, every push exactly once (%d pushes retried with their ID after an error with an unknown outcome, %d queued twice); "+
		"messages applied per node %v; the stopped node logged %d fenced writes",
		clients, perClient, retries, doubled, byNode, fenced)
	if t.Failed() {
		for _, n := range nodes {
			t.Logf("node %s stderr:\n%s", n.name, n.stderr)
		}
	}
}
