package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsreliable/wsreliable/queue"
	"github.com/wsreliable/wsreliable/reliable"
)

// OfflineConfig describes an offline-clients memory run.
type OfflineConfig struct {
	// Clients is the number of offline clients pushed to. Zero: 100,000.
	Clients int
	// Pushes is the number of messages queued for each. Zero: 10.
	Pushes int
	// Size is the payload size. Zero: 256.
	Size int
	// Chunk is the clients per SendMany call. Zero: 1,000.
	Chunk int
	// Idle is how long the server sits idle after queueing the pushes
	// before its memory is read again. Zero: OfflineIdle.
	Idle time.Duration
	// Launcher starts the server processes.
	Launcher Launcher
	// Dir holds the server's store. Empty: os.TempDir().
	Dir string
}

// MemSample is a process's memory, read after a GC and
// debug.FreeOSMemory.
type MemSample struct {
	// RSS is VmRSS; Anon and File are its anonymous and file-backed parts
	// (RssAnon, RssFile: bbolt's memory-mapped file counts in File).
	RSS  int64 `json:"rss"`
	Anon int64 `json:"anon"`
	File int64 `json:"file"`
	// Heap is the Go heap in use (runtime.MemStats.HeapInuse).
	Heap int64 `json:"heap"`
}

// OfflineResult is a server's memory without and with pushes queued for
// offline clients. The design promises that offline clients cost disk,
// not memory.
type OfflineResult struct {
	Config OfflineConfig // the configuration run, defaults filled in
	// Empty is a fresh server process on an empty store.
	Empty MemSample
	// Loaded is the same process after it queued the pushes.
	Loaded MemSample
	// Idle is the same process after it sat idle for Config.Idle: with
	// the default, its store has released the pages of its memory map.
	Idle MemSample
	// Reopened is a fresh server process on the store holding them.
	Reopened MemSample
	// Drained is the control: a second server process, on a store of
	// its own, that queued the same pushes and then had every outbox
	// acknowledged (as the clients' sessions would), read after it sat
	// idle for Config.Idle: the history of Idle with nothing held.
	// DrainedEmpty is that process on its empty store.
	DrainedEmpty, Drained MemSample
	// Drain is how long acknowledging every outbox took.
	Drain time.Duration
	// Fill is how long queueing the pushes took (fsync on, the default).
	Fill time.Duration
	// FileSize is the store file with the pushes queued.
	FileSize int64
	// Checked is the pushes found in the store afterwards, each in its
	// place with its payload: Clients × Pushes, or the run failed.
	Checked int
}

// OfflineIdle is how long the offline scenario's server sits idle by
// default after queueing the pushes before its memory is read again:
// longer than the 5 s after which an idle store releases its mapped
// pages.
const OfflineIdle = 8 * time.Second

// IdleRatio is Idle.RSS ÷ Empty.RSS, 0 if unknown.
func (r OfflineResult) IdleRatio() float64 { return memRatio(r.Idle, r.Empty) }

// LoadedRatio is Loaded.RSS ÷ Empty.RSS, 0 if unknown.
func (r OfflineResult) LoadedRatio() float64 { return memRatio(r.Loaded, r.Empty) }

// ReopenedRatio is Reopened.RSS ÷ Empty.RSS, 0 if unknown.
func (r OfflineResult) ReopenedRatio() float64 { return memRatio(r.Reopened, r.Empty) }

// DrainedRatio is Drained.RSS ÷ DrainedEmpty.RSS, 0 if unknown.
func (r OfflineResult) DrainedRatio() float64 { return memRatio(r.Drained, r.DrainedEmpty) }

// HeldRatio is Idle.RSS ÷ Drained.RSS: the server holding the pushes
// against the same history holding none. 0 if unknown.
func (r OfflineResult) HeldRatio() float64 { return memRatio(r.Idle, r.Drained) }

func memRatio(a, b MemSample) float64 {
	if b.RSS == 0 {
		return 0
	}
	return float64(a.RSS) / float64(b.RSS)
}

// Prefixes of the client IDs pushed to.
const (
	onlinePrefix  = "fan-"
	offlinePrefix = "off-"
)

