package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/queue"
)

// Options configure a [Store]. A nil *Options, and the zero value of
// every field, is the documented default.
type Options struct {
	// Queue carries the store limits and policies shared with the queue
	// package. Of its fields, OutboxMaxMessages, OutboxMaxBytes,
	// OutboxEvict, StatusRetention, IdleExpiry, MaxBatch, MaxBatchBytes
	// (the pushed bytes a group commit takes) and Logger apply, with the
	// defaults documented there; the others are ignored (durability is
	// the database's synchronous_commit). Idle peers are expired by the
	// writer's commits, at most 1,024 a commit, and only peers with a
	// last-used time (every SetWatermark, Bind and Touch records one) are
	// considered.
	Queue queue.Options
	// NodeID names this store in the wsr_owners rows it claims. Zero: a
	// random UUID per Open, which is what fencing needs: two stores must
	// never share a node ID.
	NodeID string
	// CommitTimeout bounds each group-commit transaction, from begin to
	// commit, and each read of the methods that take no context
	// (Watermark, Binding, OutboxInfo, ReadOutbox, Clients, Status,
	// Unreported). Zero: 30 s.
	CommitTimeout time.Duration
	// Now is the clock of settlement records, last-used times and
	// retention, for tests. Nil: time.Now.
	Now func() time.Time
	// MaxConns is the connection pool's size. Zero: the pool_max_conns
	// of the DSN, else pgxpool's default (the larger of 4 and the
	// number of CPUs).
	MaxConns int32
	// StalledTxTimeout is how long the database lets a transaction of
	// this store sit idle, waiting on the store's process, before it
	// ends the session and releases its locks (PostgreSQL's
	// idle_in_transaction_session_timeout). A node paused or cut off
	// mid-transaction holds a share lock on the owner rows it writes
	// for; without this, another node's takeover of those clients
	// would wait for it for ever. Zero: 5 s, unless the DSN sets
	// idle_in_transaction_session_timeout. Negative: never.
	StalledTxTimeout time.Duration
}

const (
	defaultCommitTimeout    = 30 * time.Second
	defaultStalledTxTimeout = 5 * time.Second
)

// Store is a [queue.ServerStore] on PostgreSQL that several processes may
// share; it also implements [queue.Owner] and [queue.Notifier]. It keeps
// no per-client state in memory except its claims. It is safe for
// concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	node   string
	opts   Options // defaulted
	log    *slog.Logger
	limits limits

	ops chan *op
	// done holds when the writer next prunes settlement records and
	// expires idle peers; due, what a transaction under way sets them
	// to. Writer only.
	done, due schedule
	closing   chan struct{}
	closeMu   sync.Mutex
	closed    bool
	wg        sync.WaitGroup

	mu     sync.Mutex
	claims map[string]int64 // peer → epoch this store claimed it at

	notify notifier

	statsMu sync.Mutex
	stats   queue.Stats
	statsAt time.Time // when stats was read; zero: never
	// pushedSince is what this store pushed since stats was read
	// (DataBytes' measure): Stats adds it, so that this node's pushes
	// count at once.
	pushedSince atomic.Int64
}

// Open connects to the database named by dsn (a PostgreSQL URL or
// key=value string; several hosts with target_session_attrs=read-write
// make the pool follow a failover), creates or migrates the wsr_ schema,
// and starts the store's writer. opts may be nil. Bad options are an
// error naming the field. Open fails with an error wrapping
// queue.ErrVersion when the schema was written by a newer release.
func Open(ctx context.Context, dsn string, opts *Options) (*Store, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	const stalledParam = "idle_in_transaction_session_timeout"
	if _, set := cfg.ConnConfig.RuntimeParams[stalledParam]; !set && o.StalledTxTimeout >= 0 {
		d := o.StalledTxTimeout
		if d == 0 {
			d = defaultStalledTxTimeout
		}
		cfg.ConnConfig.RuntimeParams[stalledParam] = strconv.FormatInt(max(d.Milliseconds(), 1), 10)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: open: schema: %w", mapErr(err))
	}
	s := &Store{
		pool:    pool,
		node:    o.NodeID,
		opts:    o,
		log:     o.Queue.Logger,
		limits:  limits{maxMessages: o.Queue.OutboxMaxMessages, maxBytes: o.Queue.OutboxMaxBytes, evict: o.Queue.OutboxEvict},
		ops:     make(chan *op),
		closing: make(chan struct{}),
		claims:  make(map[string]int64),
	}
	s.notify.connConfig = cfg.ConnConfig.Copy()
	s.wg.Go(s.writer)
	s.log.Info("postgres store open", "node", s.node)
	return s, nil
}

// schedule is when the writer's periodic work is next due, in Unix ms.
type schedule struct {
	pruneAt int64 // prune reported settlement records
	sweepAt int64 // expire idle peers
}

