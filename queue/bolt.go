package queue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/wsreliable/wsreliable/protocol"
)

// formatVersion is the version of the file layout, stored in the meta
// bucket. Open refuses files with a greater version (ErrVersion).
// Version 2 adds the push outboxes and the settlement records, version
// 3 the acknowledged ranges; a file is written as version 1 until the
// first of them is created, and as version 2 until the first range (see
// bumpVersion), so a file stays readable by the programs that know the
// version of what it holds.
//
// Version 4 promises that every peer the file names (by a binding, a
// watermark or a push outbox) has a last-used time, so that Open need
// not walk them all to give the missing ones a time (see [usage.fill]).
// A file becomes version 4 in the commit after which the walk has seen
// every peer and at least one time is recorded; from then on only
// programs that record a time for every peer they add may write it.
const (
	formatVersion  uint64 = 4
	formatVersion4 uint64 = 4
	formatVersion3 uint64 = 3
	formatVersion2 uint64 = 2
	formatVersion1 uint64 = 1
)

// Bucket names and meta keys. They are part of the file format.
var (
	bucketMeta       = []byte("meta")
	bucketOutbox     = []byte("outbox")
	bucketWatermarks = []byte("watermarks")
	bucketBindings   = []byte("bindings")

	keyVersion  = []byte("version")      // uint64, formatVersion
	keyClientID = []byte("client_id")    // UUID string
	keyStream   = []byte("stream_id")    // 16 bytes
	keyLastSeq  = []byte("last_seq")     // uint64, highest sequence assigned
	keyAcked    = []byte("acked_seq")    // uint64, highest sequence acked
	keyBytes    = []byte("queued_bytes") // uint64, entrySize sum of the outbox
)

// Bolt is a [Store] and the server's [Outboxes], kept in one bbolt file. Create one with [Open]. It is
// safe for concurrent use. Writes go through one writer goroutine owned by
// the store, which group commits them; reads run in parallel with it in
// bbolt read transactions.
type Bolt struct {
	path string
	opts Options
	log  *slog.Logger
	meta Meta

	// dbMu guards db: readers hold it shared; compaction swaps the file
	// under the exclusive lock and Close sets db to nil. The writer
	// goroutine, the only one that swaps db while running, reads it
	// without the lock.
	dbMu sync.RWMutex
	db   *bolt.DB
	// file is the file db holds open and locked (writer goroutine only,
	// like swapping db): a reopen shares its lock (see reopenDB).
	file *os.File

	limit     *limiter
	outLimits outboxLimits
	reqs      chan *request // unbuffered: see run
	closing   chan struct{} // closed by Close
	done      chan struct{} // closed when the writer goroutine has exited

	closeOnce sync.Once
	closeErr  error

	// stMu guards the committed outbox state, written by the writer after
	// each commit and read by Stats, and the acks not yet committed.
	stMu  sync.Mutex
	state state
	// ackTo is the highest sequence acked (>= state.acked); the entries
	// state.acked+1..ackTo, of ackBytes in all, are deleted by the
	// writer's next commit. Until then they count as gone everywhere but
	// in the file.
	ackTo    uint64
	ackBytes int64
	// ackOutcomes are the outcomes given with acks whose entries are not
	// yet deleted (only with TrackSettled), by sequence.
	ackOutcomes map[uint64]Outcome
	ackMu       sync.Mutex    // serialises Ack
	wake        chan struct{} // capacity 1: an ack is waiting to be committed
	ackDelay    atomic.Int64  // time.Duration: see defaultAckDelay

	retention time.Duration // StatusRetention, defaulted

	// Writer goroutine only.
	compactedSize int64     // file size after the last compaction
	compactedAt   time.Time // when the last compaction ended; zero: none since Open
	compactWanted time.Time // since when a compaction waits for a quiet moment; zero: none
	diskFull      bool      // the last commit failed for lack of space
	// pruneAt is when (Unix ms) reported records may next be due for
	// pruning; 0: none known.
	pruneAt int64
	// expireAt is when (Unix ms) idle peers may next be due for expiry
	// (or peers without a last-used time are left to fill in); 0: none
	// known. fill is how far filling in has come.
	expireAt int64
	fill     fillPos
	// timed is set once the file is version 4: every peer it names has
	// a last-used time, and Open skips the walk that fills them in.
	timed bool

	// testNow, when set by a test, replaces time.Now for the times of
	// settlement records, last-used times, pruning and expiry.
	testNow atomic.Pointer[func() time.Time]

	commits atomic.Int64 // successful write transactions, for tests
	// releaseIdle is how long the writer waits without a commit before
	// releasing the mapped pages (time.Duration; see releasePages),
	// releaseAfter the bytes of pages its commits write before it
	// releases them under load, and releases counts the releases, for
	// tests.
	releaseIdle  atomic.Int64
	releaseAfter atomic.Int64
	releases     atomic.Int64
	// reopenAfter is the bytes of pages the commits on one bbolt handle
	// write before the writer, once idle, opens the file again (see
	// reopen); reopens counts them, for tests.
	reopenAfter atomic.Int64
	reopens     atomic.Int64
	// compactIdle is how long the writer waits without a commit before
	// it runs a compaction it held back (time.Duration; see
	// maybeCompact).
	compactIdle atomic.Int64

	// testFailCommit, when set by a test, is called at the end of each
	// write transaction; an error aborts it, as a failing fsync would.
	testFailCommit atomic.Pointer[func() error]
	// testAfterCommit, when set by a test, is called after each write
	// transaction committed and before the writer records its state: a
	// reader already sees what it wrote.
	testAfterCommit atomic.Pointer[func()]
}

