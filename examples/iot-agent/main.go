// Command iot-agent is a device agent built on wsreliable: it sends a
// telemetry reading every -interval, whether or not the server is
// reachable, and applies the commands the server pushes to it, in order,
// once each.
//
//	iot-agent -url ws://localhost:8080/ws -data ./agent -id thermostat-7
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// reading is one telemetry message.
type reading struct {
	Time     time.Time `json:"time"`
	TempC    float64   `json:"temp_c"`
	Setpoint float64   `json:"setpoint_c"`
}

// run runs the agent until ctx ends and returns the exit code.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("iot-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "ws://localhost:8080/ws", "server `URL`")
	data := fs.String("data", "agent-data", "`DIR` for the queue and the applied settings")
	id := fs.String("id", "", "client `ID` (empty: generated once and kept in -data)")
	interval := fs.Duration("interval", 10*time.Second, "time between readings")
	maxReadings := fs.Int("max-readings", 100_000, "disk budget: readings kept while offline")
	maxBytes := fs.Int64("max-bytes", 16<<20, "disk budget: their bytes")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := os.MkdirAll(*data, 0o700); err != nil {
		log.Error("creating -data", "error", err)
		return 1
	}
	th, err := loadThermostat(filepath.Join(*data, "setpoint"), log)
	if err != nil {
		log.Error("loading settings", "error", err)
		return 1
	}

	c, err := reliable.NewClient(*url, filepath.Join(*data, "agent.db"), &reliable.ClientOptions{
		ClientID: *id,
		// Commands pushed by the server: called one at a time, in order.
		Handler: th.apply,
		// The disk budget. When it is reached, Send drops the oldest
		// reading instead of blocking: an agent that has been offline for
		// a week would rather lose last week's readings than stop measuring.
		MaxQueued:      *maxReadings,
		MaxQueuedBytes: *maxBytes,
		DropOldest:     true,
		// Every reading settles once: acked, or evicted by the budget.
		OnSettled: func(s reliable.Settlement) {
			if s.Status == reliable.StatusEvicted {
				log.Warn("reading evicted: disk budget reached", "seq", s.Seq)
			}
		},
		Logger: log,
	})
	if err != nil {
		log.Error("opening the client", "error", err)
		return 1
	}
	// Close leaves unacknowledged readings on disk: the next run sends
	// them first.
	defer c.Close()
	log.Info("agent started", "id", c.ID(), "url", *url)

	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			return 0
		case now := <-tick.C:
			r := reading{Time: now.UTC(), TempC: 20 + 3*rand.Float64(), Setpoint: th.setpoint()}
			payload, _ := json.Marshal(r)
			// Send returns once the reading is on disk, connected or not;
			// the receipt (ignored here) settles when the server has it.
			if _, err := c.Send(ctx, payload); err != nil {
				if errors.Is(err, reliable.ErrStopped) {
					log.Error("the server refused this agent", "error", err)
					return 1
				}
				if ctx.Err() == nil {
					log.Warn("reading not queued", "error", err) // e.g. ErrDiskFull
				}
			}
		}
	}
}

// thermostat holds the one setting commands change. The handler writes it,
// the telemetry loop reads it.
type thermostat struct {
	path string // where the setpoint is kept across restarts
	log  *slog.Logger
	mu   sync.Mutex
	sp   float64
}

func loadThermostat(path string, log *slog.Logger) (*thermostat, error) {
	th := &thermostat{path: path, log: log, sp: 20}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return th, nil
	}
	if err != nil {
		return nil, err
	}
	th.sp, err = strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	return th, err
}

func (th *thermostat) setpoint() float64 {
	th.mu.Lock()
	defer th.mu.Unlock()
	return th.sp
}

// apply is the reliable.Handler for commands such as "setpoint=21.5".
// Returning nil acknowledges the command, and an acknowledged command is
// never delivered again, not even after a restart: so apply makes the new
// setting durable before it returns.
func (th *thermostat) apply(ctx context.Context, m *reliable.Message) error {
	key, val, _ := strings.Cut(string(m.Payload), "=")
	sp, err := strconv.ParseFloat(val, 64)
	if key != "setpoint" || err != nil {
		// Wrapping ErrRejected settles the command as rejected for good;
		// any other error would have it retried.
		return fmt.Errorf("%w: unknown command %q", reliable.ErrRejected, m.Payload)
	}
	if err := writeFileSync(th.path, []byte(val)); err != nil {
		return err // retried later: the disk may recover
	}
	th.mu.Lock()
	th.sp = sp
	th.mu.Unlock()
	th.log.Info("command applied", "setpoint_c", sp, "id", m.ID)
	return nil
}

// writeFileSync replaces path with data atomically and durably.
func writeFileSync(path string, data []byte) error {
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}
