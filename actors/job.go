package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nuid"

	"github.com/retailpulse/retailpulse/events"
)

// jobMsg is the job actor's mailbox message; the set is closed.
type jobMsg interface{ jobMsg() }

// imageDone reports one image's terminal outcome. Image goroutines take
// it from imageDones and the job actor gives it back once it has made the
// outcome's event: an image allocates nothing to report (see
// storeActor.process).
type imageDone struct {
	ref     events.ImageRef
	storeID string
	url     string
	width   int
	height  int
	reason  string // failure class, "" on success
	at      time.Time
	took    time.Duration
}

var imageDones = sync.Pool{New: func() any { return new(imageDone) }}

// event returns the outcome's event: *events.ImageProcessed, or
// *events.ImageFailed when reason is set.
func (m *imageDone) event() events.Event {
	if m.reason != "" {
		return &events.ImageFailed{ImageRef: m.ref, StoreID: m.storeID, URL: m.url, Reason: m.reason, At: m.at}
	}
	return &events.ImageProcessed{ImageRef: m.ref, StoreID: m.storeID, Width: m.width, Height: m.height, Perimeter: 2 * (m.width + m.height), At: m.at}
}

// storeDone reports that a store actor returned.
type storeDone struct {
	storeID string
	err     error
}

func (*imageDone) jobMsg() {}
func (storeDone) jobMsg()  {}

type task struct {
	ref events.ImageRef
	url string
}

// jobActor owns one job for one delivery. It is the only writer of the
// job's events while its fence holds: every append is fenced on the job's
// last message, so a stale owner's first write fails and it stops.
type jobActor struct {
	e        *Engine
	d        Delivery
	id       uint64
	token    string // unique to this ownership; part of every msg id
	st       *events.JobState
	sub      *events.JobSubmitted
	fence    uint64
	mailbox  chan jobMsg
	failedBy map[string]int // failed images of the job by reason, as recorded in the log
	// settledDelivery: the delivery was acked, released or terminated, or
	// must not be touched (the fence was lost). Read by the engine after Run.
	settledDelivery bool
}

func newJobActor(e *Engine, d Delivery) *jobActor {
	return &jobActor{e: e, d: d, id: d.JobID(), token: nuid.Next(), mailbox: make(chan jobMsg, e.cfg.MailboxSize)}
}

// loadTimeout bounds loading a job's history, retries included.
const loadTimeout = 30 * time.Second

// startTries bounds how often an owner reloads the job when its first
// (JobStarted) append finds the job moved since it was read.
const startTries = 3

// Run owns the job until it completes (then acks the delivery), the owner
// loses the fence (returns without ack, write or hand-back), or stopping
// closes (lets in-flight images finish, appends them, releases the
// delivery). hard ends all work at once: downloads are cancelled and what
// finished is appended. A delivery that cannot be loaded is never acked:
// it is handed back with a delay; only one proven to name no job is
// terminated.
func (a *jobActor) Run(hard context.Context, stopping <-chan struct{}) error {
	cfg := &a.e.cfg
	log := cfg.Logger.With("job_id", a.id)
	if err := a.load(hard); err != nil {
		if errors.Is(err, events.ErrJobNotFound) {
			log.Error("delivery names no runnable job; removing it from the queue", "err", err)
			a.settledDelivery = true
			return a.confirm(hard, a.d.Term)
		}
		return a.handBack(hard, retryDelay, fmt.Errorf("load: %w", err))
	}
	for try := 1; ; try++ {
		if a.st.Completed {
			log.Info("job already completed; acking", "status", a.st.Status)
			a.settledDelivery = true
			return a.confirm(hard, a.d.Ack)
		}
		// Only deliveries that recorded nothing count against MaxAttempts: a
		// job handed back gracefully, or one crashing its owners while still
		// making progress, is never abandoned for it.
		if a.st.Stalled >= cfg.MaxAttempts {
			return a.abandon(hard, a.st.Stalled)
		}
		err := a.append(hard, events.KindStarted, &events.JobStarted{Attempt: a.d.Attempts(), Owner: cfg.Owner, At: time.Now().UTC()})
		if err == nil {
			break
		}
		if !errors.Is(err, events.ErrFenced) || try == startTries {
			return a.lost(hard, err)
		}
		// The job moved after we read it: a previous owner that has not
		// noticed its redelivery yet. Read again and take over; its next
		// append fails.
		log.Info("job moved since it was read; reloading", "try", try)
		if err := a.load(hard); err != nil {
			return a.handBack(hard, retryDelay, fmt.Errorf("reload: %w", err))
		}
	}
	cfg.Observer.JobActive(1)
	defer cfg.Observer.JobActive(-1)
	log.Info("job started", "attempt", a.d.Attempts(), "images", a.st.Images, "unsettled", a.st.Unsettled())
	return a.process(hard, stopping)
}

