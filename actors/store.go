package actors

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/retailpulse/retailpulse/events"
)

// storeActor processes one store's images of one job: download (bounded by
// the engine's image slots and StoreConcurrency), dimensions from the header,
// perimeter, pause, and a report to its job actor. It starts no new image
// once stopping closes; ctx cancellation aborts images in flight, which are
// then not reported (the next owner redoes them).
type storeActor struct {
	e        *Engine
	jobID    uint64
	storeID  string
	tasks    []task
	out      chan<- jobMsg
	stopping <-chan struct{}
}

// Run processes every task and returns when all are reported, stopping
// closes, or ctx ends. A panic in a worker is returned as an error.
func (s *storeActor) Run(ctx context.Context) error {
	var next atomic.Int64
	workers := min(s.e.cfg.StoreConcurrency, len(s.tasks))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = guard("store worker", func() error {
				for {
					i := int(next.Add(1) - 1)
					if i >= len(s.tasks) {
						return nil
					}
					select { // take an image slot, unless we are stopping
					case s.e.imageSlots <- struct{}{}:
					case <-s.stopping:
						return nil
					case <-ctx.Done():
						return nil
					}
					select {
					case <-s.stopping:
						<-s.e.imageSlots
						return nil
					default:
					}
					s.process(ctx, s.tasks[i])
					<-s.e.imageSlots
				}
			})
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
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
	var msg imageDone
	if err != nil {
		reason := cfg.Reason(err)
		cfg.Logger.Debug("image failed", "job_id", s.jobID, "store_id", s.storeID, "image", t.url, "reason", reason)
		msg = imageDone{reason: reason, ev: &events.ImageFailed{ImageRef: t.ref, StoreID: s.storeID, URL: t.url, Reason: reason, At: time.Now().UTC()}}
	} else {
		if cfg.Pause != nil && cfg.Pause(ctx) != nil {
			return
		}
		msg = imageDone{ev: &events.ImageProcessed{ImageRef: t.ref, StoreID: s.storeID, Width: w, Height: h, Perimeter: 2 * (w + h), At: time.Now().UTC()}}
	}
	msg.took = time.Since(start)
	s.out <- msg
}
