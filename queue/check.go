package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// maxCheckErrors bounds the problems one Check reports.
const maxCheckErrors = 20

// Check verifies the store file at path without changing it: bbolt's own
// consistency check (every page reachable or free, no page used twice)
// plus ours (meta readable, every outbox key 8 bytes and in acked+1..last
// without gaps, every entry decodes, the byte count matches, watermarks
// well formed, the same for every client's push outbox, every
// settlement record decodable and in the index its state names, and
// every peer's last-used time in its index and the index in step). It
// returns nil for a sound file and otherwise an error
// wrapping [ErrCorrupt] (or [ErrVersion]) that lists up to 20 problems.
//
// Check opens the file read-only with a shared lock, so it waits up to 1 s
// and then fails with [ErrLocked] while a [Bolt] has the file open.
func Check(path string) error {
	db, err := openReadOnly(path, 0)
	if err != nil {
		return err
	}
	defer db.Close()
	var problems []error
	err = func() (err error) {
		defer recoverCorrupt(path, &err)
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		return db.View(func(tx *bolt.Tx) error {
			// bbolt's Check reads pages on a goroutine of its own, where
			// a fault on a page beyond the end of a truncated file cannot
			// be recovered: look for truncation here first.
			if fi, err := os.Stat(path); err == nil && fi.Size() < tx.Size() {
				problems = append(problems, fmt.Errorf("file is %d bytes, its pages need %d (truncated)", fi.Size(), tx.Size()))
				return nil
			}
			for e := range tx.Check() {
				if len(problems) < maxCheckErrors {
					problems = append(problems, e)
				}
			}
			if len(problems) > 0 {
				return nil // our checks would only trip over the same damage
			}
			problems = checkStore(tx, problems)
			return nil
		})
	}()
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		if errors.Is(problems[0], ErrVersion) {
			return fmt.Errorf("queue: check %s: %w", path, problems[0])
		}
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, errors.Join(problems...))
	}
	return nil
}

func checkStore(tx *bolt.Tx, problems []error) []error {
	add := func(format string, args ...any) bool {
		problems = append(problems, fmt.Errorf(format, args...))
		return len(problems) < maxCheckErrors
	}
	_, st, found, err := readState(tx)
	if err != nil {
		return append(problems, err)
	}
	if !found {
		return append(problems, errors.New("no meta bucket (not a wsreliable store)"))
	}
	var (
		n     uint64
		bytes int64
		want  = st.acked + 1
	)
	c := tx.Bucket(bucketOutbox).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 8 {
			if !add("outbox key %x is not 8 bytes", k) {
				return problems
			}
			continue
		}
		seq := binary.BigEndian.Uint64(k)
		if seq != want && !add("outbox holds %d where %d was expected", seq, want) {
			return problems
		}
		want = seq + 1
		if seq > st.last && !add("outbox holds %d beyond the last sequence %d", seq, st.last) {
			return problems
		}
		var e Entry
		if err := decodeEntry(v, &e); err != nil {
			if !add("entry %d: %w", seq, err) {
				return problems
			}
			continue
		}
		n++
		bytes += entrySize(&e)
	}
	if n != st.last-st.acked {
		add("outbox holds %d entries, meta says %d (acked %d, last %d)", n, st.last-st.acked, st.acked, st.last)
	}
	if bytes != st.bytes {
		add("outbox holds %d bytes, meta says %d", bytes, st.bytes)
	}
	_ = tx.Bucket(bucketWatermarks).ForEach(func(k, v []byte) error {
		if len(k) <= 16 || len(v) != 8 {
			add("watermark key %x value %x malformed", k, v)
		}
		return nil
	})
	checkOutboxes(tx, add)
	checkSettled(tx, add)
	checkRanges(tx, add)
	checkLastUsed(tx, st.version, add)
	return problems
}

// checkSettled checks the settlement records: each decodes, each settled
// one has its key in the index its reported flag names, and each index
// key names a record that has it.
func checkSettled(tx *bolt.Tx, add func(format string, args ...any) bool) {
	rb := tx.Bucket(bucketSettled)
	idx := map[bool]*bolt.Bucket{false: tx.Bucket(bucketUnreported), true: tx.Bucket(bucketReported)}
	if rb == nil {
		if idx[false] != nil || idx[true] != nil {
			add("settlement indexes without records")
		}
		return
	}
	if idx[false] == nil || idx[true] == nil {
		add("settlement records without both indexes")
		return
	}
	c := rb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		r, err := decodeSettled(k, v)
		if err != nil {
			if !add("%w", err) {
				return
			}
			continue
		}
		if !r.Pending && idx[r.reported].Get(indexKey(unixMilli(r.At), r.ID)) == nil {
			if !add("settlement record of %x (reported %v) is missing from its index", k, r.reported) {
				return
			}
		}
	}
	for reported, ib := range idx {
		c := ib.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			ok := len(k) == 8+16
			if ok {
				r, err := decodeSettled(k[8:], rb.Get(k[8:]))
				ok = err == nil && !r.Pending && r.reported == reported && unixMilli(r.At) == int64(binary.BigEndian.Uint64(k))
			}
			if !ok && !add("settlement index key %x (reported %v) names no such record", k, reported) {
				return
			}
		}
	}
}