// state is the outbox state kept in the meta bucket.
type state struct {
	version uint64 // the file's format version when opened
	last    uint64 // highest sequence assigned
	acked   uint64 // highest sequence acknowledged; entries acked+1..last are queued
	bytes   int64  // entrySize sum of the queued entries
}

func (s state) messages() int { return int(s.last - s.acked) }

// Open opens the store file at path, creating it (and a new client ID and
// stream ID) if it does not exist. The parent directory must exist. opts
// may be nil for defaults.
//
// Open waits up to opts.LockTimeout for the file lock; a file held by
// another process, or by another open Bolt in this process, yields an
// error wrapping [ErrLocked]. A file that is damaged or not a wsreliable
// store yields [ErrCorrupt]; one written by a newer format version yields
// [ErrVersion]. Open never panics on a bad file.
func Open(path string, opts *Options) (*Bolt, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if path == "" {
		return nil, errors.New("queue: open: empty path")
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("queue: open %s: parent directory: %w", path, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("queue: open %s: parent %s is not a directory", path, dir)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("queue: open %s: is a directory", path)
	}

	if err := preflight(path, &o); err != nil {
		return nil, err
	}
	db, file, err := openBolt(path, &o, false, nil)
	if err != nil {
		return nil, err
	}
	meta, st, err := loadOrCreate(db, path)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	removeStaleTemps(path, o.Logger)

	b := &Bolt{
		path:    path,
		opts:    o,
		log:     o.Logger,
		meta:    meta,
		db:      db,
		file:    file,
		reqs:    make(chan *request),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		state:   st,
		ackTo:   st.acked,
		wake:    make(chan struct{}, 1),

		retention: o.StatusRetention,
		timed:     st.version >= formatVersion4,
	}
	if b.retention > 0 {
		// Reported records may have come due while the file was closed.
		b.pruneAt = time.Now().UnixMilli()
	}
	if o.IdleExpiry > 0 {
		// Peers may have become idle while the file was closed, and
		// the state of older files needs its last-used times.
		b.expireAt = time.Now().UnixMilli()
	}
	// Only the walk of a file whose peers may lack a time is needed:
	// it reads every peer once, pages a server's whole set of clients
	// in, and without expiry there is nothing to give the times to.
	b.fill.done = b.timed || o.IdleExpiry <= 0
	b.limit = newLimiter(&o, b.closing, st.messages(), st.bytes)
	b.outLimits = o.outboxLimits()
	b.ackDelay.Store(int64(defaultAckDelay))
	b.releaseIdle.Store(int64(defaultReleaseIdle))
	b.compactIdle.Store(int64(defaultCompactIdle))
	b.releaseAfter.Store(defaultReleaseAfter)
	b.reopenAfter.Store(defaultReopenAfter)
	go b.run()
	b.log.Info("queue: opened", "path", path, "client_id", meta.ClientID,
		"messages", st.messages(), "last_seq", st.last)
	// The stream ID lets a peer resume the stream: debug level only.
	b.log.Debug("queue: stream", "path", path, "stream", meta.Stream.String())
	return b, nil
}

// preflight checks an existing file read-only before Open takes it for
// writing. Opening for writing loads bbolt's freelist, and bbolt panics
// on a bad one (a truncated file) with the file locked and mapped; the
// lock then stays held, so detect truncation here, where a panic is
// recovered inside a transaction and the file closes cleanly. It also
// keeps Open from writing to a foreign or newer file: bbolt commits once
// when opening a file for writing.
func preflight(path string, o *Options) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() == 0 {
		return nil // new file: bbolt.Open creates it
	}
	db, err := openDB(path, o, true)
	if err != nil {
		return err
	}
	defer db.Close()
	err = func() (err error) {
		defer recoverCorrupt(path, &err)
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		return db.View(func(tx *bolt.Tx) error {
			_, _, _, err := readState(tx)
			return err
		})
	}()
	if err != nil {
		return fmt.Errorf("%w (file %s)", err, path)
	}
	return nil
}

