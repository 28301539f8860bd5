package imagefetch

import (
	"bytes"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// goid is the calling goroutine's id, from its stack header.
func goid() int {
	b := make([]byte, 64)
	b = b[:runtime.Stack(b, false)]
	f := bytes.Fields(b)
	id, _ := strconv.Atoi(string(f[1]))
	return id
}

// funcCall runs a function on a worker.
type funcCall[T any] struct {
	callState
	fn func() T
	v  T
}

func (c *funcCall[T]) run() {
	defer func() { c.finish(recover()) }()
	c.v = c.fn()
}

// call runs fn on a worker and returns its result (or raises its panic).
func call[T any](w *workers, fn func() T) T {
	c := &funcCall[T]{callState: newCallState(), fn: fn}
	w.do(c)
	c.wait()
	return c.v
}

// waitFor polls cond until it holds, failing t after 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after 10s for %s", what)
		}
	}
}

// Calls in turn reuse the waiting worker. (A call can still start a
// worker of its own when it comes in the instant between the waiting
// worker counting itself and receiving; hence "at most 2".)
func TestWorkers_CallsInTurnShareAGoroutine(t *testing.T) {
	w := newWorkers(time.Minute)
	seen := map[int]bool{call(w, goid): true}
	for range 20 {
		waitFor(t, "a worker to wait for a call", func() bool { return w.waiting.Load() >= 1 })
		seen[call(w, goid)] = true
	}
	if len(seen) > 2 {
		t.Fatalf("21 calls in turn ran on %d goroutines", len(seen))
	}
}

func TestWorkers_CallsAtOnceGetTheirOwnGoroutines(t *testing.T) {
	w := newWorkers(time.Minute)
	const n = 8
	var started sync.WaitGroup
	started.Add(n)
	release := make(chan struct{})
	ids := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			ids <- call(w, func() int { started.Done(); <-release; return goid() })
		})
	}
	started.Wait() // all n run at once: none waits for another's worker
	close(release)
	wg.Wait()
	close(ids)
	seen := map[int]bool{}
	for id := range ids {
		seen[id] = true
	}
	if len(seen) != n {
		t.Fatalf("%d calls at once ran on %d goroutines", n, len(seen))
	}
}

func TestWorkers_IdleWorkerExits(t *testing.T) {
	w := newWorkers(10 * time.Millisecond)
	first := call(w, goid)
	waitFor(t, "the idle worker to exit", func() bool { return w.live.Load() == 0 })
	if got := call(w, goid); got == first {
		t.Fatalf("a call after the idle time ran on the exited worker %d", got)
	}
}

func TestWorkers_PanicIsRaisedOnTheCaller(t *testing.T) {
	w := newWorkers(time.Minute)
	var got any
	func() {
		defer func() { got = recover() }()
		call(w, func() int { panic("decoder exploded") })
	}()
	s, _ := got.(string)
	if !strings.Contains(s, "decoder exploded") || !strings.Contains(s, "[worker stack]") {
		t.Fatalf("recovered %q; want the panic value and the worker's stack", got)
	}
	// The worker survived its panic's recovery and takes calls again.
	if v := call(w, func() int { return 7 }); v != 7 {
		t.Fatalf("call after a panic = %d", v)
	}
}

// nopCall does nothing on a worker.
type nopCall struct{ callState }

func (c *nopCall) run() { defer func() { c.finish(recover()) }() }

// Handing a call to a waiting worker allocates nothing when the call is
// reused (as Dimensions reuses its calls from a pool): an image's
// goroutine that only waits for its download never has to help the
// collector mark.
func TestWorkers_ReusedCallAllocatesNothing(t *testing.T) {
	w := newWorkers(time.Minute)
	c := &nopCall{callState: newCallState()}
	allocs := testing.AllocsPerRun(100, func() {
		waitFor(t, "a worker to wait for a call", func() bool { return w.waiting.Load() >= 1 || w.live.Load() == 0 })
		w.do(c)
		c.wait()
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per call, want 0", allocs)
	}
}