// checkRanges checks the acknowledged ranges: each key is a client's
// prefix and a sequence, each value decodes with from below that
// sequence and has its time key, and each time key names a range with
// its time.
func checkRanges(tx *bolt.Tx, add func(format string, args ...any) bool) {
	b, tb := tx.Bucket(bucketRanges), tx.Bucket(bucketRangesTime)
	if b == nil || tb == nil {
		if b != tb {
			add("acknowledged ranges without their time index, or the reverse")
		}
		return
	}
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) < 2+8 || int(binary.BigEndian.Uint16(k))+2+8 != len(k) {
			if !add("acknowledged range key %x malformed", k) {
				return
			}
			continue
		}
		at, from, _, err := decodeRange(v)
		switch {
		case err != nil:
			if !add("range %x: %w", k, err) {
				return
			}
		case from >= binary.BigEndian.Uint64(k[len(k)-8:]):
			if !add("range %x starts after its end (%d)", k, from) {
				return
			}
		case tb.Get(append(binary.BigEndian.AppendUint64(nil, uint64(at)), k...)) == nil:
			if !add("range %x is missing from its time index", k) {
				return
			}
		}
	}
	c = tb.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		ok := len(k) > 8
		if ok {
			at, _, _, err := decodeRange(b.Get(k[8:]))
			ok = err == nil && at == int64(binary.BigEndian.Uint64(k))
		}
		if !ok && !add("range time key %x names no such range", k) {
			return
		}
	}
}

// checkOutboxes checks the push outboxes in tx (none in files never
// pushed from): every meta key a valid client ID, its meta readable, its
// entries exactly acked+1..last, all decodable, their count and bytes as
// the meta says, and no entry outside an outbox. It stops when add says
// there are enough problems.
func checkOutboxes(tx *bolt.Tx, add func(format string, args ...any) bool) {
	mb, eb := tx.Bucket(bucketPushMeta), tx.Bucket(bucketPushEntries)
	if mb == nil {
		if eb != nil {
			add("push entries without push meta")
		}
		return
	}
	if eb == nil {
		add("push meta without push entries")
		return
	}
	var held uint64 // entries the outboxes account for
	c := mb.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		client := string(k)
		if err := checkClient(client); err != nil {
			if !add("outbox key %q: %w", k, err) {
				return
			}
			continue
		}
		o, err := findOutbox(tx, client)
		if err != nil {
			if !add("%w", err) {
				return
			}
			continue
		}
		m := o.m
		var (
			n     uint64
			bytes int64
			want  = m.acked + 1
		)
		ec := eb.Cursor()
		for k, v := ec.Seek(o.prefix); ; k, v = ec.Next() {
			seq, ok, err := entrySeq(o.prefix, k)
			if err != nil {
				if !add("outbox of client %q: %w", client, err) {
					return
				}
				continue
			}
			if !ok {
				break
			}
			if seq != want && !add("outbox of client %q holds %d where %d was expected", client, seq, want) {
				return
			}
			want = seq + 1
			if seq > m.last && !add("outbox of client %q holds %d beyond the last sequence %d", client, seq, m.last) {
				return
			}
			var e Entry
			if err := decodeEntry(v, &e); err != nil {
				if !add("outbox of client %q: entry %d: %w", client, seq, err) {
					return
				}
				continue
			}
			n++
			bytes += entrySize(&e)
		}
		held += m.count
		if n != m.count || n != m.last-m.acked {
			if !add("outbox of client %q holds %d entries, meta says %d (acked %d, last %d)", client, n, m.count, m.acked, m.last) {
				return
			}
		}
		if bytes != m.bytes && !add("outbox of client %q holds %d bytes, meta says %d", client, bytes, m.bytes) {
			return
		}
	}
	if n := uint64(eb.Stats().KeyN); n != held {
		add("push entries hold %d entries, the outboxes account for %d", n, held)
	}
}

// Inspect reads the identity and outbox statistics of the store file at
// path without changing it, for tools. Like [Check] it fails with
// [ErrLocked] while a [Bolt] has the file open.
func Inspect(path string) (Meta, Stats, error) {
	var (
		meta Meta
		st   state
	)
	db, err := openReadOnly(path, 0)
	if err != nil {
		return meta, Stats{}, err
	}
	defer db.Close()
	err = func() (err error) {
		defer recoverCorrupt(path, &err)
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		return db.View(func(tx *bolt.Tx) error {
			var found bool
			meta, st, found, err = readState(tx)
			if err == nil && !found {
				err = fmt.Errorf("%w: no meta bucket", ErrCorrupt)
			}
			return err
		})
	}()
	if err != nil {
		return meta, Stats{}, fmt.Errorf("queue: inspect %s: %w", path, err)
	}
	s := Stats{Messages: st.messages(), Bytes: st.bytes, LastSeq: st.last, Acked: st.acked}
	if s.Messages > 0 {
		s.FirstSeq = st.acked + 1
	}
	if fi, err := os.Stat(path); err == nil {
		s.FileSize = fi.Size()
	}
	return meta, s, nil
}

// openReadOnly opens path read-only with a shared lock, waiting up to
// lockTimeout (0: 1 s) while a [Bolt] holds it.
func openReadOnly(path string, lockTimeout time.Duration) (*bolt.DB, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("queue: open %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("queue: open %s: not a regular file", path)
	}
	if fi.Size() == 0 {
		return nil, fmt.Errorf("%w: %s: empty file", ErrCorrupt, path)
	}
	o, err := (&Options{LockTimeout: lockTimeout}).withDefaults()
	if err != nil {
		return nil, err
	}
	return openDB(path, &o, true)
}