// openDB opens the bbolt file with our settings and maps its errors.
func openDB(path string, o *Options, readOnly bool) (*bolt.DB, error) {
	db, _, err := openBolt(path, o, readOnly, nil)
	return db, err
}

// openBolt is openDB returning also the file bbolt holds open (and
// locked, unless readOnly). With given set, bbolt takes that file instead
// of opening path (see reopenDB).
func openBolt(path string, o *Options, readOnly bool, given *os.File) (db *bolt.DB, file *os.File, err error) {
	// bbolt panics on some damaged files (a bad freelist page) while it
	// opens them, with the file open and locked. Keep the file so a
	// recovered panic can at least close it and release the lock; the
	// mapping bbolt made is lost until the process exits.
	defer func() {
		if r := recover(); r != nil {
			if file != nil {
				_ = file.Close()
			}
			db, file, err = nil, nil, fmt.Errorf("%w: %s: bbolt: %v", ErrCorrupt, path, r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			if given != nil {
				file = given
				return given, nil
			}
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		},
		Timeout:  o.LockTimeout,
		NoSync:   o.NoSync,
		ReadOnly: readOnly,
		// The hashmap freelist allocates in O(1) where the array one scans;
		// it is an in-memory representation only, the file is the same.
		// NoFreelistSync stays off: it would save one page write per
		// commit but make every Open, and every rollback after a failed
		// commit (a full disk), rebuild the freelist by walking the whole
		// file, and bbolt panics if that walk meets a bad page.
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		return nil, nil, openError(path, o.LockTimeout.String(), err)
	}
	return db, file, nil
}

func openError(path, timeout string, err error) error {
	var errno syscall.Errno
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("%w: %s (lock not acquired within %s)", ErrLocked, path, timeout)
	case errors.Is(err, berrors.ErrInvalid),
		errors.Is(err, berrors.ErrChecksum),
		errors.Is(err, berrors.ErrVersionMismatch):
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	case isNoSpace(err):
		return &diskFullError{path: path, err: err}
	case errors.As(err, &errno), errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("queue: open %s: %w", path, err)
	}
	// What is left are bbolt's own complaints about the file's shape,
	// such as "file size too small".
	return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
}

// loadOrCreate reads the store's identity and state, creating them (and
// the buckets) in an empty file.
func loadOrCreate(db *bolt.DB, path string) (meta Meta, st state, err error) {
	defer recoverCorrupt(path, &err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	found := false
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		meta, st, found, err = readState(tx)
		return err
	})
	if err == nil && !found {
		err = db.Update(func(tx *bolt.Tx) error {
			var err error
			meta, err = create(tx)
			return err
		})
	}
	if err != nil {
		if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrVersion) {
			return meta, st, fmt.Errorf("%w (file %s)", err, path)
		}
		if isNoSpace(err) {
			return meta, st, &diskFullError{path: path, err: err}
		}
		return meta, st, fmt.Errorf("queue: open %s: %w", path, err)
	}
	return meta, st, nil
}

