//go:build race

package reliable_test

// raceEnabled reports whether the tests run under the race detector,
// which slows goroutine-heavy tests by an order of magnitude.
const raceEnabled = true
