// Package backoff computes reconnect delays: exponential growth with full
// jitter and a cap, a reset only after a connection stayed healthy for a
// while, and a floor taken from a server's "try again later" hint.
//
// # Algorithm
//
// Attempt n (counting from 0) waits a duration drawn uniformly from
// [0, min(Max, Min·2ⁿ)): "full jitter" as described in the AWS architecture
// blog post "Exponential Backoff And Jitter". Full jitter spreads a fleet of
// clients that lost the same server across the whole window, so a server
// restart is not followed by a reconnect storm. The ceiling is computed
// without overflow for any number of attempts.
//
// # Reset
//
// The attempt counter does not reset when a connection is established, only
// when it is lost after having stayed up for at least [Policy.Healthy]. A
// server that accepts and then immediately closes therefore still sees the
// client's delays grow instead of a tight reconnect loop. A connection
// lost after a tenth of Healthy earns one quick redial, drawn below
// [Policy.Min] and not counted, so a short blip (a proxy restart) after an
// earlier outage does not wait that outage's ceiling; if it fails, the
// delays go on from where they were.
//
// # Time
//
// The package never reads the clock and never sleeps: the caller passes
// "now" to [Backoff.Connected] and [Backoff.Disconnected] and does its own
// waiting, so it can be tested with fixed times and a seeded random source.
package backoff
