package queue

// Commits returns the number of write transactions b has committed.
func Commits(b *Bolt) int64 { return b.commits.Load() }

// SetFailCommit makes every later write transaction of b call fn before
// committing and abort with its error. Call it before any write.
func SetFailCommit(b *Bolt, fn func() error) { b.testFailCommit = fn }