// retryDelay is how long a job handed back after a failure waits before it
// is delivered again.
const retryDelay = 5 * time.Second

// load reads the job's submission and history and folds them.
func (a *jobActor) load(hard context.Context) error {
	ctx, cancel := context.WithTimeout(hard, loadTimeout)
	defer cancel()
	sub, err := a.d.Submission(ctx)
	if err != nil {
		return err
	}
	h, err := a.e.cfg.Log.History(ctx, a.id, sub)
	if err != nil {
		return err
	}
	a.sub = sub
	a.st = events.NewJobState(a.id, sub)
	a.failedBy = map[string]int{}
	for _, r := range h.Records {
		for _, ev := range r.Events {
			changed, err := a.st.Apply(ev)
			if err != nil {
				a.e.cfg.Logger.Error("ignoring event", "job_id", a.id, "seq", r.Seq, "err", err)
			}
			if changed {
				a.countFailure(ev)
			}
		}
	}
	a.fence = h.LastSeq
	return nil
}

func (a *jobActor) process(hard context.Context, stopping <-chan struct{}) error {
	cfg := &a.e.cfg
	log := cfg.Logger.With("job_id", a.id)
	var pending []events.Event
	byStore := map[string][]task{}
	var order []string
	now := time.Now().UTC()
	for v, visit := range a.sub.Visits {
		known := cfg.KnownStore(visit.StoreID)
		for i, url := range visit.ImageURLs {
			ref := events.ImageRef{Visit: v, Index: i}
			if a.st.Settled(ref) {
				continue
			}
			if !known {
				pending = append(pending, &events.ImageFailed{ImageRef: ref, StoreID: visit.StoreID, URL: url, Reason: events.ReasonUnknownStore, At: now})
				cfg.Observer.ImageFailed(events.ReasonUnknownStore, 0)
				continue
			}
			if _, ok := byStore[visit.StoreID]; !ok {
				order = append(order, visit.StoreID)
			}
			byStore[visit.StoreID] = append(byStore[visit.StoreID], task{ref: ref, url: url})
		}
	}

	jobCtx, cancel := context.WithCancel(hard)
	defer cancel()
	// gone closes when process returns; by then a normal return has read
	// every storeDone, so only a panic leaves store actors unread.
	gone := make(chan struct{})
	defer close(gone)
	running := 0
	for _, storeID := range order {
		s := &storeActor{e: a.e, jobID: a.id, storeID: storeID, tasks: byStore[storeID], out: a.mailbox, stopping: stopping}
		running++
		go func() {
			err := guard("store "+storeID, func() error { return s.Run(jobCtx) })
			select {
			case a.mailbox <- storeDone{storeID: storeID, err: err}:
			case <-gone:
			}
		}()
	}
	// drain waits for the store actors after the job is lost or done.
	drain := func() {
		cancel()
		for running > 0 {
			if _, ok := (<-a.mailbox).(storeDone); ok {
				running--
			}
		}
	}

	heartbeat := time.NewTicker(cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		for len(pending) > 0 {
			n := min(len(pending), cfg.MaxBatch)
			if err := a.append(hard, events.KindImages, pending[:n]...); err != nil {
				drain()
				return a.lost(hard, err)
			}
			pending = pending[n:]
		}
		if a.st.Unsettled() == 0 {
			drain()
			return a.complete(hard)
		}
		if running == 0 {
			// Every store actor returned with images unsettled: we are
			// stopping, or an actor failed. Hand the job back; the next
			// owner redoes only what is unsettled.
			delay := 5 * time.Second
			select {
			case <-stopping:
				delay = 0
			default:
			}
			log.Info("job handed back", "unsettled", a.st.Unsettled())
			return a.handBack(hard, delay, nil)
		}
		select {
		case m := <-a.mailbox:
			pending = a.receive(m, pending, &running, log)
			pending = a.gather(pending, &running, log)
		case <-heartbeat.C:
			if err := a.d.InProgress(); err != nil {
				log.Warn("heartbeat", "err", err)
			}
		}
	}
}

