package jsstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/retailpulse/retailpulse/events"
)

// Admission decides whether a new job may be accepted, from a snapshot of
// the stream and the work queue refreshed in the background, so Check does
// no I/O. It refuses:
//   - with events.ErrStorageFull once the stream holds more than
//     (1-Reserve) of its byte limit: the rest is kept for the events of jobs
//     already accepted, so they can finish;
//   - with events.ErrOverloaded once MaxQueued jobs wait for an owner.
//
// Check is safe for concurrent use.
type Admission struct {
	eventLog  *EventLog
	Reserve   float64       // fraction of MaxBytes kept for running jobs; default 0.1
	MaxQueued int           // jobs waiting for an owner; 0 = unbounded
	Interval  time.Duration // refresh interval; default 1s
	// OnRefresh, if set, is called by Run after each refresh with its error
	// (nil on success), so failures are logged and counted. While refreshes
	// fail, Check answers from the last good state.
	OnRefresh func(error)

	state  atomic.Pointer[admissionState]
	queued atomic.Int64 // jobs waiting, as of the last refresh plus those admitted since
}

type admissionState struct {
	bytes, maxBytes uint64
}

// NewAdmission returns an admission controller over store. Call Refresh
// once (or Run) before Check; until then Check admits everything.
func NewAdmission(eventLog *EventLog, maxQueued int) *Admission {
	return &Admission{eventLog: eventLog, Reserve: 0.1, MaxQueued: maxQueued, Interval: time.Second}
}

// Refresh reads the stream and queue state now.
func (a *Admission) Refresh(ctx context.Context) error {
	info, err := a.eventLog.Info(ctx)
	if err != nil {
		return err
	}
	ci, err := a.eventLog.work.Info(ctx)
	if err != nil {
		return fmt.Errorf("queue info: %w", err)
	}
	a.state.Store(&admissionState{bytes: info.Bytes, maxBytes: uint64(max(info.MaxBytes, 0))})
	a.queued.Store(int64(ci.NumPending))
	return nil
}

// Admitted records a job accepted since the last refresh, so a burst of
// submits between refreshes cannot overshoot MaxQueued.
func (a *Admission) Admitted() { a.queued.Add(1) }

// Queued returns the jobs waiting for an owner, as of the last refresh
// plus those admitted since.
func (a *Admission) Queued() int64 { return a.queued.Load() }

// Run refreshes every Interval until ctx ends.
func (a *Admission) Run(ctx context.Context) {
	t := time.NewTicker(a.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			err := a.Refresh(ctx)
			if ctx.Err() == nil && a.OnRefresh != nil {
				a.OnRefresh(err)
			}
		}
	}
}

// Check returns nil if a new job may be accepted now.
func (a *Admission) Check() error {
	s := a.state.Load()
	if s == nil {
		return nil
	}
	if s.maxBytes > 0 && float64(s.bytes) > float64(s.maxBytes)*(1-a.Reserve) {
		return fmt.Errorf("%w: %d of %d bytes used, %.0f%% kept for running jobs", events.ErrStorageFull, s.bytes, s.maxBytes, a.Reserve*100)
	}
	if q := a.queued.Load(); a.MaxQueued > 0 && q >= int64(a.MaxQueued) {
		return fmt.Errorf("%w: %d jobs waiting for an owner", events.ErrOverloaded, q)
	}
	return nil
}
