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

// minProcs is the fewest scheduler threads the process runs with. Threads
// block in system calls (the embedded server fsyncs every append; socket
// writes on a busy machine wait for a core), and a P held by one is lost to
// the scheduler until it is handed off: on a 2-core machine 2 left status
// p99 at ~25 ms under W1, 4 brought it near 10 ms, and 8 raised W1 and W2
// by 10-30% images/s at the same status latency (docs/benchmarks.md). An
// explicit GOMAXPROCS is always respected.
const minProcs = 8

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
