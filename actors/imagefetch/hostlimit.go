package imagefetch

import (
	"context"
	"sync"
)

// hostLimiter bounds concurrent requests per host key, so one slow host holds
// at most its own slots and cannot starve the others. A host's semaphore is
// created on first use and dropped when nobody holds or waits for it, so the
// map only ever holds hosts in use.
type hostLimiter struct {
	max int

	mu    sync.Mutex
	hosts map[string]*hostSlots
}

type hostSlots struct {
	slots chan struct{}
	refs  int // holders plus waiters; guarded by hostLimiter.mu
}

func newHostLimiter(max int) *hostLimiter {
	return &hostLimiter{max: max, hosts: make(map[string]*hostSlots)}
}

// acquire waits for a slot for host, or for ctx to end (returning ctx.Err()).
// On success the caller must call release exactly once.
func (l *hostLimiter) acquire(ctx context.Context, host string) (release func(), err error) {
	l.mu.Lock()
	h := l.hosts[host]
	if h == nil {
		h = &hostSlots{slots: make(chan struct{}, l.max)}
		l.hosts[host] = h
	}
	h.refs++
	l.mu.Unlock()

	select {
	case h.slots <- struct{}{}:
		var once sync.Once
		return func() {
			once.Do(func() {
				<-h.slots
				l.unref(host, h)
			})
		}, nil
	case <-ctx.Done():
		l.unref(host, h)
		return nil, ctx.Err()
	}
}

func (l *hostLimiter) unref(host string, h *hostSlots) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h.refs--
	if h.refs == 0 {
		delete(l.hosts, host)
	}
}

// stats reports the number of tracked hosts and the refs of one, for tests.
func (l *hostLimiter) stats(host string) (hosts, refs int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.hosts[host]; h != nil {
		refs = h.refs
	}
	return len(l.hosts), refs
}
