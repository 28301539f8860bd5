package actors

import (
	"context"
	"math"
	"runtime/metrics"
	"time"
)

// Adaptive image slots. Images are cheap to hold while they pause and
// costly while they download and are recorded: a fixed number of slots is
// either too few for a quiet machine or so many that a busy one queues
// every goroutine behind image work, the API's included. The governor
// sets the engine's image slots from the Go scheduler's latency, the time
// runnable goroutines wait for a CPU: additive increase while that stays
// under the target and images are waiting for slots, multiplicative
// decrease as soon as it goes over.

// governor holds the image-slot limit between min and max. It is used by
// one goroutine (Engine.govern).
type governor struct {
	min, max int
	target   time.Duration
	step     int // additive increase per interval
}

// Adaptive defaults.
const (
	defaultGovernInterval = 100 * time.Millisecond
	// minSchedSamples is the fewest scheduling events in an interval that
	// give a p99 worth acting on; with fewer the machine is idle.
	minSchedSamples = 64
	decreaseFactor  = 0.75
)

func newGovernor(minSlots, maxSlots int, target time.Duration) governor {
	return governor{min: minSlots, max: maxSlots, target: target, step: max(1, maxSlots/32)}
}

// next returns the limit for the next interval given the current one, the
// scheduler latency p99 over the last interval, how many scheduling events
// it covers, and whether images waited for a slot.
func (g governor) next(limit int, p99 time.Duration, samples uint64, waiting bool) int {
	switch {
	case samples >= minSchedSamples && p99 > g.target:
		limit = int(float64(limit) * decreaseFactor)
	case waiting:
		limit += g.step
	}
	return min(g.max, max(g.min, limit))
}

// schedLatency reads the Go scheduler's latency histogram and returns the
// p99 of the events since its previous call and their count. Not safe for
// concurrent use.
type schedLatency struct {
	sample []metrics.Sample
	prev   []uint64
}

const schedLatencyMetric = "/sched/latencies:seconds"

func newSchedLatency() *schedLatency {
	s := &schedLatency{sample: []metrics.Sample{{Name: schedLatencyMetric}}}
	s.read()
	return s
}

func (s *schedLatency) read() (p99 time.Duration, n uint64) {
	metrics.Read(s.sample)
	if s.sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0, 0 // not provided by this runtime
	}
	h := s.sample[0].Value.Float64Histogram()
	if s.prev == nil {
		s.prev = make([]uint64, len(h.Counts))
	}
	delta := make([]uint64, len(h.Counts))
	for i, c := range h.Counts {
		delta[i] = c - s.prev[i]
		n += delta[i]
	}
	copy(s.prev, h.Counts)
	return quantile(h.Buckets, delta, n, 0.99), n
}

// quantile returns the upper bound of the bucket holding quantile q of n
// events distributed as counts over buckets (len(buckets) ==
// len(counts)+1); an infinite bound is reported as the bucket's lower one.
func quantile(buckets []float64, counts []uint64, n uint64, q float64) time.Duration {
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	var seen uint64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			b := buckets[i+1]
			if math.IsInf(b, 1) {
				b = buckets[i]
			}
			return time.Duration(b * float64(time.Second))
		}
	}
	return time.Duration(buckets[len(buckets)-1] * float64(time.Second))
}

// govern adjusts the image slots every interval until ctx ends, reporting
// each limit and p99 to the observer. read is the latency source.
func (e *Engine) govern(ctx context.Context, interval time.Duration, read func() (time.Duration, uint64)) {
	g := newGovernor(e.cfg.MinImageSlots, e.cfg.ImageSlots, e.cfg.SchedLatencyTarget)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p99, n := read()
		limit, _, waiting := e.imageSlots.state()
		next := g.next(limit, p99, n, waiting > 0)
		if next != limit {
			e.imageSlots.setLimit(next)
		}
		e.cfg.Observer.ImageSlots(next, p99)
	}
}
