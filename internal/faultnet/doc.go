// Package faultnet is a TCP proxy on the loopback interface that injects
// the faults real networks produce: connection resets, silent stalls
// (half-open links that only heartbeats can detect) and refused
// connections. Tests use it through internal/testkit; the demo of
// cmd/wsreliable uses it directly.
package faultnet
