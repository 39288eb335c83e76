package queue

import "time"

// Commits returns the number of write transactions b has committed.
func Commits(b *Bolt) int64 { return b.commits.Load() }

// SetFailCommit makes every later write transaction of b call fn before
// committing and abort with its error; nil removes the hook.
func SetFailCommit(b *Bolt, fn func() error) {
	if fn == nil {
		b.testFailCommit.Store(nil)
		return
	}
	b.testFailCommit.Store(&fn)
}

// SetReleaseIdle sets how long b's writer waits without a commit before
// releasing its mapped pages; Releases counts the releases.
func SetReleaseIdle(b *Bolt, d time.Duration) { b.releaseIdle.Store(int64(d)) }

// SetCompactIdle sets how long b's writer waits without a commit before
// it runs a compaction it held back for copying too much to run at once.
func SetCompactIdle(b *Bolt, d time.Duration) { b.compactIdle.Store(int64(d)) }

// SetReopenAfter sets how many bytes of pages the commits on one bbolt
// handle of b write before its writer, once idle, reopens the file;
// Reopens counts the reopens.
func SetReopenAfter(b *Bolt, n int64) { b.reopenAfter.Store(n) }

// Reopens returns how many times b reopened its file.
func Reopens(b *Bolt) int64 { return b.reopens.Load() }

// SetReleaseAfter sets how many bytes of pages b's commits write before
// its writer releases the mapped pages under load.
func SetReleaseAfter(b *Bolt, n int64) { b.releaseAfter.Store(n) }

// Releases returns how many times b released its mapped pages.
func Releases(b *Bolt) int64 { return b.releases.Load() }

// SetAfterCommit makes b's writer call fn after each write transaction
// it committed, before it records the new state; nil removes the hook.
func SetAfterCommit(b *Bolt, fn func()) {
	if fn == nil {
		b.testAfterCommit.Store(nil)
		return
	}
	b.testAfterCommit.Store(&fn)
}

// SetAckDelay sets how long b's acked entries wait for an append to share
// their delete commit.
func SetAckDelay(b *Bolt, d time.Duration) { b.ackDelay.Store(int64(d)) }

// SetClock makes b take the times of settlement records and pruning from
// now; nil restores time.Now.
func SetClock(b *Bolt, now func() time.Time) {
	if now == nil {
		b.testNow.Store(nil)
		return
	}
	b.testNow.Store(&now)
}

// SetMemoryClock is SetClock for a Memory.
func SetMemoryClock(m *Memory, now func() time.Time) {
	if now == nil {
		m.testNow.Store(nil)
		return
	}
	m.testNow.Store(&now)
}

// LastUsed returns the last-used time b recorded for peer, zero if none.
func LastUsed(b *Bolt, peer string) (time.Time, error) { return b.lastUsed(peer) }
