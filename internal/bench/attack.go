package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/reliable"
)

// AttackConfig describes an honest client's latency under attack.
type AttackConfig struct {
	// Count is the honest client's messages per phase. Zero: 500.
	Count int
	// Duration is the least time a phase lasts: the honest client sends
	// Count messages, then goes on until Duration has passed, so a
	// phase outlasts the bursts the server's rate limits allow. Zero:
	// Count decides.
	Duration time.Duration
	// Attackers is the connections of each kind of attack. Zero: 2.
	Attackers int
	// Durable fsyncs on both sides; false sets NoSync on both.
	Durable bool
	// Kinds selects the attacks: "churn", "pings", "big". Empty: all.
	Kinds []string
	// MessageRate is the server's MaxMessageRate (per identity). Zero:
	// none, the default.
	MessageRate float64
	// Server, if set, is the base of the server's options: UnderAttack
	// sets Authenticate and NoSync (and MaxMessageRate, if set above) on
	// a copy. Nil: the defaults.
	Server *reliable.ServerOptions
	// HonestInProcess runs the honest client in the server's process
	// instead of a child process of its own.
	HonestInProcess bool
	// Launcher starts the child processes: the attackers' and (unless
	// HonestInProcess) the honest client's.
	Launcher Launcher
	// Dir holds the run's temporary store files. Empty: os.TempDir().
	Dir string
}

// AttackResult compares the honest client's send-to-receipt latency
// unloaded with the same under attack.
type AttackResult struct {
	Config           AttackConfig
	UnloadedP50      time.Duration
	UnloadedP99      time.Duration
	AttackP50        time.Duration
	AttackP99        time.Duration
	Ratio            float64 // AttackP99 / UnloadedP99; the bound is 5
	AttackerSessions int64   // sessions the attackers opened
	AttackerMessages int64   // their messages the handler saw
	Stats            reliable.ServerStats
}

// identityHeader carries the identity in the attack runs: the server
// trusts it, as it would a token.
const identityHeader = "X-Bench-Identity"

// Child modes of the attack scenario.
const (
	attackersMode = "attackers" // the attack connections
	honestMode    = "honest"    // the honest client
)

// AttackKinds are the attacks UnderAttack knows, in the order it reports
// them.
var AttackKinds = []string{"churn", "pings", "big"}

// UnderAttack measures the honest client's send-to-receipt p50 and p99
// (one message at a time, as Latency's unloaded run), first alone, then
// while another identity attacks with the kinds of the table:
// connections presenting the honest client's ID and others (churn, one
// message each), a ping flood, and 256 KiB messages sent without waiting
// for acknowledgements.
//
// Only the server runs in this process. The attackers run in a child
// process, so their own CPU, allocation and GC are not charged to the
// server's runtime, as they would not be on another host; the honest
// client runs in a second child (unless HonestInProcess), so the
// server's process holds the server alone and the honest client's
// process is idle but for its one message, as a device on another host
// would be. All three still share the machine's cores. The server runs
// with cfg.Server (or the defaults) plus Authenticate. The attackers'
// own progress is reported, not asserted.
func UnderAttack(ctx context.Context, cfg AttackConfig) (res AttackResult, err error) {
	if cfg.Count < 0 || cfg.Attackers < 0 || cfg.Duration < 0 {
		return res, fmt.Errorf("bench: negative field in %+v", cfg)
	}
	if cfg.Count == 0 {
		cfg.Count = 500
	}
	if cfg.Attackers == 0 {
		cfg.Attackers = 2
	}
	if len(cfg.Kinds) == 0 {
		cfg.Kinds = AttackKinds
	}
	for _, k := range cfg.Kinds {
		if !slices.Contains(AttackKinds, k) {
			return res, fmt.Errorf("bench: unknown attack %q", k)
		}
	}
	res.Config = cfg
	d, err := os.MkdirTemp(cfg.Dir, "wsreliable-attack-")
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(d)

	var attackerMsgs atomic.Int64
	var opts reliable.ServerOptions
	if cfg.Server != nil {
		opts = *cfg.Server
	}
	opts.NoSync = !cfg.Durable
	if cfg.MessageRate != 0 {
		opts.MaxMessageRate = cfg.MessageRate
	}
	opts.Authenticate = func(r *http.Request) (string, error) {
		if id := r.Header.Get(identityHeader); id != "" {
			return id, nil
		}
		return "", errors.New("no identity")
	}
	srv, err := startReliableServer(ctx, "127.0.0.1:0", filepath.Join(d, "server.db"),
		func(_ context.Context, m *reliable.Message) error {
			if m.Identity != "honest" {
				attackerMsgs.Add(1)
			}
			return nil
		}, &opts)
	if err != nil {
		return res, fmt.Errorf("bench: start server: %w", err)
	}
	defer func() { err = errors.Join(err, srv.close()) }()

	measure, stopHonest, err := startHonest(ctx, cfg, srv.url, d)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, stopHonest()) }()
	atk, err := cfg.Launcher.start(ctx, attackersMode, "-url", srv.url,
		"-n", strconv.Itoa(cfg.Attackers), "-kinds", strings.Join(cfg.Kinds, ","))
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, atk.stop()) }()
	if _, err := atk.reply(childReplyTimeout); err != nil {
		return res, err
	}

	// Warm up (connect, first commits), then measure alone.
	if _, err := measure(cfg.Count, 0); err != nil {
		return res, err
	}
	un, err := measure(cfg.Count, cfg.Duration)
	if err != nil {
		return res, err
	}
	res.UnloadedP50, res.UnloadedP99 = un.P50, un.P99

	if _, err := atk.call(time.Minute, "start"); err != nil {
		return res, err
	}
	under, merr := measure(cfg.Count, cfg.Duration)
	st, err := atk.call(time.Minute, "stop")
	if err := errors.Join(merr, err); err != nil {
		return res, err
	}
	res.AttackP50, res.AttackP99 = under.P50, under.P99
	res.Ratio = float64(res.AttackP99) / float64(max(res.UnloadedP99, 1))
	res.AttackerSessions, res.AttackerMessages = st.Sessions, attackerMsgs.Load()
	res.Stats = srv.srv.Stats()
	return res, nil
}