// readState reads the meta bucket. found is false for a file without any
// bucket (a new file); a file with other buckets but not ours is corrupt.
func readState(tx *bolt.Tx) (meta Meta, st state, found bool, err error) {
	mb := tx.Bucket(bucketMeta)
	if mb == nil {
		var names []string
		_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			names = append(names, fmt.Sprintf("%q", name))
			return nil
		})
		if len(names) > 0 {
			return meta, st, false, fmt.Errorf("%w: no %q bucket, found %s", ErrCorrupt, bucketMeta, strings.Join(names, ", "))
		}
		return meta, st, false, nil
	}
	version, err := getU64(mb, keyVersion)
	if err != nil {
		return meta, st, true, err
	}
	if version > formatVersion {
		return meta, st, true, fmt.Errorf("%w: format version %d, this program reads up to %d", ErrVersion, version, formatVersion)
	}
	if version == 0 {
		return meta, st, true, fmt.Errorf("%w: format version 0", ErrCorrupt)
	}
	st.version = version
	for _, name := range [][]byte{bucketOutbox, bucketWatermarks, bucketBindings} {
		if tx.Bucket(name) == nil {
			return meta, st, true, fmt.Errorf("%w: missing bucket %q", ErrCorrupt, name)
		}
	}
	id := mb.Get(keyClientID)
	if len(id) == 0 {
		return meta, st, true, fmt.Errorf("%w: missing client ID", ErrCorrupt)
	}
	meta.ClientID = string(id)
	stream := mb.Get(keyStream)
	if len(stream) != len(meta.Stream) {
		return meta, st, true, fmt.Errorf("%w: stream ID of %d bytes", ErrCorrupt, len(stream))
	}
	copy(meta.Stream[:], stream)
	if st.last, err = getU64(mb, keyLastSeq); err != nil {
		return meta, st, true, err
	}
	if st.acked, err = getU64(mb, keyAcked); err != nil {
		return meta, st, true, err
	}
	bytes, err := getU64(mb, keyBytes)
	if err != nil {
		return meta, st, true, err
	}
	st.bytes = int64(bytes)
	if st.acked > st.last || st.bytes < 0 {
		return meta, st, true, fmt.Errorf("%w: acked %d, last %d, bytes %d", ErrCorrupt, st.acked, st.last, st.bytes)
	}
	// bbolt grows the file before writing pages beyond its end, so a file
	// shorter than the high-water mark was truncated.
	if fi, err := os.Stat(tx.DB().Path()); err == nil && fi.Size() < tx.Size() {
		return meta, st, true, fmt.Errorf("%w: file is %d bytes, its pages need %d (truncated)", ErrCorrupt, fi.Size(), tx.Size())
	}
	// The outbox must hold exactly acked+1..last; checking both ends is
	// cheap, Check walks the rest.
	c := tx.Bucket(bucketOutbox).Cursor()
	if k, _ := c.First(); k != nil && (len(k) != 8 || binary.BigEndian.Uint64(k) <= st.acked) {
		return meta, st, true, fmt.Errorf("%w: outbox starts at key %x, acked %d", ErrCorrupt, k, st.acked)
	}
	if k, _ := c.Last(); k != nil && (len(k) != 8 || binary.BigEndian.Uint64(k) > st.last) {
		return meta, st, true, fmt.Errorf("%w: outbox ends at key %x, last %d", ErrCorrupt, k, st.last)
	}
	return meta, st, true, nil
}

