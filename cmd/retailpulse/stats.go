package main

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/httpapi"
	"github.com/retailpulse/retailpulse/metrics"
)

// The dashboard's statistics (httpapi.Stats): images settled per interval
// over the last minutes and their failures by reason, counted from every
// message of the log as the event streams' shared tail reads it (so the
// whole cluster's work, from this instance's start), and the unfinished
// jobs, from the read model and the work queue.

// Defaults of activity: 2-second samples over 5 minutes.
const (
	statsInterval = 2 * time.Second
	statsSamples  = 150
)

// activity counts image outcomes per interval in a ring of samples. Safe
// for concurrent use.
type activity struct {
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	buckets []activityBucket // slot % len(buckets)
}

type activityBucket struct {
	slot      int64 // the interval's number since the Unix epoch
	processed int
	failed    int
	reasons   map[string]int // bounded: metrics.FailureReason's fixed set
}

func newActivity(interval time.Duration, samples int, now func() time.Time) *activity {
	return &activity{interval: interval, now: now, buckets: make([]activityBucket, samples)}
}

// bucket returns the ring's bucket for slot, emptied if it held an older
// one; a.mu is held.
func (a *activity) bucket(slot int64) *activityBucket {
	b := &a.buckets[int(slot%int64(len(a.buckets)))]
	if b.slot != slot {
		*b = activityBucket{slot: slot}
	}
	return b
}

// observe counts a message's image outcomes in the current interval.
func (a *activity) observe(rec events.Record) {
	var processed, failed int
	var reasons []string
	for _, ev := range rec.Events {
		switch e := ev.(type) {
		case *events.ImageProcessed:
			processed++
		case *events.ImageFailed:
			failed++
			reasons = append(reasons, metrics.FailureReason(e.Reason))
		}
	}
	if processed+failed == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.bucket(a.now().UnixNano() / int64(a.interval))
	b.processed += processed
	b.failed += failed
	for _, r := range reasons {
		if b.reasons == nil {
			b.reasons = map[string]int{}
		}
		b.reasons[r]++
	}
}

// snapshot returns the samples of the window, oldest first (the last one
// still filling), and the window's failures by reason, most first.
func (a *activity) snapshot() ([]httpapi.StatsSample, []httpapi.ReasonCount) {
	a.mu.Lock()
	defer a.mu.Unlock()
	last := a.now().UnixNano() / int64(a.interval)
	samples := make([]httpapi.StatsSample, 0, len(a.buckets))
	reasons := map[string]int{}
	for slot := last - int64(len(a.buckets)) + 1; slot <= last; slot++ {
		s := httpapi.StatsSample{At: time.Unix(0, slot*int64(a.interval)).UTC()}
		if b := a.buckets[int(slot%int64(len(a.buckets)))]; b.slot == slot {
			s.Processed, s.Failed = b.processed, b.failed
			for r, n := range b.reasons {
				reasons[r] += n
			}
		}
		samples = append(samples, s)
	}
	out := make([]httpapi.ReasonCount, 0, len(reasons))
	for r, n := range reasons {
		out = append(out, httpapi.ReasonCount{Reason: r, Count: n})
	}
	slices.SortFunc(out, func(x, y httpapi.ReasonCount) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), cmp.Compare(x.Reason, y.Reason))
	})
	return samples, out
}

// Stats implements httpapi.Stats.
func (a *App) Stats(ctx context.Context) (httpapi.StatsSnapshot, error) {
	samples, reasons := a.activity.snapshot()
	ongoing, err := a.view.CountJobs(ctx, events.StatusOngoing)
	if err != nil {
		return httpapi.StatsSnapshot{}, err
	}
	queued := min(int(max(a.admission.Queued(), 0)), ongoing)
	return httpapi.StatsSnapshot{
		IntervalSeconds:  int(a.activity.interval / time.Second),
		Samples:          samples,
		FailuresByReason: reasons,
		Jobs:             httpapi.JobCounts{Ongoing: ongoing, Queued: queued, Active: ongoing - queued},
	}, nil
}

// JobStores implements httpapi.JobStores from the read model, once it has
// applied the job's submission (as Results).
func (a *App) JobStores(ctx context.Context, id uint64) (events.JobStores, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.SubmitTimeout)
	defer cancel()
	if err := a.projection.SyncJob(ctx, id); err != nil {
		return events.JobStores{}, err
	}
	return a.view.JobStores(ctx, id)
}

var (
	_ httpapi.Stats     = (*App)(nil)
	_ httpapi.JobStores = (*App)(nil)
)
