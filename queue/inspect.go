package queue

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wsreliable/wsreliable/protocol"
)

// defaultInspectLimit is the page size of InspectFile for a Limit of 0.
const defaultInspectLimit = 100

// InspectOptions choose the page of clients [InspectFile] lists. A nil
// *InspectOptions lists the first 100 clients and waits up to 1 s for
// the file lock.
type InspectOptions struct {
	// After lists the clients whose IDs sort (bytewise) after it. Zero
	// (""): from the first. Pass the last client of a page to get the
	// next.
	After string
	// Limit is the most clients listed. Zero: 100. Negative is an error.
	Limit int
	// LockTimeout bounds the wait for a file held by a [Bolt] (a running
	// process); then InspectFile fails with [ErrLocked]. Zero: 1 s.
	LockTimeout time.Duration
}

// Report is what [InspectFile] read from a store file, all of it from one
// read transaction.
type Report struct {
	Version uint64 // the file's format version
	Meta    Meta   // the identity the file was created with
	Outbox  Stats  // the client outbox, as [Inspect] returns it; FileSize is the file's size

	Outboxes     int   // push outboxes in the file (clients ever pushed to)
	PushMessages int64 // entries held by all push outboxes
	PushBytes    int64 // their size sum (payload plus header keys and values)
	Bindings     int   // client ID bindings
	Watermarks   int   // watermarks, one per (peer, stream)

	Settled SettledCounts // settlement records by state

	// Clients is one page of the peers the file keeps state for, in ID
	// order (bytewise): every client ID with a push outbox, a binding
	// or a watermark. A client's store lists the peer name under which
	// it keeps the watermarks of the server's streams.
	Clients []ClientReport
	// More reports that clients after the last of Clients exist.
	More bool
}

// SettledCounts counts the settlement records of a file (see
// [Settlements]).
type SettledCounts struct {
	Pending    int // messages still queued in a push outbox
	Unreported int // settled, not yet marked reported
	Reported   int // settled and reported, kept for StatusRetention
}

// ClientReport is the state a file keeps for one client ID (or, in a
// client's store, for its peer).
type ClientReport struct {
	Client string // the client ID (or peer name)
	// Identity is the identity the client ID is bound to, "" if none.
	Identity string
	// Outbox is the client's push outbox; its Stream is zero if the
	// client was never pushed to.
	Outbox OutboxInfo
	// Watermarks are the client's streams delivered here, in stream ID
	// order (bytewise).
	Watermarks []Watermark
	// LastUsed is when the client's binding and watermarks were last
	// used (millisecond precision), from which Options.IdleExpiry
	// counts; zero if the file has no such record.
	LastUsed time.Time
}

// Watermark is the highest sequence of one stream delivered contiguously.
type Watermark struct {
	Stream protocol.StreamID // the stream
	Seq    uint64            // its watermark
}

// InspectFile reads the store file at path without changing it: its
// format version, identity and client outbox, counts of the server
// state it holds (push outboxes, bindings, watermarks, settlement
// records) and one page of clients, merged by client ID from the push
// outboxes, the bindings and the watermarks. opts may be nil.
//
// Memory is bounded by the page: a file with any number of clients is
// read a page at a time (opts.After, opts.Limit), each page in one read
// transaction. The counts walk their buckets without keeping them.
//
// InspectFile opens the file read-only with a shared lock, as [Check]
// does, and holds it only while it reads. While a [Bolt] has the file
// open it waits up to opts.LockTimeout and then fails with an error
// wrapping [ErrLocked]. A damaged file yields [ErrCorrupt] and one from
// a newer program [ErrVersion]; it never panics. It does not verify the
// whole file: that is [Check]'s job.
func InspectFile(path string, opts *InspectOptions) (r *Report, err error) {
	var o InspectOptions
	if opts != nil {
		o = *opts
	}
	switch {
	case o.Limit < 0:
		return nil, fmt.Errorf("queue: InspectOptions.Limit is negative (%d)", o.Limit)
	case o.LockTimeout < 0:
		return nil, fmt.Errorf("queue: InspectOptions.LockTimeout is negative (%s)", o.LockTimeout)
	case o.Limit == 0:
		o.Limit = defaultInspectLimit
	}
	db, err := openReadOnly(path, o.LockTimeout)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	r = &Report{}
	err = func() (err error) {
		defer recoverCorrupt(path, &err)
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		return db.View(func(tx *bolt.Tx) error { return r.read(tx, &o) })
	}()
	if err != nil {
		return nil, fmt.Errorf("queue: inspect %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil {
		r.Outbox.FileSize = fi.Size()
	}
	return r, nil
}

// read fills r from tx.
func (r *Report) read(tx *bolt.Tx, o *InspectOptions) error {
	meta, st, found, err := readState(tx)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("%w: no meta bucket", ErrCorrupt)
	}
	if r.Version, err = getU64(tx.Bucket(bucketMeta), keyVersion); err != nil {
		return err
	}
	r.Meta = meta
	r.Outbox = Stats{Messages: st.messages(), Bytes: st.bytes, LastSeq: st.last, Acked: st.acked}
	if r.Outbox.Messages > 0 {
		r.Outbox.FirstSeq = st.acked + 1
	}
	if err := r.count(tx); err != nil {
		return err
	}
	ids, more, err := clientPage(tx, o.After, o.Limit)
	if err != nil {
		return err
	}
	r.More = more
	r.Clients = make([]ClientReport, 0, len(ids))
	for _, id := range ids {
		c, err := clientReport(tx, id)
		if err != nil {
			return err
		}
		r.Clients = append(r.Clients, c)
	}
	return nil
}