// gather collects more outcomes for the next append: for up to the
// engine's linger (BatchLinger, longer under AppendRate) after the first,
// or until MaxBatch are pending or every store actor has returned. Each
// append is a serial fsync in the log, so fewer, larger appends leave room
// for other jobs and for submissions.
func (a *jobActor) gather(pending []events.Event, running *int, log *slog.Logger) []events.Event {
	cfg := &a.e.cfg
	var deadline <-chan time.Time
	if linger := a.e.linger(); linger > 0 {
		t := time.NewTimer(linger)
		defer t.Stop()
		deadline = t.C
	}
	for len(pending) < cfg.MaxBatch && *running > 0 {
		select {
		case m := <-a.mailbox:
			pending = a.receive(m, pending, running, log)
			continue
		default:
		}
		if deadline == nil {
			return pending
		}
		select {
		case m := <-a.mailbox:
			pending = a.receive(m, pending, running, log)
		case <-deadline:
			return pending
		}
	}
	return pending
}

// maxLinger bounds the linger AppendRate asks for, so a job's progress
// shows at least this often however many jobs run.
const maxLinger = time.Second

// linger is how long a job actor gathers outcomes now: BatchLinger, or
// longer while so many jobs run that their appends together would exceed
// AppendRate.
func (e *Engine) linger() time.Duration {
	d := e.cfg.BatchLinger
	if e.cfg.AppendRate > 0 {
		share := time.Duration(e.active.Load()) * time.Second / time.Duration(e.cfg.AppendRate)
		d = max(d, min(share, maxLinger))
	}
	return d
}

// receive handles one mailbox message: an outcome joins pending, a
// returned store actor decrements running.
func (a *jobActor) receive(m jobMsg, pending []events.Event, running *int, log *slog.Logger) []events.Event {
	obs := a.e.cfg.Observer
	switch m := m.(type) {
	case *imageDone:
		if m.reason == "" {
			obs.ImageProcessed(m.took)
		} else {
			obs.ImageFailed(m.reason, m.took)
		}
		pending = append(pending, m.event())
		*m = imageDone{}
		imageDones.Put(m)
		return pending
	case storeDone:
		*running--
		if m.err != nil {
			log.Error("store actor failed", "store_id", m.storeID, "err", m.err)
		}
	}
	return pending
}

// append stores evs fenced on the job's last message and folds them into
// the local state. Appends run detached from ctx cancellation (bounded by
// their own timeout) so work that finished is recorded during shutdown; a
// full or unavailable log is retried, keeping the delivery alive, until
// the write lands or hard ends.
func (a *jobActor) append(hard context.Context, kind string, evs ...events.Event) error {
	cfg := &a.e.cfg
	msgID := a.token + "/" + strconv.FormatUint(a.fence, 10)
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(hard), 30*time.Second)
		seq, err := cfg.Log.Append(ctx, a.id, kind, a.fence, msgID, evs...)
		cancel()
		if err == nil {
			cfg.Observer.Append(kind, len(evs), time.Since(start))
			a.fence = seq
			for _, ev := range evs {
				if changed, _ := a.st.Apply(ev); changed {
					a.countFailure(ev)
				}
			}
			return nil
		}
		retryable := errors.Is(err, events.ErrStorageFull) || errors.Is(err, events.ErrUnavailable)
		if !retryable || hard.Err() != nil {
			return err
		}
		cfg.Logger.Warn("event log cannot take the write; retrying", "job_id", a.id, "err", err)
		select {
		case <-hard.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
		_ = a.d.InProgress()
	}
}