// Offline measures what pushes for offline clients cost a server in
// memory. A server runs in a child process of its own; its memory is read
// on the empty store, then again after it queued cfg.Pushes messages for
// each of cfg.Clients clients that never connect (SendMany to cfg.Chunk
// clients at a time), and once more in a fresh server process opened on
// that store. It fails unless every outbox holds exactly its pushes, in
// order, with their payloads. Then, for control, a second server process
// on a new store queues the same pushes and acknowledges them all (the
// store's AckOutbox, as the clients' sessions would), and its memory is
// read after the same idle time: the same history, nothing held.
func Offline(ctx context.Context, cfg OfflineConfig) (res OfflineResult, err error) {
	if cfg.Clients == 0 {
		cfg.Clients = 100_000
	}
	if cfg.Pushes == 0 {
		cfg.Pushes = 10
	}
	if cfg.Size == 0 {
		cfg.Size = 256
	}
	if cfg.Chunk == 0 {
		cfg.Chunk = 1_000
	}
	if cfg.Idle == 0 {
		cfg.Idle = OfflineIdle
	}
	res.Config = cfg
	if cfg.Clients < 0 || cfg.Pushes < 0 || cfg.Size < 0 || cfg.Chunk < 0 || cfg.Idle < 0 {
		return res, fmt.Errorf("bench: negative field in %+v", cfg)
	}
	dir, err := os.MkdirTemp(cfg.Dir, "wsreliable-bench-offline-")
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "server.db")

	// fill reads the child's memory on its empty store, then has it
	// queue the pushes.
	fill := func(srv *child, empty *MemSample) (time.Duration, error) {
		var err error
		if *empty, err = childMem(srv); err != nil {
			return 0, err
		}
		st, err := srv.call(childReplyTimeout, "push", strconv.Itoa(cfg.Clients), strconv.Itoa(cfg.Pushes),
			strconv.Itoa(cfg.Chunk), strconv.Itoa(cfg.Size), offlinePrefix)
		if err != nil {
			return 0, err
		}
		if want := cfg.Clients * cfg.Pushes; st.Pushed != want {
			return 0, fmt.Errorf("bench: server queued %d pushes, want %d", st.Pushed, want)
		}
		return st.Took, nil
	}
	// idle is the scenario, not a wait for anything: a gateway whose
	// clients are offline sits idle.
	idle := func(srv *child) (MemSample, error) {
		select {
		case <-time.After(cfg.Idle):
		case <-ctx.Done():
			return MemSample{}, ctx.Err()
		}
		return childMem(srv)
	}
	err = withChildServer(ctx, cfg.Launcher, dir, func(srv *child) error {
		var err error
		if res.Fill, err = fill(srv, &res.Empty); err != nil {
			return err
		}
		if res.Loaded, err = childMem(srv); err != nil {
			return err
		}
		res.Idle, err = idle(srv)
		return err
	})
	if err != nil {
		return res, err
	}
	if res.FileSize, err = fileSize(path); err != nil {
		return res, err
	}
	err = withChildServer(ctx, cfg.Launcher, dir, func(srv *child) error {
		var err error
		res.Reopened, err = childMem(srv)
		return err
	})
	if err != nil {
		return res, err
	}
	res.Checked, err = checkOutboxes(path, clientNames(offlinePrefix, cfg.Clients), cfg.Pushes, cfg.Pushes, payload(cfg.Size))
	if err != nil {
		return res, err
	}
	if err := os.Remove(path); err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	err = withChildServer(ctx, cfg.Launcher, dir, func(srv *child) error {
		if _, err := fill(srv, &res.DrainedEmpty); err != nil {
			return err
		}
		st, err := srv.call(childReplyTimeout, "drain", strconv.Itoa(cfg.Clients), offlinePrefix)
		if err != nil {
			return err
		}
		if st.Acked != cfg.Clients {
			return fmt.Errorf("bench: server emptied %d outboxes, want %d", st.Acked, cfg.Clients)
		}
		res.Drain = st.Took
		res.Drained, err = idle(srv)
		return err
	})
	return res, err
}

// withChildServer runs fn with a wsreliable server in a child process on
// the store in dir, and stops the child after it.
func withChildServer(ctx context.Context, l Launcher, dir string, fn func(*child) error) (err error) {
	srv, err := l.start(ctx, "server", "-kind", "wsreliable", "-dir", dir)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, srv.stop()) }()
	if _, err := srv.reply(childReplyTimeout); err != nil {
		return err
	}
	return fn(srv)
}

// childMem reads a child server's memory after a GC.
func childMem(srv *child) (MemSample, error) {
	st, err := srv.call(time.Minute, "rss")
	if err != nil {
		return MemSample{}, err
	}
	if st.Mem == nil {
		return MemSample{}, errors.New("bench: child server sent no memory figures")
	}
	return *st.Mem, nil
}