// startHonest starts the honest client, in a child or in this process,
// and returns a function that sends n messages one at a time (and more
// until d has passed) and reports their latencies, and one that stops
// the client.
func startHonest(ctx context.Context, cfg AttackConfig, url, dir string) (measure func(n int, d time.Duration) (childStatus, error), stop func() error, err error) {
	if cfg.HonestInProcess {
		h, err := newHonest(url, dir, cfg.Durable)
		if err != nil {
			return nil, nil, err
		}
		return func(n int, d time.Duration) (childStatus, error) { return h.measure(ctx, n, d) }, h.c.Close, nil
	}
	args := []string{honestMode, "-url", url, "-dir", dir}
	if cfg.Durable {
		args = append(args, "-durable")
	}
	c, err := cfg.Launcher.start(ctx, args...)
	if err != nil {
		return nil, nil, err
	}
	if _, err := c.reply(childReplyTimeout); err != nil {
		return nil, nil, errors.Join(err, c.stop())
	}
	return func(n int, d time.Duration) (childStatus, error) {
		return c.call(childReplyTimeout, "measure", strconv.Itoa(n), d.String())
	}, c.stop, nil
}

// honest is the honest client: identity "honest", client ID "honest-1".
type honest struct {
	c *reliable.Client
	p []byte
}

