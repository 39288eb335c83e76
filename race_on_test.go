//go:build race

package wsreliable_test

// raceEnabled reports whether the tests run under the race detector,
// which slows goroutine-heavy tests by an order of magnitude.
const raceEnabled = true