// withDefaults returns a copy of o (nil: all defaults) with zero fields
// filled in, or an error naming a bad field.
func (o *Options) withDefaults() (Options, error) {
	var c Options
	if o != nil {
		c = *o
	}
	q := &c.Queue
	switch {
	case q.MaxBatch < 0:
		return c, fmt.Errorf("postgres: Options.Queue.MaxBatch is negative (%d)", q.MaxBatch)
	case q.MaxBatchBytes < 0:
		return c, fmt.Errorf("postgres: Options.Queue.MaxBatchBytes is negative (%d)", q.MaxBatchBytes)
	case c.CommitTimeout < 0:
		return c, fmt.Errorf("postgres: Options.CommitTimeout is negative (%s)", c.CommitTimeout)
	case c.MaxConns < 0:
		return c, fmt.Errorf("postgres: Options.MaxConns is negative (%d)", c.MaxConns)
	}
	if q.OutboxMaxMessages == 0 {
		q.OutboxMaxMessages = 10_000
	}
	if q.OutboxMaxBytes == 0 {
		q.OutboxMaxBytes = 64 << 20
	}
	if q.StatusRetention == 0 {
		q.StatusRetention = 24 * time.Hour
	}
	if q.IdleExpiry == 0 {
		q.IdleExpiry = 30 * 24 * time.Hour
	}
	if q.MaxBatch == 0 {
		q.MaxBatch = 1024
	}
	if q.MaxBatchBytes == 0 {
		q.MaxBatchBytes = 4 << 20
	}
	if q.Logger == nil {
		q.Logger = slog.New(slog.DiscardHandler)
	}
	if c.NodeID == "" {
		c.NodeID = uuid.NewString()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = defaultCommitTimeout
	}
	return c, nil
}

// readCtx bounds a read of the queue interfaces, which take no context,
// by CommitTimeout: a database that stopped answering fails the read
// instead of hanging its caller.
func (s *Store) readCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.opts.CommitTimeout)
}

// NodeID returns the name this store claims peers under.
func (s *Store) NodeID() string { return s.node }

// Close waits for the writes the writer has taken, stops the writer and
// the Notify listener, and closes the connection pool. Calls after Close
// return queue.ErrClosed; the first Close returns nil, later ones
// queue.ErrClosed.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return queue.ErrClosed
	}
	s.closed = true
	close(s.closing)
	s.closeMu.Unlock()
	s.notify.stop()
	s.wg.Wait()
	s.pool.Close()
	s.log.Info("postgres store closed", "node", s.node)
	return nil
}

func (s *Store) isClosed() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// mapErr gives database errors the queue package's meaning where one
// applies: a full disk wraps queue.ErrDiskFull.
func mapErr(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "53100" { // disk_full
		return fmt.Errorf("%w: %w", queue.ErrDiskFull, err)
	}
	return err
}

// retries is how often a transaction the server aborted for a deadlock or
// a serialization failure is run again (it changed nothing).
const retries = 3

// inTx runs fn in a transaction, again (up to retries times) when the
// server aborted it for a deadlock, a serialization failure or a unique
// violation (it changed nothing).
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, fn)
		var pe *pgconn.PgError
		// 23505: a row another transaction created meanwhile (a new
		// outbox); the next run finds it.
		again := errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001" || pe.Code == "23505")
		if err == nil || attempt > retries || !again {
			return err
		}
		s.log.Debug("transaction aborted by the server; retrying", "error", err, "attempt", attempt)
	}
}

// wrap prefixes err with the operation, once.
func wrap(op string, err error) error {
	if err == nil || errors.Is(err, queue.ErrClosed) {
		return err
	}
	return fmt.Errorf("postgres: %s: %w", op, mapErr(err))
}

// entrySize is what an entry counts against the limits: payload plus
// header keys and values, as in the queue package.
func entrySize(e *queue.Entry) int64 {
	n := int64(len(e.Payload))
	for _, h := range e.Headers {
		n += int64(len(h.Key) + len(h.Value))
	}
	return n
}

// encodeHeaders stores headers as a sequence of uvarint-length-prefixed
// keys and values; nil for none.
func encodeHeaders(hs []protocol.Header) []byte {
	if len(hs) == 0 {
		return nil
	}
	var b []byte
	for _, h := range hs {
		b = binary.AppendUvarint(b, uint64(len(h.Key)))
		b = append(b, h.Key...)
		b = binary.AppendUvarint(b, uint64(len(h.Value)))
		b = append(b, h.Value...)
	}
	return b
}

// decodeHeaders is the inverse of encodeHeaders; damaged input is an
// error wrapping queue.ErrCorrupt.
func decodeHeaders(b []byte) ([]protocol.Header, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var hs []protocol.Header
	next := func() (string, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return "", false
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s, true
	}
	for len(b) > 0 {
		key, ok1 := next()
		value, ok2 := next()
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: stored headers", queue.ErrCorrupt)
		}
		hs = append(hs, protocol.Header{Key: key, Value: value})
	}
	return hs, nil
}

// truncateReason cuts reason to protocol.MaxReasonLen bytes on a rune
// boundary.
func truncateReason(reason string) string {
	if len(reason) <= protocol.MaxReasonLen {
		return reason
	}
	n := protocol.MaxReasonLen
	for n > 0 && !utf8.RuneStart(reason[n]) {
		n--
	}
	return reason[:n]
}

// seqArg converts a sequence for a bigint column.
func seqArg(seq uint64) (int64, error) {
	if seq > 1<<63-1 {
		return 0, fmt.Errorf("postgres: sequence %d does not fit a bigint", seq)
	}
	return int64(seq), nil
}

// errEmptyPeer rejects an empty peer name.
var errEmptyPeer = errors.New("postgres: empty peer name")

// checkClient rejects client IDs that cannot key an outbox.
func checkClient(client string) error {
	switch {
	case client == "":
		return errors.New("postgres: empty client ID")
	case len(client) > protocol.MaxClientIDLen:
		return fmt.Errorf("postgres: client ID of %d bytes, longer than %d", len(client), protocol.MaxClientIDLen)
	}
	return nil
}

// nowMilli is the time of settlement records and last-used times.
func (s *Store) nowMilli() int64 { return s.opts.Now().UnixMilli() }

var (
	_ queue.ServerStore = (*Store)(nil)
	_ queue.Owner       = (*Store)(nil)
	_ queue.Notifier    = (*Store)(nil)
)
