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

// Sink is the read model a Projection keeps up to date: events.ReadModel
// in memory, or the database of events/sqlview.
type Sink interface {
	// LastSeq returns the last stream sequence applied (0 = none).
	LastSeq() uint64
	// WaitFor blocks until LastSeq() >= seq or ctx ends.
	WaitFor(ctx context.Context, seq uint64) error
	// ApplyMessages applies msgs, in stream order, and advances LastSeq
	// past them; messages at or below LastSeq are ignored. An error means
	// none of msgs was applied and the sink cannot go on.
	ApplyMessages(ctx context.Context, msgs []events.Message) (events.ApplyReport, error)
}

// Applied describes one run of messages the projection applied, for
// metrics: the last sequence it reached, what its events did, and how old
// its last message was when the run committed (the projection's lag).
type Applied struct {
	Seq      uint64
	Messages int
	Result   events.ApplyResult
	Lag      time.Duration
}

// Projection keeps a Sink up to date by following the whole stream with an
// ordered consumer from the sink's last sequence, and answers when a read
// may be served from the sink (Sync, SyncJob).
//
// Two goroutines run it: a reader follows the log and queues decoded
// messages; a writer takes every message queued so far (up to a bound) and
// applies them to the sink as one run, so the sink commits less often the
// further behind it is.
type Projection struct {
	eventLog *EventLog
	sink     Sink
	log      *slog.Logger
	onApply  func(Applied)
	caughtUp atomic.Bool

	// ReadWait bounds how long Sync waits for the sink to reach the log
	// before giving up with events.ErrStale. Default 2s; set before Run.
	ReadWait time.Duration
	// StallTimeout: a reader that delivers nothing for this long while the
	// log holds more is replaced. 0 = never. Default 5s; set before Run.
	StallTimeout time.Duration
	// Linearizable makes SyncJob wait for the log's last sequence on every
	// read, not only until the projection has caught up after its start:
	// needed when other instances share the log and may have answered
	// from further on. Set before Run.
	Linearizable bool

	delivered atomic.Uint64 // last sequence queued for the writer
	target    atomic.Uint64 // the log's last sequence when the reader first caught up; 0 until then
	targetSet atomic.Bool
	started   time.Time
	logEnd    lastSeqFetcher
}

// NewProjection returns a projection into sink. onApply (may be nil) is
// called after each run of messages applied, on the writer goroutine.
func NewProjection(eventLog *EventLog, sink Sink, log *slog.Logger, onApply func(Applied)) *Projection {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Projection{eventLog: eventLog, sink: sink, log: log, onApply: onApply, ReadWait: 2 * time.Second, StallTimeout: 5 * time.Second}
	p.logEnd.fetch = func(ctx context.Context) (uint64, error) {
		info, err := eventLog.Info(ctx)
		return info.LastSeq, err
	}
	return p
}

// Sink returns the sink.
func (p *Projection) Sink() Sink { return p.sink }

// CaughtUp reports whether the sink has applied everything the log held
// when the projection started.
func (p *Projection) CaughtUp() bool { return p.caughtUp.Load() }

// Bounds of one run of messages handed to the sink, and of what waits for
// the writer: a weight is a message's events plus a submission's images.
const (
	runMaxMessages = 1024
	runMaxWeight   = 20_000
	queueMaxWeight = 200_000
)

// Run follows the stream from the sink's last sequence until ctx ends,
// resubscribing after errors, and returns nil then. It returns an error
// when the sink fails to apply (the service cannot serve reads any more).
// Cancelling ctx abandons the run being applied (the sink rolls it back;
// the next start applies it again).
func (p *Projection) Run(ctx context.Context) error {
	p.started = time.Now()
	p.delivered.Store(p.sink.LastSeq())
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	q := newRunQueue(queueMaxWeight)
	var wg sync.WaitGroup
	var writeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.write(ctx, q); err != nil && ctx.Err() == nil {
			writeErr = err
			cancel(err)
		}
	}()
	p.follow(ctx, q)
	wg.Wait()
	return writeErr
}