func getU64(b *bolt.Bucket, key []byte) (uint64, error) {
	v := b.Get(key)
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: meta %q has %d bytes, want 8", ErrCorrupt, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// create makes the buckets and a new identity in an empty file.
func create(tx *bolt.Tx) (Meta, error) {
	var meta Meta
	id, err := uuid.NewRandom()
	if err != nil {
		return meta, err
	}
	stream, err := uuid.NewRandom()
	if err != nil {
		return meta, err
	}
	meta.ClientID = id.String()
	meta.Stream = protocol.StreamID(stream)
	mb, err := tx.CreateBucket(bucketMeta)
	if err != nil {
		return meta, err
	}
	for _, name := range [][]byte{bucketOutbox, bucketWatermarks, bucketBindings} {
		if _, err := tx.CreateBucket(name); err != nil {
			return meta, err
		}
	}
	for _, kv := range []struct{ k, v []byte }{
		{keyVersion, u64(formatVersion1)},
		{keyClientID, []byte(meta.ClientID)},
		{keyStream, meta.Stream[:]},
		{keyLastSeq, u64(0)},
		{keyAcked, u64(0)},
		{keyBytes, u64(0)},
	} {
		if err := mb.Put(kv.k, kv.v); err != nil {
			return meta, err
		}
	}
	return meta, nil
}

// tempPrefix starts the names of compaction temp files next to path.
func tempPrefix(path string) string { return filepath.Base(path) + ".compact-" }

// removeStaleTemps deletes compaction temp files left by a crash. The
// caller holds the file lock, so no compaction of path is running.
func removeStaleTemps(path string, log *slog.Logger) {
	dir := filepath.Dir(path)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tempPrefix(path)) {
			p := filepath.Join(dir, e.Name())
			if err := os.Remove(p); err == nil {
				log.Info("queue: removed stale compaction file", "path", p)
			}
		}
	}
}

// recoverCorrupt turns a panic inside bbolt (which it raises on some
// damaged pages) into an error wrapping ErrCorrupt. Use it directly in a
// defer statement.
func recoverCorrupt(path string, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %s: bbolt: %v", ErrCorrupt, path, r)
	}
}

// view runs fn in a read transaction on the current file.
func (b *Bolt) view(fn func(*bolt.Tx) error) (err error) {
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.db == nil {
		return ErrClosed
	}
	defer recoverCorrupt(b.path, &err)
	// A torn file can leave pages beyond its end inside the mmap; with
	// this, touching them panics (and is recovered) instead of crashing.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return b.db.View(fn)
}

// nowMilli is the time, in Unix ms, of settlement records and pruning.
func (b *Bolt) nowMilli() int64 {
	if now := b.testNow.Load(); now != nil {
		return (*now)().UnixMilli()
	}
	return time.Now().UnixMilli()
}

// bumpVersion records format version to in tx's meta bucket (unless it
// is there already), for the first write of a bucket that the versions
// before to do not know.
func bumpVersion(tx *bolt.Tx, to uint64) error {
	mb := tx.Bucket(bucketMeta)
	if mb == nil {
		return fmt.Errorf("%w: missing bucket %q", ErrCorrupt, bucketMeta)
	}
	if v, err := getU64(mb, keyVersion); err != nil || v >= to {
		return err
	}
	return mb.Put(keyVersion, u64(to))
}

// Meta returns the store's client ID and stream ID. It never fails, even
// after Close.
func (b *Bolt) Meta() Meta { return b.meta }

// Path returns the file the store was opened with.
func (b *Bolt) Path() string { return b.path }

// Append assigns the next sequence to e, commits it in the writer's next
// batch and returns the sequence. It blocks until the batch is committed
// (and synced unless NoSync). See [Outbox.Append] for the full-queue
// behaviour. The store copies e; the caller may reuse its buffers.
//
// Errors: ErrClosed; ErrTooLarge; ErrFull (with ctx's error when waiting
// ended); ctx's error while waiting for the writer; ErrDiskFull. Once the
// writer has taken the entry the call completes regardless of ctx.
func (b *Bolt) Append(ctx context.Context, e Entry) (uint64, error) {
	return b.AppendBatch(ctx, []Entry{e})
}

// AppendBatch appends entries in one transaction, with consecutive
// sequences in slice order, and returns the first sequence. Errors are
// those of Append; on error nothing was appended.
func (b *Bolt) AppendBatch(ctx context.Context, entries []Entry) (uint64, error) {
	if b.isClosed() {
		return 0, ErrClosed
	}
	if len(entries) == 0 {
		return 0, errEmptyBatch
	}
	var size int64
	var encoded int
	for i := range entries {
		e := &entries[i]
		size += entrySize(e)
		n := encodedLen(e, 0)
		if n > bolt.MaxValueSize {
			return 0, fmt.Errorf("%w: encoded entry of %d bytes exceeds bbolt's value limit", ErrTooLarge, n)
		}
		encoded += n
	}
	if err := b.limit.reserve(ctx, len(entries), size); err != nil {
		return 0, err
	}
	// One backing array for all values: one allocation per batch.
	buf := make([]byte, 0, encoded)
	values := make([][]byte, len(entries))
	for i := range entries {
		start := len(buf)
		buf = encodeEntry(buf, &entries[i], 0)
		values[i] = buf[start:len(buf):len(buf)]
	}
	r := &request{kind: reqAppend, values: values, size: size, done: make(chan struct{})}
	if err := b.submit(ctx, "append", r); err != nil {
		b.limit.release(len(entries), size)
		return 0, err
	}
	return r.seq, nil
}

