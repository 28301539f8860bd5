package actors

import (
	"context"
	"slices"
	"sync"
)

// gate is a counting semaphore whose limit may change while it is in use.
// Waiters are served first come, first served. Lowering the limit takes
// effect as holders release: no holder is interrupted. Safe for concurrent
// use.
type gate struct {
	mu      sync.Mutex
	limit   int
	held    int
	waiters []chan struct{} // FIFO from head on; a value sent on one grants its waiter a slot
	head    int
	// free are waiters' channels (buffered, empty) kept for the next ones:
	// waiting allocates nothing (store actors wait for slots all the time
	// while the engine is saturated, and a goroutine that allocates while
	// the collector marks must help it).
	free []chan struct{}
}

func newGate(limit int) *gate { return &gate{limit: max(1, limit)} }

// acquire waits for a slot and reports whether it holds one. It returns
// false, holding nothing, once stopping closes or ctx ends; when a slot
// arrives together with stopping, stopping wins and the slot is given back.
func (g *gate) acquire(ctx context.Context, stopping <-chan struct{}) bool {
	g.mu.Lock()
	if g.held < g.limit && g.queued() == 0 {
		g.held++
		g.mu.Unlock()
		return g.keep(stopping)
	}
	var ch chan struct{}
	if n := len(g.free); n > 0 {
		ch, g.free = g.free[n-1], g.free[:n-1]
	} else {
		ch = make(chan struct{}, 1)
	}
	if g.head > 0 && len(g.waiters) == cap(g.waiters) { // reuse the room before head
		n := copy(g.waiters, g.waiters[g.head:])
		clear(g.waiters[n:])
		g.waiters, g.head = g.waiters[:n], 0
	}
	g.waiters = append(g.waiters, ch)
	g.mu.Unlock()
	select {
	case <-ch:
		g.reuse(ch)
		return g.keep(stopping)
	case <-stopping:
	case <-ctx.Done():
	}
	g.mu.Lock()
	if i := slices.Index(g.waiters[g.head:], ch); i >= 0 { // not granted: leave the queue
		g.waiters = slices.Delete(g.waiters, g.head+i, g.head+i+1)
		g.free = append(g.free, ch)
		g.mu.Unlock()
		return false
	}
	g.mu.Unlock()
	<-ch // granted as we gave up (the grant was sent before it left the queue)
	g.reuse(ch)
	g.release()
	return false
}

// reuse keeps a waiter's emptied channel for the next waiter.
func (g *gate) reuse(ch chan struct{}) {
	g.mu.Lock()
	g.free = append(g.free, ch)
	g.mu.Unlock()
}

// keep returns a just-acquired slot if stopping has closed.
func (g *gate) keep(stopping <-chan struct{}) bool {
	select {
	case <-stopping:
		g.release()
		return false
	default:
		return true
	}
}

// release gives a slot back, handing it to the longest waiter while the
// limit allows.
func (g *gate) release() {
	g.mu.Lock()
	g.held--
	g.grantLocked()
	g.mu.Unlock()
}

// setLimit changes the limit (at least 1). Raising it admits waiters at
// once; lowering it admits none until enough holders have released.
func (g *gate) setLimit(n int) {
	g.mu.Lock()
	g.limit = max(1, n)
	g.grantLocked()
	g.mu.Unlock()
}

func (g *gate) grantLocked() {
	for g.held < g.limit && g.queued() > 0 {
		ch := g.waiters[g.head]
		g.waiters[g.head] = nil
		if g.head++; g.head == len(g.waiters) { // empty: start again at the front
			g.waiters, g.head = g.waiters[:0], 0
		}
		g.held++
		ch <- struct{}{} // buffered and empty: never blocks
	}
}

// queued returns the number of waiters; g.mu is held.
func (g *gate) queued() int { return len(g.waiters) - g.head }

// state returns the limit, the slots held and the number of waiters.
func (g *gate) state() (limit, held, waiting int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.limit, g.held, g.queued()
}
