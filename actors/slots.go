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
	waiters []chan struct{} // FIFO; closing one grants its waiter a slot
}

func newGate(limit int) *gate { return &gate{limit: max(1, limit)} }

// acquire waits for a slot and reports whether it holds one. It returns
// false, holding nothing, once stopping closes or ctx ends; when a slot
// arrives together with stopping, stopping wins and the slot is given back.
func (g *gate) acquire(ctx context.Context, stopping <-chan struct{}) bool {
	g.mu.Lock()
	if g.held < g.limit && len(g.waiters) == 0 {
		g.held++
		g.mu.Unlock()
		return g.keep(stopping)
	}
	ch := make(chan struct{})
	g.waiters = append(g.waiters, ch)
	g.mu.Unlock()
	select {
	case <-ch:
		return g.keep(stopping)
	case <-stopping:
	case <-ctx.Done():
	}
	g.mu.Lock()
	if i := slices.Index(g.waiters, ch); i >= 0 { // not granted: leave the queue
		g.waiters = slices.Delete(g.waiters, i, i+1)
		g.mu.Unlock()
		return false
	}
	g.mu.Unlock()
	g.release() // granted as we gave up
	return false
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
	for g.held < g.limit && len(g.waiters) > 0 {
		ch := g.waiters[0]
		g.waiters[0] = nil
		g.waiters = g.waiters[1:]
		g.held++
		close(ch)
	}
}

// state returns the limit, the slots held and the number of waiters.
func (g *gate) state() (limit, held, waiting int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.limit, g.held, len(g.waiters)
}
