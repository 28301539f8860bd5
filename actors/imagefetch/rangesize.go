package imagefetch

import (
	"math/bits"
	"sync"
)

// rangeSizer chooses the size of an image's first ranged request from
// where the headers of the same host's recent images ended: large enough
// for all of them (one request usually suffices), and no larger, since
// what is read past the header (and drained so the connection is reused)
// is wasted on both sides. Before a host's first image, and at most, it
// is Config.RangeBytes. A header longer than the size asks for more, as
// always, and raises the size for the next images.
//
// Safe for concurrent use. Memory: at most maxRangeHosts hosts, each the
// ends of its last rangeHistory images.
type rangeSizer struct {
	initial int64 // Config.RangeBytes: the first size of a host, and the largest

	mu    sync.Mutex
	hosts map[string]*headerEnds
}

// rangeHistory is how many recent header ends of a host count: one image
// with a long header keeps the size up for this many images after it.
const rangeHistory = 64

// maxRangeHosts bounds the hosts remembered; past it an arbitrary one is
// forgotten (and starts again from Config.RangeBytes).
const maxRangeHosts = 4096

// minRangeBytes is the smallest first range: a header that ends early
// still gets a request of this size.
const minRangeBytes = 4 << 10

type headerEnds struct {
	ends [rangeHistory]int64
	n    int // ends recorded, at most rangeHistory
	next int // where the next end goes
}

func newRangeSizer(initial int64) *rangeSizer {
	return &rangeSizer{initial: initial, hosts: map[string]*headerEnds{}}
}

// first returns the size of the first range to ask of host.
func (r *rangeSizer) first(host string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.hosts[host]
	if h == nil || h.n == 0 {
		return r.initial
	}
	var longest int64
	for _, e := range h.ends[:h.n] {
		longest = max(longest, e)
	}
	return rangeFor(longest, r.initial)
}

// rangeFor is the first range for headers ending at most at end: a
// quarter more, rounded up to a power of two, within [minRangeBytes,
// largest].
func rangeFor(end, largest int64) int64 {
	want := end + end/4 + 1
	size := int64(1) << bits.Len64(uint64(want-1))
	return min(max(size, minRangeBytes), largest)
}

// observe records that an image of host had its header end at end (the
// bytes the decoder consumed).
func (r *rangeSizer) observe(host string, end int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.hosts[host]
	if h == nil {
		if len(r.hosts) >= maxRangeHosts {
			for k := range r.hosts {
				delete(r.hosts, k)
				break
			}
		}
		h = &headerEnds{}
		r.hosts[host] = h
	}
	h.ends[h.next] = end
	h.next = (h.next + 1) % rangeHistory
	h.n = min(h.n+1, rangeHistory)
}
