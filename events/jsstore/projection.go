package jsstore

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/retailpulse/retailpulse/events"
)

// Projection keeps an events.ReadModel up to date by following the whole
// stream with an ordered consumer. Restart = replay from the start (or from
// the model's sequence when it was restored from a snapshot).
type Projection struct {
	store    *Store
	model    *events.ReadModel
	log      *slog.Logger
	onApply  func(seq uint64, res events.ApplyResult)
	caughtUp atomic.Bool
	// ReadWait bounds how long Status waits for a job submitted elsewhere
	// to reach this projection before answering "ongoing" from the log.
	ReadWait time.Duration
}

// NewProjection returns a projection into model. onApply (may be nil) is
// called after each message, on the projection's goroutine.
func NewProjection(store *Store, model *events.ReadModel, log *slog.Logger, onApply func(uint64, events.ApplyResult)) *Projection {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Projection{store: store, model: model, log: log, onApply: onApply, ReadWait: 2 * time.Second}
}

// Model returns the read model.
func (p *Projection) Model() *events.ReadModel { return p.model }

// CaughtUp reports whether the projection has applied everything stored
// before it started.
func (p *Projection) CaughtUp() bool { return p.caughtUp.Load() }

// Run follows the stream until ctx ends, resubscribing after errors.
func (p *Projection) Run(ctx context.Context) error {
	for {
		err := p.store.Follow(ctx, p.model.LastSeq(), p.apply, func() {
			if !p.caughtUp.Swap(true) {
				p.log.Info("projection caught up", "seq", p.model.LastSeq())
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		p.log.Warn("projection interrupted; resubscribing", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
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
	sub, err := p.store.Submission(ctx, id)
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