// count fills in the counts of r's server state.
func (r *Report) count(tx *bolt.Tx) error {
	r.Bindings = tx.Bucket(bucketBindings).Stats().KeyN
	r.Watermarks = tx.Bucket(bucketWatermarks).Stats().KeyN
	if mb := tx.Bucket(bucketPushMeta); mb != nil {
		c := mb.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			m, err := decodeOutboxMeta(v)
			if err != nil {
				return fmt.Errorf("client %q: %w", k, err)
			}
			r.Outboxes++
			r.PushMessages += int64(m.count)
			r.PushBytes += m.bytes
		}
	}
	rb := tx.Bucket(bucketSettled)
	if rb == nil {
		return nil
	}
	ub, pb := tx.Bucket(bucketUnreported), tx.Bucket(bucketReported)
	if ub == nil || pb == nil {
		return fmt.Errorf("%w: settlement records without both indexes", ErrCorrupt)
	}
	s := &r.Settled
	s.Unreported, s.Reported = ub.Stats().KeyN, pb.Stats().KeyN
	// Records an acknowledged range lists are settled and reported,
	// though stored pending.
	if b := tx.Bucket(bucketRanges); b != nil {
		err := b.ForEach(func(k, v []byte) error {
			_, _, ids, err := decodeRange(v)
			s.Reported += len(ids) / 16
			return err
		})
		if err != nil {
			return err
		}
	}
	s.Pending = rb.Stats().KeyN - s.Unreported - s.Reported
	if s.Pending < 0 {
		return fmt.Errorf("%w: %d settlement records, %d in their indexes", ErrCorrupt, rb.Stats().KeyN, s.Unreported+s.Reported)
	}
	return nil
}

// clientPage returns the first limit client IDs after after, in bytewise
// order, from the push outboxes, the bindings and the watermarks, and
// whether more follow. It keeps at most limit+1 IDs.
//
// Push meta and bindings are keyed by client ID, so their cursors yield
// IDs in order. A watermark key is the peer's name and then 16 stream
// bytes, so a peer whose name is a prefix of another's may sort after
// it: the watermarks are walked from after until their first byte passes
// that of the last ID kept, beyond which no smaller peer can appear.
func clientPage(tx *bolt.Tx, after string, limit int) (ids []string, more bool, err error) {
	keep := limit + 1
	add := func(id string) {
		if id <= after {
			return
		}
		i, found := slices.BinarySearch(ids, id)
		if found || i >= keep {
			return
		}
		ids = slices.Insert(ids, i, id)
		if len(ids) > keep {
			ids = ids[:keep]
		}
	}
	for _, name := range [][]byte{bucketPushMeta, bucketBindings} {
		b := tx.Bucket(name)
		if b == nil {
			continue
		}
		c := b.Cursor()
		n := 0
		for k, _ := c.Seek([]byte(after)); k != nil && n < keep; k, _ = c.Next() {
			if string(k) > after {
				add(string(k))
				n++
			}
		}
	}
	c := tx.Bucket(bucketWatermarks).Cursor()
	for k, _ := c.Seek([]byte(after)); k != nil; k, _ = c.Next() {
		if len(k) <= len(protocol.StreamID{}) {
			return nil, false, fmt.Errorf("%w: watermark key %x", ErrCorrupt, k)
		}
		if len(ids) == keep && k[0] > ids[keep-1][0] {
			break
		}
		add(string(k[:len(k)-len(protocol.StreamID{})]))
	}
	if len(ids) > limit {
		return ids[:limit], true, nil
	}
	return ids, false, nil
}

// clientReport reads what tx holds for client.
func clientReport(tx *bolt.Tx, client string) (ClientReport, error) {
	c := ClientReport{Client: client}
	var err error
	if c.Outbox, err = outboxInfo(tx, client); err != nil {
		return c, err
	}
	if len(client) <= bolt.MaxKeySize {
		c.Identity = string(tx.Bucket(bucketBindings).Get([]byte(client)))
		if lb := tx.Bucket(bucketLastUsed); lb != nil {
			if v := lb.Get([]byte(client)); len(v) == 8 {
				c.LastUsed = fromUnixMilli(int64(binary.BigEndian.Uint64(v)))
			}
		}
	}
	// The client's keys are its name and 16 bytes; longer names that
	// start with it share the run and are skipped.
	prefix := []byte(client)
	cur := tx.Bucket(bucketWatermarks).Cursor()
	for k, v := cur.Seek(prefix); bytes.HasPrefix(k, prefix); k, v = cur.Next() {
		if len(k) != len(prefix)+len(protocol.StreamID{}) {
			continue
		}
		if len(v) != 8 {
			return c, fmt.Errorf("%w: watermark of client %q: %d bytes", ErrCorrupt, client, len(v))
		}
		var w Watermark
		copy(w.Stream[:], k[len(prefix):])
		w.Seq = binary.BigEndian.Uint64(v)
		c.Watermarks = append(c.Watermarks, w)
	}
	return c, nil
}