// follow runs the reader until ctx ends.
func (p *Projection) follow(ctx context.Context, q *runQueue) {
	queue := func(m events.Message) {
		if q.put(ctx, m) == nil {
			p.delivered.Store(m.Seq)
		}
	}
	for {
		fctx, stalled := context.WithCancelCause(ctx)
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			p.watch(fctx, stalled)
		}()
		err := p.eventLog.FollowMessages(fctx, p.delivered.Load(), queue, func() {
			if !p.targetSet.Load() {
				p.target.Store(p.delivered.Load())
				p.targetSet.Store(true)
				p.checkCaughtUp()
			}
		})
		stalled(nil)
		<-watched
		if ctx.Err() != nil {
			return
		}
		if cause := context.Cause(fctx); errors.Is(cause, errStalled) {
			err = cause
		}
		p.log.Warn("projection interrupted; resubscribing", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// write applies queued messages in runs until ctx ends or the sink fails.
func (p *Projection) write(ctx context.Context, q *runQueue) error {
	for {
		run, err := q.take(ctx, runMaxMessages, runMaxWeight)
		if err != nil {
			return nil
		}
		rep, err := p.sink.ApplyMessages(ctx, run)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("projection: %w", err)
		}
		for _, pr := range rep.Problems {
			p.log.Error("projection: message not applied", "err", pr)
		}
		last := run[len(run)-1]
		if p.onApply != nil {
			p.onApply(Applied{Seq: last.Seq, Messages: len(run), Result: rep.ApplyResult, Lag: time.Since(last.Time)})
		}
		p.checkCaughtUp()
	}
}

// checkCaughtUp marks the projection caught up once the sink has applied
// the log's last sequence as of the reader's first catching up.
func (p *Projection) checkCaughtUp() {
	if p.caughtUp.Load() || !p.targetSet.Load() || p.sink.LastSeq() < p.target.Load() {
		return
	}
	if !p.caughtUp.Swap(true) {
		p.log.Info("projection caught up", "seq", p.sink.LastSeq(), "took", time.Since(p.started).Round(time.Millisecond))
	}
}

// errStalled: the log has messages the projection's reader has not
// delivered for StallTimeout.
var errStalled = errors.New("projection stalled behind the log")

// watch ends a Follow (through stop) that makes no progress for
// StallTimeout while the stream leader reports messages beyond it: a
// reader whose server died or whose consumer was lost, which the client
// library does not always notice. Progress is a message delivered or
// applied (a reader waiting for the writer is not stalled). Returns when
// ctx ends.
func (p *Projection) watch(ctx context.Context, stop context.CancelCauseFunc) {
	if p.StallTimeout <= 0 {
		return
	}
	t := time.NewTicker(p.StallTimeout / 4)
	defer t.Stop()
	progress := func() [2]uint64 { return [2]uint64{p.delivered.Load(), p.sink.LastSeq()} }
	last, since := progress(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := progress(); now != last {
			last, since = now, time.Now()
			continue
		}
		if time.Since(since) < p.StallTimeout {
			continue
		}
		ictx, cancel := context.WithTimeout(ctx, p.StallTimeout/4)
		info, err := p.eventLog.Info(ictx)
		cancel()
		if err == nil && info.LastSeq > last[0] {
			stop(fmt.Errorf("%w: delivered %d, the log holds %d", errStalled, last[0], info.LastSeq))
			return
		}
		since = time.Now() // idle, or the log cannot say: look again later
	}
}

// Sync returns once the sink has applied every message the log held when
// Sync was called, so a read served after it is never older than any
// answer given before the call, by this instance or another reading the
// same log. It waits at most ReadWait (and never past ctx) for the sink,
// then answers events.ErrStale; events.ErrUnavailable when the log cannot
// say where it ends.
func (p *Projection) Sync(ctx context.Context) error {
	return p.syncTo(ctx, 0)
}

// syncTo is Sync, waiting for the sink to reach sequence upTo instead of
// the log's end when upTo > 0 and the log holds it.
func (p *Projection) syncTo(ctx context.Context, upTo uint64) error {
	end, err := p.logEnd.get(ctx)
	if err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: where the log ends: %v", events.ErrUnavailable, err)
	}
	if upTo > 0 {
		end = min(end, upTo)
	}
	if p.sink.LastSeq() >= end {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, p.ReadWait)
	defer cancel()
	if err := p.sink.WaitFor(wctx, end); err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return ctx.Err()
		}
		return fmt.Errorf("%w: applied %d of %d", events.ErrStale, p.sink.LastSeq(), end)
	}
	return nil
}