// Read returns up to max entries with Seq >= from in ascending order,
// stopping before their total size (payload plus header bytes) would
// exceed maxBytes; at least one entry is returned if any exists. max <= 0
// or maxBytes <= 0 means no limit of that kind. Read does not wait for the
// writer.
func (b *Bolt) Read(from uint64, max int, maxBytes int) ([]Entry, error) {
	// Acked entries may still be in the file until their delete commits.
	b.stMu.Lock()
	if from <= b.ackTo {
		from = b.ackTo + 1
	}
	b.stMu.Unlock()
	var out []Entry
	err := b.view(func(tx *bolt.Tx) error {
		ob := tx.Bucket(bucketOutbox)
		if ob == nil {
			return fmt.Errorf("%w: missing bucket %q", ErrCorrupt, bucketOutbox)
		}
		var err error
		out, err = readEntries(ob, nil, from, max, maxBytes)
		return err
	})
	if err != nil {
		return nil, b.wrap("read", err)
	}
	return out, nil
}

// readEntries reads the entries of bucket bkt under key prefix (nil for
// the client outbox) for Read and ReadOutbox.
func readEntries(bkt *bolt.Bucket, prefix []byte, from uint64, max int, maxBytes int) ([]Entry, error) {
	var out []Entry
	if max > 0 {
		out = make([]Entry, 0, min(max, 1024))
	}
	// Payloads are copied into shared blocks, not one allocation each.
	var arena []byte
	c := bkt.Cursor()
	var total int64
	for k, v := c.Seek(entryKey(prefix, from)); k != nil; k, v = c.Next() {
		if max > 0 && len(out) >= max {
			break
		}
		seq, ok, err := entrySeq(prefix, k)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		size, err := storedSize(v)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", seq, err)
		}
		if maxBytes > 0 && len(out) > 0 && total+size > int64(maxBytes) {
			break
		}
		e := Entry{Seq: seq}
		if err := decodeEntryInto(v, &e, &arena); err != nil {
			return nil, fmt.Errorf("entry %d: %w", seq, err)
		}
		out = append(out, e)
		total += size
	}
	return out, nil
}

// Ack is AckWith without outcomes: every entry it covers settles as
// acknowledged.
func (b *Bolt) Ack(ctx context.Context, upTo uint64) error { return b.AckWith(ctx, upTo, nil) }

// AckWith marks every entry with Seq <= upTo as acknowledged: Stats, the
// limits and Read's callers see them gone at once, and the writer deletes
// them in its next commit, alongside the next appends or, when none come
// within 50 ms, on their own. That commit is synced like any other: a
// crash before it brings the entries back, to be sent again and dropped
// by the receiver's watermark, but never damages the file. Acking an
// already acked sequence is a no-op; an upTo beyond the last assigned
// sequence acks up to the last assigned one, so entries appended later
// are never taken as acked. When the outbox is empty afterwards and the
// file is larger than CompactSize, the writer compacts it.
//
// With Options.TrackSettled the delete commit also writes a settlement
// record (Client "") for every entry it deletes, with the code and reason
// of its outcome when outcomes lists its sequence, acknowledged (code 0)
// otherwise. The outcomes wait in memory with the ack until that commit;
// outcomes for sequences outside this call's newly acked range are
// ignored, as are all of them without TrackSettled.
func (b *Bolt) AckWith(ctx context.Context, upTo uint64, outcomes []Outcome) error {
	if b.isClosed() {
		return ErrClosed
	}
	b.ackMu.Lock()
	defer b.ackMu.Unlock()
	b.stMu.Lock()
	from := b.ackTo
	b.stMu.Unlock()
	if upTo <= from {
		return nil
	}
	// The writer deletes only up to ackTo, so these entries stay put.
	// An ack reaches at most the last entry committed, as the file
	// shows it: the writer records its state only after a commit, and
	// a sender that read an entry in between may have had its ack
	// already (clamped to the recorded state, the ack of the newest
	// entry was lost, and the entry stayed queued until a later ack).
	size, to, err := b.sizeBetween(from, upTo)
	if err != nil {
		return b.wrap("ack", err)
	}
	if to <= from {
		return nil
	}
	b.stMu.Lock()
	b.ackTo = to
	b.ackBytes += size
	if b.opts.TrackSettled {
		for _, o := range outcomes {
			if o.Seq > from && o.Seq <= to {
				if _, dup := b.ackOutcomes[o.Seq]; !dup {
					if b.ackOutcomes == nil {
						b.ackOutcomes = make(map[uint64]Outcome)
					}
					o.Reason = truncateReason(o.Reason)
					b.ackOutcomes[o.Seq] = o
				}
			}
		}
	}
	b.stMu.Unlock()
	b.limit.release(int(to-from), size)
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return nil
}

