// Command retailpulse runs the image-job service (serve, the default) and
// its operator tools.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

// minProcs is the fewest scheduler threads the service runs with. With
// the embedded server fsyncing every write, appends block threads in
// syscalls; on a 2-core machine that starves HTTP handlers (status p50 of
// ~4 ms and p99 of ~25 ms under W1 with 2, ~0.3 ms and ~7-10 ms with 4: see
// docs/benchmarks.md). An explicit GOMAXPROCS is always respected.
const minProcs = 4

func main() {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < minProcs {
		runtime.GOMAXPROCS(minProcs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Stdin: os.Stdin}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		m.notice("shutting down; a second signal exits at once", "signal", sig.String())
		cancel()
		sig = <-sigs
		m.notice("second signal: exiting now", "signal", sig.String())
		os.Exit(1)
	}()
	os.Exit(m.Run(ctx, os.Args[1:]))
}