// SyncJob prepares a read of job id: it returns at once when the sink can
// answer it (caught up since the start, the job applied, and reads need
// not be Linearizable). When only the job is missing, it waits for the
// sink to apply the job's submission (sequence id) if the log holds it,
// not for the log's end: this instance has never answered for the job,
// so any answer is new (read-your-writes). Otherwise it does what Sync
// does. After it, a job the log held when it was called is in the sink,
// and the sink's answer is no older than any given before.
func (p *Projection) SyncJob(ctx context.Context, id uint64) error {
	if !p.Linearizable && p.caughtUp.Load() {
		if id <= p.sink.LastSeq() {
			return nil
		}
		return p.syncTo(ctx, id)
	}
	return p.Sync(ctx)
}

// lastSeqFetcher asks the log where it ends on behalf of many readers at
// once: a caller gets the answer of a request sent after it arrived (so
// the answer covers every write acknowledged before the call), shared with
// everyone who arrived while the previous request was in flight. At most
// one request is in flight at a time.
type lastSeqFetcher struct {
	fetch func(context.Context) (uint64, error)

	mu      sync.Mutex
	next    *fetchRound // the round callers join; sent when the one in flight returns
	running bool
}

type fetchRound struct {
	done chan struct{}
	seq  uint64
	err  error
}

// fetchTimeout bounds one request for the log's end.
const fetchTimeout = 2 * time.Second

func (f *lastSeqFetcher) get(ctx context.Context) (uint64, error) {
	f.mu.Lock()
	if f.next == nil {
		f.next = &fetchRound{done: make(chan struct{})}
	}
	r := f.next
	if !f.running {
		f.running = true
		go f.loop()
	}
	f.mu.Unlock()
	select {
	case <-r.done:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (f *lastSeqFetcher) loop() {
	for {
		f.mu.Lock()
		r := f.next
		f.next = nil
		if r == nil {
			f.running = false
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		r.seq, r.err = f.fetch(ctx)
		cancel()
		close(r.done)
	}
}

// runQueue hands messages from the reader to the writer, bounded by weight
// so a run of large submissions cannot pile up in memory. One goroutine
// puts, one takes.
type runQueue struct {
	mu       sync.Mutex
	msgs     []events.Message
	weights  []int
	weight   int
	limit    int
	notEmpty chan struct{}
	notFull  chan struct{}
}

func newRunQueue(limit int) *runQueue {
	return &runQueue{limit: limit, notEmpty: make(chan struct{}, 1), notFull: make(chan struct{}, 1)}
}

func weightOf(m events.Message) int {
	w := 1 + len(m.Batch.Events)
	if len(m.Batch.Events) == 1 {
		if sub, ok := m.Batch.Events[0].(*events.JobSubmitted); ok {
			w += sub.Images()
		}
	}
	return w
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// put queues m, waiting while the queue is over its weight (a message
// heavier than the limit waits for an empty queue). It fails only when ctx
// ends.
func (q *runQueue) put(ctx context.Context, m events.Message) error {
	w := weightOf(m)
	for {
		q.mu.Lock()
		if q.weight == 0 || q.weight+w <= q.limit {
			q.msgs = append(q.msgs, m)
			q.weights = append(q.weights, w)
			q.weight += w
			q.mu.Unlock()
			signal(q.notEmpty)
			return nil
		}
		q.mu.Unlock()
		select {
		case <-q.notFull:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// take returns the messages queued so far, at most maxMsgs and about
// maxWeight (always at least one), waiting for one if there is none. It
// fails only when ctx ends.
func (q *runQueue) take(ctx context.Context, maxMsgs, maxWeight int) ([]events.Message, error) {
	for {
		q.mu.Lock()
		if len(q.msgs) > 0 {
			n, w := 0, 0
			for n < len(q.msgs) && n < maxMsgs && (n == 0 || w+q.weights[n] <= maxWeight) {
				w += q.weights[n]
				n++
			}
			run := append([]events.Message(nil), q.msgs[:n]...)
			clear(q.msgs[:n])
			q.msgs, q.weights = q.msgs[n:], q.weights[n:]
			q.weight -= w
			q.mu.Unlock()
			signal(q.notFull)
			return run, nil
		}
		q.mu.Unlock()
		select {
		case <-q.notEmpty:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
