package imagefetch

import (
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// workers runs calls on goroutines kept from one call to the next. A
// goroutine's stack grows to what its calls need and stays grown, whereas
// a goroutine per image starts small and copies its stack while growing
// it in net/http's round trip: about 6% of the service's CPU at thousands
// of images a second. A call goes to an idle worker if one is waiting,
// else to a new one, so workers never queue calls and there are at most as
// many as calls at once; a worker idle for idle exits. Safe for concurrent
// use.
type workers struct {
	calls   chan task // unbuffered: a send succeeds only to a waiting worker
	idle    time.Duration
	live    atomic.Int64 // workers running
	waiting atomic.Int64 // workers waiting for a call
}

// workerIdle is how long an idle worker waits for another call.
const workerIdle = 5 * time.Second

func newWorkers(idle time.Duration) *workers {
	return &workers{calls: make(chan task), idle: idle}
}

// A task is a call a worker runs. It embeds a callState: its run ends
// with defer func() { c.finish(recover()) }(), and its caller waits with
// wait. A task of a pool (dimsCall) makes a call allocate nothing.
type task interface{ run() }

// callState is a task's end: the panic its run recovered, and the signal
// that it has returned.
type callState struct {
	panicked any
	done     chan struct{} // buffered (1): the worker never waits for the caller
}

func newCallState() callState { return callState{done: make(chan struct{}, 1)} }

// finish ends a task's run; p is recover()'s value in the run's deferred
// call. A panic keeps the worker's stack in its value.
func (c *callState) finish(p any) {
	if p != nil {
		c.panicked = fmt.Sprintf("%v\n[worker stack]\n%s", p, debug.Stack())
	}
	c.done <- struct{}{}
}

// wait waits for the task's run to return. A panic in it is raised again
// on the caller's goroutine, so the caller's recovery sees it as its own.
func (c *callState) wait() {
	<-c.done
	if p := c.panicked; p != nil {
		c.panicked = nil
		panic(p)
	}
}

// do runs t on a worker and returns at once.
func (w *workers) do(t task) {
	select {
	case w.calls <- t:
	default:
		go w.loop(t)
	}
}

func (w *workers) loop(t task) {
	w.live.Add(1)
	defer w.live.Add(-1)
	t.run()
	timer := time.NewTimer(w.idle)
	defer timer.Stop()
	for {
		w.waiting.Add(1)
		select {
		case t := <-w.calls:
			w.waiting.Add(-1)
			t.run()
			timer.Reset(w.idle)
		case <-timer.C:
			w.waiting.Add(-1)
			return
		}
	}
}