// countFailure adds a failed image's reason to failedBy; call it for
// events the fold applied.
func (a *jobActor) countFailure(ev events.Event) {
	if f, ok := ev.(*events.ImageFailed); ok {
		a.failedBy[f.Reason]++
	}
}

// failureAttrs returns failedBy as a log group, reasons sorted.
func (a *jobActor) failureAttrs() slog.Attr {
	reasons := slices.Sorted(maps.Keys(a.failedBy))
	attrs := make([]any, 0, len(reasons))
	for _, r := range reasons {
		attrs = append(attrs, slog.Int(r, a.failedBy[r]))
	}
	return slog.Group("failed_by_reason", attrs...)
}

// lost handles a failed append: a fenced owner stops without ack, write or
// hand-back (the job belongs to another owner now); anything else hands
// the job back.
func (a *jobActor) lost(hard context.Context, err error) error {
	if errors.Is(err, events.ErrFenced) {
		a.settledDelivery = true
		a.e.cfg.Logger.Warn("job taken over by another owner; stopping", "job_id", a.id)
		return nil
	}
	return a.handBack(hard, retryDelay, err)
}

// handBack releases the delivery for redelivery after delay, and returns
// cause. An owner whose fence no longer holds hands nothing back: its
// delivery may have been superseded, and a release would redeliver the job
// its successor is running.
func (a *jobActor) handBack(hard context.Context, delay time.Duration, cause error) error {
	a.settledDelivery = true
	log := a.e.cfg.Logger.With("job_id", a.id)
	if a.st != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(hard), 10*time.Second)
		holds, err := a.e.cfg.Log.FenceHolds(ctx, a.id, a.fence)
		cancel()
		if err == nil && !holds {
			log.Warn("job moved on under another owner; not handing it back")
			return cause
		}
	}
	if err := a.confirm(hard, func(ctx context.Context) error { return a.d.Release(ctx, delay) }); err != nil {
		log.Warn("hand-back not confirmed; the job returns after the ack wait", "err", err)
	}
	return cause
}

// confirm runs an acknowledgement of the delivery (ack, release, term)
// detached from cancellation, bounded in time.
func (a *jobActor) confirm(hard context.Context, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(hard), 15*time.Second)
	defer cancel()
	return fn(ctx)
}

func (a *jobActor) complete(hard context.Context) error {
	status, errs := a.st.Outcome()
	ev := &events.JobCompleted{Status: status, Errors: errs, Processed: a.st.Processed, Failed: a.st.Failed, At: time.Now().UTC()}
	if err := a.append(hard, events.KindCompleted, ev); err != nil {
		return a.lost(hard, err)
	}
	a.e.cfg.Observer.JobFinished(string(status))
	a.e.cfg.Logger.Info("job completed", "job_id", a.id, "status", status, "processed", a.st.Processed, "failed", a.st.Failed, a.failureAttrs())
	a.settledDelivery = true
	return a.confirm(hard, a.d.Ack)
}

// abandon completes a job whose last `stalled` owners all stopped without
// recording an outcome as failed, naming every store with unsettled images.
func (a *jobActor) abandon(hard context.Context, stalled int) error {
	_, errs := a.st.Outcome()
	seen := map[string]bool{}
	for _, e := range errs {
		seen[e.StoreID] = true
	}
	msg := fmt.Sprintf("job abandoned after %d delivery attempts without progress", stalled)
	for v, visit := range a.sub.Visits {
		for i := range visit.ImageURLs {
			if !a.st.Settled(events.ImageRef{Visit: v, Index: i}) && !seen[visit.StoreID] {
				seen[visit.StoreID] = true
				errs = append(errs, events.StoreError{StoreID: visit.StoreID, Error: msg})
			}
		}
	}
	ev := &events.JobCompleted{Status: events.StatusFailed, Errors: errs, Processed: a.st.Processed, Failed: a.st.Failed, At: time.Now().UTC()}
	if err := a.append(hard, events.KindCompleted, ev); err != nil {
		return a.lost(hard, err)
	}
	a.e.cfg.Observer.JobFinished(string(events.StatusFailed))
	a.e.cfg.Logger.Error("job abandoned", "job_id", a.id, "stalled_attempts", stalled)
	a.settledDelivery = true
	return a.confirm(hard, a.d.Ack)
}
