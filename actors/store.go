package actors

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// storeActor processes one store's images of one job: download (bounded by
// the engine's image slots and StoreConcurrency), dimensions from the header,
// perimeter, pause, and a report to its job actor. It starts no new image
// once stopping closes; ctx cancellation aborts images in flight, which are
// then not reported (the next owner redoes them), and so are outcomes its
// job actor no longer reads once ctx ends.
type storeActor struct {
	e        *Engine
	jobID    uint64
	storeID  string
	tasks    []task
	out      chan<- jobMsg
	stopping <-chan struct{}
}

// Run processes every task and returns when all are reported, stopping
// closes, or ctx ends. An image starts only once it holds a slot of its
// store (StoreConcurrency) and of the engine (ImageSlots), so goroutines
// exist only for images in flight. A panic while processing an image is
// returned as an error (that image stays unsettled).
func (s *storeActor) Run(ctx context.Context) error {
	r := &storeRun{s: s, ctx: ctx, name: "store " + s.storeID, storeSlots: make(chan struct{}, s.e.cfg.StoreConcurrency)}
	acquire := func(slots chan struct{}) bool {
		select {
		case slots <- struct{}{}:
		case <-s.stopping:
			return false
		case <-ctx.Done():
			return false
		}
		select { // stopping and a free slot at once: stopping wins
		case <-s.stopping:
			<-slots
			return false
		default:
			return true
		}
	}
	for _, t := range s.tasks {
		if !acquire(r.storeSlots) {
			break
		}
		if !s.e.imageSlots.acquire(ctx, s.stopping) {
			<-r.storeSlots
			break
		}
		r.wg.Add(1)
		ir := imageRuns.Get().(*imageRun)
		ir.r, ir.t = r, t
		go ir.start()
	}
	r.wg.Wait()
	return errors.Join(r.errs...)
}

// storeRun is what one Run of a store actor shares with its images'
// goroutines.
type storeRun struct {
	s          *storeActor
	ctx        context.Context
	name       string        // for a panic's error: made once, not per image
	storeSlots chan struct{} // StoreConcurrency
	wg         sync.WaitGroup
	mu         sync.Mutex
	errs       []error
}

// imageRun starts one image's goroutine. It comes from imageRuns with its
// start function bound once: starting an image allocates nothing, where a
// closure or a go statement with arguments would allocate one per image.
type imageRun struct {
	r     *storeRun
	t     task
	start func() // run, bound when the imageRun was made
}

var imageRuns sync.Pool

// New is set in init: it refers to run, which refers to imageRuns, a cycle
// a variable's initializer may not have.
func init() {
	imageRuns.New = func() any {
		ir := new(imageRun)
		ir.start = ir.run
		return ir
	}
}

// run processes the image on its own goroutine, holding the slots Run
// acquired for it, and releases them.
func (ir *imageRun) run() {
	r, t := ir.r, ir.t
	ir.r, ir.t = nil, task{}
	imageRuns.Put(ir)
	defer r.wg.Done()
	defer func() { r.s.e.imageSlots.release(); <-r.storeSlots }()
	if err := guard(r.name, func() error { r.s.process(r.ctx, t); return nil }); err != nil {
		r.mu.Lock()
		r.errs = append(r.errs, err)
		r.mu.Unlock()
	}
}

func (s *storeActor) process(ctx context.Context, t task) {
	cfg := &s.e.cfg
	cfg.Observer.ImageInflight(1)
	defer cfg.Observer.ImageInflight(-1)
	start := time.Now()
	w, h, err := cfg.Fetcher.Dimensions(ctx, t.url)
	cfg.Observer.Download(time.Since(start))
	if ctx.Err() != nil {
		return
	}
	// Past the download an image allocates nothing (the message comes
	// from a pool, the job actor makes the event): see imageDone.
	var reason string
	if err != nil {
		reason = cfg.Reason(err)
		if cfg.Logger.Enabled(ctx, slog.LevelDebug) {
			cfg.Logger.Debug("image failed", "job_id", s.jobID, "store_id", s.storeID, "image", t.url, "reason", reason)
		}
	} else if cfg.Pause != nil && cfg.Pause(ctx) != nil {
		return
	}
	msg := imageDones.Get().(*imageDone)
	*msg = imageDone{ref: t.ref, storeID: s.storeID, url: t.url, width: w, height: h, reason: reason, at: time.Now().UTC(), took: time.Since(start)}
	select { // a job actor that has stopped reading has cancelled ctx
	case s.out <- msg:
	case <-ctx.Done():
		imageDones.Put(msg)
	}
}
