package main

import (
	"context"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// The garbage collector's pace. With Go's default (GOGC=100) a heap whose
// live data is ~25 MB is collected every ~25 MB allocated: under W1 that
// is a collection every ~250 ms, and each one (two stop-the-world pauses
// stretched by the other busy processes, mark assists, a dedicated mark
// worker) made a burst of slow API requests. The service instead lets
// the heap grow to a floor (--gc-floor) before collecting while live data
// is small, and keeps Go's pace once Go's own goal is above the floor:
//
//	heap goal = max(floor, Go's default goal)
//
// It does so by setting GOGC after each collection; it sets no memory
// limit, so a growing live heap cannot make the collector run without
// end.

// gcPercentFor returns the GOGC that makes the next heap goal floor, or
// Go's default 100 when that goal is larger. The runtime sets the goal to
// live + (live + roots) × GOGC/100, where roots are the goroutine stacks
// and globals it scanned (thousands of image goroutines make them
// sizeable). A tiny live heap counts as the runtime's smallest goal, and
// the result is bounded.
func gcPercentFor(floor, live, roots int64) int {
	const maxPercent = 100_000
	live = max(live, 4<<20)
	scanned := live + max(roots, 0)
	if floor <= live+scanned {
		return 100
	}
	return int(min((floor-live)*100/scanned, maxPercent))
}

// gcTunePoll is how often the tuner looks for a finished collection.
const gcTunePoll = 50 * time.Millisecond

// startGCTuner paces the collector as above until ctx ends, then restores
// the GOGC it found. It does nothing (and says why) when floor is 0 or
// when GOGC is set in the environment: the operator's choice stands. The
// floor is at most half the memory the process may use: its container's
// memory limit (cgroup v2 or v1) or GOMEMLIMIT, whichever is lower, and a
// GOMEMLIMIT still bounds the heap. The returned function stops the tuner
// and waits for it; call it once.
func startGCTuner(ctx context.Context, floor int64, getenv func(string) string, log *slog.Logger) (stop func()) {
	switch {
	case floor <= 0:
		log.Info("garbage collection at Go's default pace (--gc-floor 0)")
		return func() {}
	case getenv("GOGC") != "":
		log.Info("garbage collection paced by GOGC from the environment; --gc-floor ignored", "GOGC", getenv("GOGC"))
		return func() {}
	}
	if capped := floorWithin(floor, memoryLimit(cgroupMemoryFiles), debug.SetMemoryLimit(-1)); capped < floor {
		log.Info("--gc-floor lowered to half the memory this process may use", "gc_floor", floor, "lowered_to", capped)
		floor = capped
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	samples := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
	percent := func() int {
		return gcPercentFor(floor, int64(samples[1].Value.Uint64()), int64(samples[2].Value.Uint64()+samples[3].Value.Uint64()))
	}
	metrics.Read(samples)
	previous := debug.SetGCPercent(percent())
	log.Info("garbage collection lets the heap grow to --gc-floor while live data is small", "gc_floor", floor)
	go func() {
		defer close(done)
		defer debug.SetGCPercent(previous)
		t := time.NewTicker(gcTunePoll)
		defer t.Stop()
		cycles := samples[0].Value.Uint64()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			metrics.Read(samples)
			if c := samples[0].Value.Uint64(); c != cycles {
				cycles = c
				debug.SetGCPercent(percent())
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// cgroupMemoryFiles are where a container's memory limit is read: cgroup
// v2, then v1.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// memoryLimit returns the first limit found in files, or 0 when none is
// set ("max", a v1 limit of 2^62 bytes or more, a missing or unreadable
// file).
func memoryLimit(files []string) int64 {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 || n >= 1<<62 {
			return 0
		}
		return n
	}
	return 0
}

// floorWithin returns floor, at most half of the lower of container (0 =
// none) and goMemLimit (math.MaxInt64 = none).
func floorWithin(floor, container, goMemLimit int64) int64 {
	limit := goMemLimit
	if container > 0 {
		limit = min(limit, container)
	}
	if limit <= 0 || limit == math.MaxInt64 {
		return floor
	}
	return min(floor, limit/2)
}