// sizeBetween returns the entrySize sum of the entries with
// from < Seq <= to, and the highest such Seq (from if none). An
// undecodable entry counts 0, as deleteUpTo counts it.
func (b *Bolt) sizeBetween(from, to uint64) (total int64, last uint64, err error) {
	last = from
	err = b.view(func(tx *bolt.Tx) error {
		ob := tx.Bucket(bucketOutbox)
		if ob == nil {
			return fmt.Errorf("%w: missing bucket %q", ErrCorrupt, bucketOutbox)
		}
		c := ob.Cursor()
		for k, v := c.Seek(seqKey(from + 1)); k != nil; k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("%w: outbox key %x", ErrCorrupt, k)
			}
			seq := binary.BigEndian.Uint64(k)
			if seq > to {
				break
			}
			last = seq
			if size, err := storedSize(v); err == nil {
				total += size
			}
		}
		return nil
	})
	return total, last, err
}

// Watermark returns the highest sequence of (peer, stream) delivered
// contiguously, 0 if the stream is unknown.
func (b *Bolt) Watermark(peer string, stream protocol.StreamID) (uint64, error) {
	var seq uint64
	err := b.view(func(tx *bolt.Tx) error {
		wb := tx.Bucket(bucketWatermarks)
		if wb == nil {
			return fmt.Errorf("%w: missing bucket %q", ErrCorrupt, bucketWatermarks)
		}
		v := wb.Get(watermarkKey(peer, stream))
		switch len(v) {
		case 0:
		case 8:
			seq = binary.BigEndian.Uint64(v)
		default:
			return fmt.Errorf("%w: watermark of %d bytes", ErrCorrupt, len(v))
		}
		return nil
	})
	if err != nil {
		return 0, b.wrap("watermark", err)
	}
	return seq, nil
}

// SetWatermark durably records seq as the watermark of (peer, stream), in
// the writer's next batch, unless a higher one is recorded (a watermark
// never moves back; see [Inbox.SetWatermark]). peer must not be empty.
func (b *Bolt) SetWatermark(ctx context.Context, peer string, stream protocol.StreamID, seq uint64) error {
	if b.isClosed() {
		return ErrClosed
	}
	if peer == "" {
		return errEmptyPeer
	}
	if len(peer)+len(stream) > bolt.MaxKeySize {
		return fmt.Errorf("queue: peer name of %d bytes is too long", len(peer))
	}
	return b.submit(ctx, "set watermark", &request{
		kind: reqWatermark, key: watermarkKey(peer, stream), seq: seq, done: make(chan struct{}),
	})
}

// Binding returns the identity peer is bound to, "" if none.
func (b *Bolt) Binding(peer string) (string, error) {
	var id string
	err := b.view(func(tx *bolt.Tx) error {
		bb := tx.Bucket(bucketBindings)
		if bb == nil {
			return fmt.Errorf("%w: missing bucket %q", ErrCorrupt, bucketBindings)
		}
		if peer != "" && len(peer) <= bolt.MaxKeySize {
			id = string(bb.Get([]byte(peer)))
		}
		return nil
	})
	if err != nil {
		return "", b.wrap("binding", err)
	}
	return id, nil
}