func newHonest(url, dir string, durable bool) (*honest, error) {
	c, err := reliable.NewClient(url, filepath.Join(dir, "honest.db"), &reliable.ClientOptions{
		ClientID: "honest-1",
		NoSync:   !durable,
		Header: func(context.Context) (http.Header, error) {
			return http.Header{identityHeader: {"honest"}}, nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("bench: start client: %w", err)
	}
	return &honest{c: c, p: payload(256)}, nil
}

// measure sends n messages one at a time, each after the previous one's
// receipt settled, and more until d has passed, and reports the p50 and
// p99 of send-to-receipt.
func (h *honest) measure(ctx context.Context, n int, d time.Duration) (childStatus, error) {
	lats := make([]time.Duration, 0, n)
	for start := time.Now(); len(lats) < n || time.Since(start) < d; {
		t0 := time.Now()
		rc, err := h.c.Send(ctx, h.p)
		if err != nil {
			return childStatus{}, fmt.Errorf("bench: send: %w", err)
		}
		if err := rc.Wait(ctx); err != nil {
			return childStatus{}, fmt.Errorf("bench: receipt: %w", err)
		}
		lats = append(lats, time.Since(t0))
	}
	return childStatus{Sent: len(lats), Acked: len(lats), P50: percentile(lats, 0.5), P99: percentile(lats, 0.99)}, nil
}

// childHonest is the child side of the honest client: "measure N
// DURATION".
func childHonest(ctx context.Context, url, dir string, durable bool) (map[string]func([]string) (childStatus, error), childStatus, func() error, error) {
	h, err := newHonest(url, dir, durable)
	if err != nil {
		return nil, childStatus{}, nil, err
	}
	cmds := map[string]func([]string) (childStatus, error){
		"measure": func(args []string) (childStatus, error) {
			if len(args) != 2 {
				return childStatus{}, fmt.Errorf("measure wants N DURATION, got %q", args)
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n <= 0 {
				return childStatus{}, fmt.Errorf("measure: %q is not a positive number", args[0])
			}
			d, err := time.ParseDuration(args[1])
			if err != nil {
				return childStatus{}, fmt.Errorf("measure: %w", err)
			}
			return h.measure(ctx, n, d)
		},
	}
	return cmds, childStatus{}, h.c.Close, nil
}

// childAttackers is the child side of the attackers: "start" starts n
// connections of each kind, "stop" stops them and reports the sessions
// they opened.
func childAttackers(url string, n int, kinds []string) (map[string]func([]string) (childStatus, error), childStatus, func() error, error) {
	attacks := map[string]func(string, int, <-chan struct{}, *atomic.Int64){
		"churn": attackChurn, "pings": attackPings, "big": attackBig,
	}
	for _, k := range kinds {
		if attacks[k] == nil {
			return nil, childStatus{}, nil, fmt.Errorf("unknown attack %q", k)
		}
	}
	var (
		wg       sync.WaitGroup
		stop     chan struct{}
		sessions atomic.Int64
	)
	halt := func() childStatus {
		if stop != nil {
			close(stop)
			wg.Wait()
			stop = nil
		}
		return childStatus{Sessions: sessions.Load()}
	}
	cmds := map[string]func([]string) (childStatus, error){
		"start": func([]string) (childStatus, error) {
			if stop != nil {
				return childStatus{}, errors.New("already attacking")
			}
			stop = make(chan struct{})
			for i := range n {
				for _, k := range kinds {
					wg.Go(func() { attacks[k](url, i, stop, &sessions) })
				}
			}
			return childStatus{}, nil
		},
		"stop": func([]string) (childStatus, error) { return halt(), nil },
	}
	return cmds, childStatus{}, func() error { halt(); return nil }, nil
}

// attackDial opens a raw session as the attacker identity and sends its
// hello; nil if the server refused or the attack is over.
func attackDial(url, clientID string, stream protocol.StreamID, sessions *atomic.Int64) *websocket.Conn {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: []string{protocol.Subprotocol}}
	ws, resp, err := d.Dial(url, http.Header{identityHeader: {"mallory"}})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		time.Sleep(10 * time.Millisecond) // refused: pace the retries
		return nil
	}
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Hello{ClientID: clientID, Stream: stream})) != nil {
		ws.Close()
		return nil
	}
	sessions.Add(1)
	return ws
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// attackChurn connects again and again, as the honest client's ID and as
// fresh ones, sends one message and leaves.
func attackChurn(url string, worker int, stop <-chan struct{}, sessions *atomic.Int64) {
	for n := 0; !stopped(stop); n++ {
		id := fmt.Sprintf("churn-%d-%d", worker, n)
		if n%2 == 0 {
			id = "honest-1"
		}
		stream := protocol.StreamID(uuid.New())
		ws := attackDial(url, id, stream, sessions)
		if ws == nil {
			continue
		}
		_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_ = ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Data{
			Stream: stream, Seq: 1, ID: protocol.MessageID(uuid.New()), Payload: []byte("squat")}))
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, _ = ws.ReadMessage() // the welcome
		ws.Close()
	}
}

// attackPings floods a session with pings until the server closes it,
// then does it again.
func attackPings(url string, worker int, stop <-chan struct{}, sessions *atomic.Int64) {
	for !stopped(stop) {
		ws := attackDial(url, fmt.Sprintf("pinger-%d", worker), protocol.StreamID(uuid.New()), sessions)
		if ws == nil {
			continue
		}
		done := readAll(ws)
		for !stopped(stop) {
			if ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)) != nil {
				break
			}
		}
		ws.Close()
		<-done
	}
}

// attackBig sends 256 KiB messages without waiting for acknowledgements.
func attackBig(url string, worker int, stop <-chan struct{}, sessions *atomic.Int64) {
	big := payload(256 << 10)
	for !stopped(stop) {
		stream := protocol.StreamID(uuid.New())
		ws := attackDial(url, fmt.Sprintf("big-%d", worker), stream, sessions)
		if ws == nil {
			continue
		}
		done := readAll(ws)
		for seq := uint64(1); !stopped(stop) && seq <= 512; seq++ {
			_ = ws.SetWriteDeadline(time.Now().Add(time.Second))
			if ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Data{
				Stream: stream, Seq: seq, ID: protocol.MessageID(uuid.New()), Payload: big})) != nil {
				break
			}
		}
		ws.Close()
		<-done
	}
}

// readAll reads ws until it fails, so that control frames and the close
// are processed; the returned channel is closed when it has.
func readAll(ws *websocket.Conn) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	return done
}
