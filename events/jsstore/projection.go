package jsstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/retailpulse/retailpulse/events"
)

// Projection keeps an events.ReadModel up to date by following the whole
// stream with an ordered consumer. Restart = replay from the start (or from
// the model's sequence when it was restored from a snapshot).
type Projection struct {
	eventLog *EventLog
	model    *events.ReadModel
	log      *slog.Logger
	onApply  func(seq uint64, res events.ApplyResult)
	caughtUp atomic.Bool
	// ReadWait bounds how long Status waits for a job submitted elsewhere
	// to reach this projection before answering "ongoing" from the log.
	ReadWait time.Duration
	// StallTimeout: a reader that delivers nothing for this long while the
	// log holds more is replaced. 0 = never. Default 5s; set before Run.
	StallTimeout time.Duration

	snapshots     *Snapshots
	snapshotEvery uint64 // messages applied between snapshots
	sinceSnapshot uint64 // owned by the Run goroutine
	saving        atomic.Bool
	background    sync.WaitGroup // snapshot saves started by Run
}

// EnableSnapshots makes Run save a snapshot after catching up (if it
// replayed at least every messages) and then every `every` messages. Call
// before Run.
func (p *Projection) EnableSnapshots(sn *Snapshots, every uint64) {
	p.snapshots, p.snapshotEvery = sn, max(every, 1)
}

// SaveSnapshot saves a snapshot now (e.g. at shutdown). No-op without
// snapshots.
func (p *Projection) SaveSnapshot(ctx context.Context) error {
	if p.snapshots == nil {
		return nil
	}
	start := time.Now()
	seq, err := p.snapshots.Save(ctx, p.model)
	if err != nil {
		return err
	}
	p.log.Info("snapshot saved", "seq", seq, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// maybeSnapshot starts a background save when enough has been applied
// since the last one; at most one save runs at a time.
func (p *Projection) maybeSnapshot(ctx context.Context) {
	if p.snapshots == nil || !p.caughtUp.Load() || p.sinceSnapshot < p.snapshotEvery || !p.saving.CompareAndSwap(false, true) {
		return
	}
	p.sinceSnapshot = 0
	p.background.Add(1)
	go func() {
		defer p.background.Done()
		defer p.saving.Store(false)
		if err := p.SaveSnapshot(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("snapshot not saved", "err", err)
		}
	}()
}

// NewProjection returns a projection into model. onApply (may be nil) is
// called after each message, on the projection's goroutine.
func NewProjection(eventLog *EventLog, model *events.ReadModel, log *slog.Logger, onApply func(uint64, events.ApplyResult)) *Projection {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Projection{eventLog: eventLog, model: model, log: log, onApply: onApply, ReadWait: 2 * time.Second, StallTimeout: 5 * time.Second}
}

// Model returns the read model.
func (p *Projection) Model() *events.ReadModel { return p.model }

// CaughtUp reports whether the projection has applied everything stored
// before it started.
func (p *Projection) CaughtUp() bool { return p.caughtUp.Load() }

// Run follows the stream from the model's sequence until ctx ends,
// resubscribing after errors. Background snapshot saves stop with ctx; Run
// returns only after they have.
func (p *Projection) Run(ctx context.Context) error {
	defer p.background.Wait()
	start := time.Now()
	apply := func(seq uint64, subject string, b events.Batch, err error) {
		p.apply(seq, subject, b, err)
		p.sinceSnapshot++
		p.maybeSnapshot(ctx)
	}
	for {
		fctx, stalled := context.WithCancelCause(ctx)
		p.background.Add(1)
		go func() {
			defer p.background.Done()
			p.watch(fctx, stalled)
		}()
		err := p.eventLog.Follow(fctx, p.model.LastSeq(), apply, func() {
			if !p.caughtUp.Swap(true) {
				p.log.Info("projection caught up", "seq", p.model.LastSeq(), "replayed", p.sinceSnapshot, "took", time.Since(start).Round(time.Millisecond))
				p.maybeSnapshot(ctx)
			}
		})
		stalled(nil)
		if ctx.Err() != nil {
			return nil
		}
		if cause := context.Cause(fctx); errors.Is(cause, errStalled) {
			err = cause
		}
		p.log.Warn("projection interrupted; resubscribing", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// errStalled: the log has messages the projection's reader has not
// delivered for StallTimeout.
var errStalled = errors.New("projection stalled behind the log")

// watch ends a Follow (through stop) that makes no progress for
// StallTimeout while the stream leader reports messages beyond it: a
// reader whose server died or whose consumer was lost, which the client
// library does not always notice. Returns when ctx ends.
func (p *Projection) watch(ctx context.Context, stop context.CancelCauseFunc) {
	if p.StallTimeout <= 0 {
		return
	}
	t := time.NewTicker(p.StallTimeout / 4)
	defer t.Stop()
	last, since := p.model.LastSeq(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if seq := p.model.LastSeq(); seq != last {
			last, since = seq, time.Now()
			continue
		}
		if time.Since(since) < p.StallTimeout {
			continue
		}
		ictx, cancel := context.WithTimeout(ctx, p.StallTimeout/4)
		info, err := p.eventLog.Info(ictx)
		cancel()
		if err == nil && info.LastSeq > last {
			stop(fmt.Errorf("%w: applied %d, the log holds %d", errStalled, last, info.LastSeq))
			return
		}
		since = time.Now() // idle, or the log cannot say: look again later
	}
}
func (p *Projection) apply(seq uint64, subject string, b events.Batch, err error) {
	if err != nil {
		p.log.Error("projection: undecodable message", "seq", seq, "subject", subject, "err", err)
		p.model.Skip(seq)
		return
	}
	res, err := p.model.Apply(seq, subject, b)
	if err != nil {
		p.log.Error("projection: message not applied", "seq", seq, "err", err)
	}
	if p.onApply != nil {
		p.onApply(seq, res)
	}
}

// Status returns a job's view. It never answers ErrJobNotFound for a job
// this projection has not reached yet: it checks the log for the
// submission and waits up to ReadWait for the projection, answering
// "ongoing" if the projection is still behind (read-your-writes across
// instances).
func (p *Projection) Status(ctx context.Context, id uint64) (events.JobView, error) {
	if v, ok := p.model.Job(id); ok {
		return v, nil
	}
	if id <= p.model.LastSeq() {
		return events.JobView{}, events.ErrJobNotFound
	}
	sub, err := p.eventLog.Submission(ctx, id)
	if err != nil {
		return events.JobView{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, p.ReadWait)
	defer cancel()
	if err := p.model.WaitFor(wctx, id); err == nil {
		if v, ok := p.model.Job(id); ok {
			return v, nil
		}
	} else if errors.Is(ctx.Err(), context.Canceled) {
		return events.JobView{}, ctx.Err()
	}
	return events.JobView{ID: id, Status: events.StatusOngoing, Images: sub.Images()}, nil
}