// Bind durably binds peer to identity, in the writer's next batch. peer
// must not be empty.
func (b *Bolt) Bind(ctx context.Context, peer, identity string) error {
	if b.isClosed() {
		return ErrClosed
	}
	if peer == "" {
		return errEmptyPeer
	}
	if len(peer) > bolt.MaxKeySize || len(identity) > bolt.MaxValueSize {
		return fmt.Errorf("queue: peer name or identity too long (%d, %d bytes)", len(peer), len(identity))
	}
	return b.submit(ctx, "bind", &request{
		kind: reqBind, key: []byte(peer), value: []byte(identity), done: make(chan struct{}),
	})
}

// Stats returns a snapshot of the outbox as last committed, less the
// entries acked since (FileSize still holds them until their delete is
// committed). It never blocks on the writer.
func (b *Bolt) Stats() Stats {
	b.stMu.Lock()
	st, ackTo, ackBytes := b.state, b.ackTo, b.ackBytes
	b.stMu.Unlock()
	s := Stats{Messages: int(st.last - ackTo), Bytes: max(st.bytes-ackBytes, 0), LastSeq: st.last, Acked: ackTo}
	if s.Messages > 0 {
		s.FirstSeq = ackTo + 1
	}
	if fi, err := os.Stat(b.path); err == nil {
		s.FileSize = fi.Size()
	}
	var size int64
	if b.view(func(tx *bolt.Tx) error { size = tx.Size(); return nil }) == nil {
		b.dbMu.RLock()
		if b.db != nil {
			s.DataBytes = max(size-int64(b.db.Stats().FreeAlloc), 0)
		}
		b.dbMu.RUnlock()
	}
	return s
}

// Compact rewrites the file without its free pages, whatever the size of
// the outbox, and waits for it. The writer does it between batches, so
// writes wait meanwhile; reads wait only for the final swap. The original
// file stays intact until the compacted copy, synced, is renamed over it.
func (b *Bolt) Compact(ctx context.Context) error {
	if b.isClosed() {
		return ErrClosed
	}
	return b.submit(ctx, "compact", &request{kind: reqCompact, done: make(chan struct{})})
}

// Close waits for the batch being committed, stops the writer goroutine
// and closes the file. Calls blocked waiting for space or for the writer
// return ErrClosed. Close is safe to call concurrently; every call waits
// until the store is closed, the first returns the result and later ones
// return ErrClosed.
func (b *Bolt) Close() error {
	first := false
	b.closeOnce.Do(func() {
		first = true
		close(b.closing)
		<-b.done
		b.dbMu.Lock()
		db := b.db
		b.db = nil
		b.dbMu.Unlock()
		if err := db.Close(); err != nil {
			b.closeErr = fmt.Errorf("queue: close %s: %w", b.path, err)
		}
		b.log.Info("queue: closed", "path", b.path)
	})
	if !first {
		return ErrClosed
	}
	return b.closeErr
}

func (b *Bolt) isClosed() bool {
	select {
	case <-b.closing:
		return true
	default:
		return false
	}
}

// wrap adds the operation to an error that does not already carry one of
// our sentinels' context.
func (b *Bolt) wrap(op string, err error) error {
	if errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("queue: %s %s: %w", op, b.path, err)
}

// diskFullError reports a write that failed because the disk is full. It
// matches both ErrDiskFull and syscall.ENOSPC with errors.Is, even when the
// cause lost the errno on its way through bbolt.
type diskFullError struct {
	path string
	err  error
}

func (e *diskFullError) Error() string {
	return fmt.Sprintf("%v: %s: %v", ErrDiskFull, e.path, e.err)
}

func (e *diskFullError) Unwrap() error { return e.err }

func (e *diskFullError) Is(target error) bool {
	return target == ErrDiskFull || target == syscall.ENOSPC
}

// isNoSpace reports whether err says the disk is full. bbolt formats some
// causes with %s (growing the file: "file resize error: ..."), which drops
// the errno, so the text is checked as a last resort.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) ||
		strings.Contains(err.Error(), syscall.ENOSPC.Error())
}

var _ Store = (*Bolt)(nil)
