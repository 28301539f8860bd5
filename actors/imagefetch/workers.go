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
	calls   chan func() // unbuffered: a send succeeds only to a waiting worker
	idle    time.Duration
	live    atomic.Int64 // workers running
	waiting atomic.Int64 // workers waiting for a call
}

// workerIdle is how long an idle worker waits for another call.
const workerIdle = 5 * time.Second

func newWorkers(idle time.Duration) *workers {
	return &workers{calls: make(chan func()), idle: idle}
}

// do runs fn on a worker and returns at once.
func (w *workers) do(fn func()) {
	select {
	case w.calls <- fn:
	default:
		go w.loop(fn)
	}
}

func (w *workers) loop(fn func()) {
	w.live.Add(1)
	defer w.live.Add(-1)
	fn()
	t := time.NewTimer(w.idle)
	defer t.Stop()
	for {
		w.waiting.Add(1)
		select {
		case fn := <-w.calls:
			w.waiting.Add(-1)
			fn()
			t.Reset(w.idle)
		case <-t.C:
			w.waiting.Add(-1)
			return
		}
	}
}

// call runs fn on a worker and waits for it. A panic in fn is raised
// again on the caller's goroutine, with the worker's stack in its value,
// so the caller's recovery sees it as its own.
func call[T any](w *workers, fn func() T) T {
	type outcome struct {
		v        T
		panicked any
	}
	done := make(chan outcome, 1)
	w.do(func() {
		var o outcome
		defer func() {
			if p := recover(); p != nil {
				o = outcome{panicked: fmt.Sprintf("%v\n[worker stack]\n%s", p, debug.Stack())}
			}
			done <- o
		}()
		o.v = fn()
	})
	o := <-done
	if o.panicked != nil {
		panic(o.panicked)
	}
	return o.v
}
