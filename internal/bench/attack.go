package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
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
	// Attackers is the connections of each kind of attack. Zero: 2.
	Attackers int
	// Durable fsyncs on both sides; false sets NoSync on both.
	Durable bool
	// Kinds selects the attacks: "churn", "pings", "big". Empty: all.
	Kinds []string
	// MessageRate is the server's MaxMessageRate (per identity). Zero:
	// none, the default.
	MessageRate float64
	// Dir holds the run's temporary store files. Empty: os.TempDir().
	Dir string
}

// AttackResult compares the honest client's send-to-receipt latency
// unloaded with the same under attack.
type AttackResult struct {
	Config           AttackConfig
	UnloadedP99      time.Duration
	AttackP99        time.Duration
	AttackP50        time.Duration
	Ratio            float64 // AttackP99 / UnloadedP99; the bound is 5
	AttackerSessions int64   // sessions the attackers opened
	AttackerMessages int64   // their messages the handler saw
	Stats            reliable.ServerStats
}

// identityHeader carries the identity in the attack runs: the server
// trusts it, as it would a token.
const identityHeader = "X-Bench-Identity"

// UnderAttack measures the honest client's send-to-receipt p99 (one
// message at a time, as Latency's unloaded run), first alone, then while
// another identity attacks with every kind of the table at once:
// connections presenting the honest client's ID and others (churn, one
// message each), a ping flood, and 256 KiB messages sent without waiting
// for acknowledgements. The server runs with its defaults plus
// Authenticate (and MessageRate). The attackers' own progress is reported, not asserted.
func UnderAttack(ctx context.Context, cfg AttackConfig) (res AttackResult, err error) {
	if cfg.Count < 0 || cfg.Attackers < 0 {
		return res, fmt.Errorf("bench: negative field in %+v", cfg)
	}
	if cfg.Count == 0 {
		cfg.Count = 500
	}
	if cfg.Attackers == 0 {
		cfg.Attackers = 2
	}
	res.Config = cfg
	d, err := os.MkdirTemp(cfg.Dir, "wsreliable-attack-")
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(d)

	var attackerMsgs atomic.Int64
	srv, err := startReliableServer(ctx, "127.0.0.1:0", filepath.Join(d, "server.db"),
		func(_ context.Context, m *reliable.Message) error {
			if m.Identity != "honest" {
				attackerMsgs.Add(1)
			}
			return nil
		},
		&reliable.ServerOptions{
			NoSync:         !cfg.Durable,
			MaxMessageRate: cfg.MessageRate,
			Authenticate: func(r *http.Request) (string, error) {
				if id := r.Header.Get(identityHeader); id != "" {
					return id, nil
				}
				return "", errors.New("no identity")
			},
		})
	if err != nil {
		return res, fmt.Errorf("bench: start server: %w", err)
	}
	defer srv.close()
	c, err := reliable.NewClient(srv.url, filepath.Join(d, "honest.db"), &reliable.ClientOptions{
		ClientID: "honest-1",
		NoSync:   !cfg.Durable,
		Header: func(context.Context) (http.Header, error) {
			return http.Header{identityHeader: {"honest"}}, nil
		},
	})
	if err != nil {
		return res, fmt.Errorf("bench: start client: %w", err)
	}
	defer c.Close()
	p := payload(256)
	measure := func() ([]time.Duration, error) {
		lats := make([]time.Duration, 0, cfg.Count)
		for range cfg.Count {
			t0 := time.Now()
			rc, err := c.Send(ctx, p)
			if err != nil {
				return nil, fmt.Errorf("bench: send: %w", err)
			}
			if err := rc.Wait(ctx); err != nil {
				return nil, fmt.Errorf("bench: receipt: %w", err)
			}
			lats = append(lats, time.Since(t0))
		}
		return lats, nil
	}
	// Warm up (connect, first commits), then measure alone.
	if _, err := measure(); err != nil {
		return res, err
	}
	un, err := measure()
	if err != nil {
		return res, err
	}
	res.UnloadedP99 = percentile(un, 0.99)

	stop := make(chan struct{})
	var (
		wg       sync.WaitGroup
		sessions atomic.Int64
	)
	attacks := map[string]func(string, int, <-chan struct{}, *atomic.Int64){
		"churn": attackChurn, "pings": attackPings, "big": attackBig,
	}
	kinds := cfg.Kinds
	if len(kinds) == 0 {
		kinds = []string{"churn", "pings", "big"}
	}
	for _, k := range kinds {
		if attacks[k] == nil {
			return res, fmt.Errorf("bench: unknown attack %q", k)
		}
	}
	for i := range cfg.Attackers {
		for _, k := range kinds {
			wg.Go(func() { attacks[k](srv.url, i, stop, &sessions) })
		}
	}
	lats, err := measure()
	close(stop)
	wg.Wait()
	if err != nil {
		return res, err
	}
	res.AttackP99, res.AttackP50 = percentile(lats, 0.99), percentile(lats, 0.5)
	res.Ratio = float64(res.AttackP99) / float64(max(res.UnloadedP99, 1))
	res.AttackerSessions, res.AttackerMessages = sessions.Load(), attackerMsgs.Load()
	res.Stats = srv.srv.Stats()
	return res, nil
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