// clientNames returns n client IDs: prefix000000, prefix000001, … (in
// byte order, so a chunk of them is one run of the store's keys).
func clientNames(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%06d", prefix, i)
	}
	return ids
}

// pushRounds queues rounds messages for every client in ids: each round
// is one SendMany per chunk of clients. It checks that round r got
// sequence r in every outbox and returns the pushes committed.
func pushRounds(ctx context.Context, srv *reliable.Server, ids []string, rounds, chunk int, p []byte) (int, error) {
	pushed := 0
	for r := 1; r <= rounds; r++ {
		for from := 0; from < len(ids); from += chunk {
			to := min(from+chunk, len(ids))
			rs, err := srv.SendMany(ctx, ids[from:to], reliable.OutgoingMessage{Payload: p})
			if err != nil {
				return pushed, fmt.Errorf("bench: push round %d to clients %d-%d: %w", r, from, to-1, err)
			}
			if err := checkSeqs(rs, uint64(r)); err != nil {
				return pushed, err
			}
			pushed += len(rs)
		}
	}
	return pushed, nil
}

// drainWorkers is how many AckOutbox calls ackOutboxes keeps waiting on
// the store's writer, so that they share commits.
const drainWorkers = 64

// ackOutboxes acknowledges everything queued for the clients in ids, as
// their sessions would once they came back (the store's AckOutbox, from
// drainWorkers goroutines), and checks that their outboxes are then
// empty. It returns how many outboxes it emptied.
func ackOutboxes(ctx context.Context, st queue.Outboxes, ids []string) (int, error) {
	var (
		next    atomic.Int64
		errs    = make([]error, drainWorkers)
		emptied atomic.Int64
		wg      sync.WaitGroup
	)
	for w := range drainWorkers {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(ids)); i = next.Add(1) - 1 {
				id := ids[i]
				if err := st.AckOutbox(ctx, id, math.MaxUint64, nil); err != nil {
					errs[w] = fmt.Errorf("bench: ack the outbox of %s: %w", id, err)
					return
				}
				info, err := st.OutboxInfo(id)
				if err != nil {
					errs[w] = fmt.Errorf("bench: outbox of %s: %w", id, err)
					return
				}
				if info.Messages != 0 {
					errs[w] = fmt.Errorf("bench: outbox of %s holds %d messages after its ack", id, info.Messages)
					return
				}
				emptied.Add(1)
			}
		})
	}
	wg.Wait()
	return int(emptied.Load()), errors.Join(errs...)
}

// checkSeqs checks that every receipt of a fan-out got sequence seq.
func checkSeqs(rs []*reliable.Receipt, seq uint64) error {
	for i, rc := range rs {
		if got := rc.Seq(); got != seq {
			return fmt.Errorf("bench: fan-out recipient %d got sequence %d, want %d", i, got, seq)
		}
	}
	return nil
}

// checkOutboxes opens the (closed) server store at path and checks the
// outbox of every client in ids: sequences 1..last were assigned, and it
// holds exactly the last held of them, in order, each with payload p. It
// returns the entries it checked.
func checkOutboxes(path string, ids []string, last, held int, p []byte) (checked int, err error) {
	st, err := queue.Open(path, &queue.Options{CompactSize: -1})
	if err != nil {
		return 0, fmt.Errorf("bench: check outboxes: %w", err)
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	for _, id := range ids {
		info, err := st.OutboxInfo(id)
		if err != nil {
			return checked, fmt.Errorf("bench: check outboxes: %w", err)
		}
		if info.LastSeq != uint64(last) || info.Messages != held {
			return checked, fmt.Errorf("bench: outbox of %s: last sequence %d holding %d, want %d holding %d", id, info.LastSeq, info.Messages, last, held)
		}
		if held == 0 {
			continue
		}
		from := uint64(last - held + 1)
		es, err := st.ReadOutbox(id, from, held+1, 0)
		if err != nil {
			return checked, fmt.Errorf("bench: check outboxes: %w", err)
		}
		if len(es) != held {
			return checked, fmt.Errorf("bench: outbox of %s: read %d entries, want %d", id, len(es), held)
		}
		for i, e := range es {
			if e.Seq != from+uint64(i) || !bytes.Equal(e.Payload, p) {
				return checked, fmt.Errorf("bench: outbox of %s: entry %d has sequence %d and a %d-byte payload, want sequence %d and the %d bytes pushed",
					id, i, e.Seq, len(e.Payload), from+uint64(i), len(p))
			}
			checked++
		}
	}
	return checked, nil
}
