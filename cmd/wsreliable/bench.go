package main

import (
	"context"
	"io"

	"github.com/wsreliable/wsreliable/internal/bench"
)

// runBench runs the benchmark suite: the raw gorilla baseline and
// wsreliable side by side in one run, with ratios. See BENCHMARKS.md.
func runBench(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	code := bench.Main(ctx, args, stdout, stderr)
	if ctx.Err() != nil {
		return interruptCode(ctx)
	}
	return code
}
