package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures an Engine. Zero values take the defaults shown.
type Config struct {
	Log     JobLog  // required
	Queue   Queue   // required
	Fetcher Fetcher // required
	// KnownStore reports whether a store id is in the store master; images
	// of unknown stores fail with events.ReasonUnknownStore, undownloaded.
	KnownStore func(storeID string) bool // required
	// Reason maps a Fetcher error to the coarse class recorded for the image.
	Reason func(error) string // default: "download failed"
	// Pause imitates GPU work after each perimeter; it returns early with
	// ctx's error when ctx ends. nil = no pause.
	Pause func(ctx context.Context) error

	JobSlots int // concurrent jobs on this instance; 64
	// ImageSlots bounds the images processed at once on this instance, over
	// all jobs: the fixed number, or with SchedLatencyTarget the most the
	// governor may allow; 1024.
	ImageSlots int
	// SchedLatencyTarget, when positive, makes the image slots adaptive:
	// between MinImageSlots and ImageSlots, lowered while the Go
	// scheduler's latency p99 exceeds it (see adaptive.go). 0 = fixed.
	SchedLatencyTarget time.Duration
	MinImageSlots      int           // the adaptive floor; 128 (at most ImageSlots)
	StoreConcurrency   int           // concurrent images per store actor; 64
	MaxAttempts        int           // deliveries before a job is completed as failed; 5
	Heartbeat          time.Duration // InProgress interval; 20s (a third of the ack wait)
	DrainTimeout       time.Duration // graceful shutdown: how long in-flight images may finish; 30s
	MaxBatch           int           // events per appended message; 1000
	// BatchLinger is how long a job actor waits for more outcomes before an
	// append; 0 = append whatever is waiting at once.
	BatchLinger time.Duration
	// AppendRate, when positive, is the appends per second this instance's
	// job actors aim to stay under together: each lingers at least
	// BatchLinger and at least (jobs owned)/AppendRate, so many jobs at once
	// make fewer, larger appends (each is an fsync of its own). 0 = no bound.
	AppendRate  int
	MailboxSize int    // job actor mailbox; 1024
	Owner       string // this instance's name in JobStarted; hostname-pid

	Observer Observer     // nil = none
	Logger   *slog.Logger // nil = discard
}

func (c *Config) defaults() error {
	if c.Log == nil || c.Queue == nil || c.Fetcher == nil || c.KnownStore == nil {
		return errors.New("actors: Log, Queue, Fetcher and KnownStore are required")
	}
	if c.Reason == nil {
		c.Reason = func(error) string { return "download failed" }
	}
	setDefault(&c.JobSlots, 64)
	setDefault(&c.ImageSlots, 1024)
	setDefault(&c.MinImageSlots, 128)
	c.MinImageSlots = min(c.MinImageSlots, c.ImageSlots)
	setDefault(&c.StoreConcurrency, 64)
	setDefault(&c.MaxAttempts, 5)
	setDefault(&c.MaxBatch, 1000)
	setDefault(&c.MailboxSize, 1024)
	setDefault(&c.Heartbeat, 20*time.Second)
	setDefault(&c.DrainTimeout, 30*time.Second)
	if c.Owner == "" {
		host, _ := os.Hostname()
		c.Owner = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func setDefault[T int | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

// RandomPause returns a Pause that sleeps a uniformly random duration in
// [lo, hi], returning early with ctx's error if ctx ends first.
func RandomPause(lo, hi time.Duration) func(context.Context) error {
	if hi <= 0 {
		return nil
	}
	return func(ctx context.Context) error {
		d := lo
		if hi > lo {
			d += rand.N(hi - lo + 1)
		}
		t := pauseTimers.Get().(*time.Timer)
		defer pauseTimers.Put(t)
		t.Reset(d)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// pauseTimers are stopped timers for pauses: a pause allocates nothing.
// A stopped timer's channel holds no stale tick (Go 1.23 timers), so a
// timer is reused as it is.
var pauseTimers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// Engine pulls jobs from the queue as job slots free up and runs a job
// actor for each. It is the only place jobs enter this instance.
type Engine struct {
	cfg        Config
	imageSlots *gate
	active     atomic.Int64

	mu   sync.Mutex
	jobs map[*jobActor]struct{} // running job actors
}

// NewEngine validates cfg and returns an engine ready to Run.
func NewEngine(cfg Config) (*Engine, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	slots := cfg.ImageSlots
	if cfg.SchedLatencyTarget > 0 {
		slots = min(max(initialAdaptiveSlots, cfg.MinImageSlots), cfg.ImageSlots)
	}
	return &Engine{cfg: cfg, imageSlots: newGate(slots), jobs: map[*jobActor]struct{}{}}, nil
}

// initialAdaptiveSlots is where adaptive image slots start.
const initialAdaptiveSlots = 1024

// ImageSlots returns the image slots now allowed and those in use. Safe
// for concurrent use.
func (e *Engine) ImageSlots() (limit, held int) {
	limit, held, _ = e.imageSlots.state()
	return limit, held
}

// MailboxBacklog returns the messages waiting in every running job actor's
// mailbox: outcomes reported by store actors and not yet appended. Safe for
// concurrent use.
func (e *Engine) MailboxBacklog() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for a := range e.jobs {
		n += len(a.mailbox)
	}
	return n
}

// Active returns the number of jobs this instance owns now.
func (e *Engine) Active() int { return int(e.active.Load()) }

// Run takes jobs until ctx ends, then shuts down gracefully: it stops taking
// jobs, lets in-flight images finish for up to DrainTimeout, has each job
// actor append what finished and hand its job back unacked for redelivery,
// and returns once every job actor has returned. Images still running at the
// deadline are abandoned (redone by the next owner). Run always returns nil
// after a shutdown; an Engine runs once.
func (e *Engine) Run(ctx context.Context) error {
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	slots := make(chan struct{}, e.cfg.JobSlots)
	var wg sync.WaitGroup
	log := e.cfg.Logger
	limit, _, _ := e.imageSlots.state()
	e.cfg.Observer.ImageSlots(limit, 0)
	if e.cfg.SchedLatencyTarget > 0 {
		lat := newSchedLatency()
		wg.Add(1)
		go func() { defer wg.Done(); e.govern(ctx, defaultGovernInterval, lat.read) }()
	}
loop:
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		d, err := e.cfg.Queue.NextJob(ctx)
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				break loop
			}
			log.Warn("take job", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			e.active.Add(1)
			defer e.active.Add(-1)
			a := newJobActor(e, d)
			e.mu.Lock()
			e.jobs[a] = struct{}{}
			e.mu.Unlock()
			defer func() {
				e.mu.Lock()
				delete(e.jobs, a)
				e.mu.Unlock()
			}()
			if err := guard(fmt.Sprintf("job %d", d.JobID()), func() error { return a.Run(hard, ctx.Done()) }); err != nil {
				log.Error("job actor", "job_id", d.JobID(), "err", err)
				if !a.settledDelivery { // a panic: the actor did not hand its job back
					_ = a.confirm(hard, func(ctx context.Context) error { return d.Release(ctx, retryDelay) })
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	if e.active.Load() > 0 {
		log.Info("draining jobs", "jobs", e.active.Load(), "timeout", e.cfg.DrainTimeout)
	}
	t := time.NewTimer(e.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		log.Warn("drain deadline reached; abandoning in-flight images")
		cancelHard()
		<-done
	}
	return nil
}
