// Package actors is retailpulse's processing engine: a small hand-written
// actor runtime, a job actor per job and a store actor per store of a job.
//
// Actors here have one goroutine each, a bounded mailbox, and Run(ctx)
// error; a panic inside an actor is recovered at its boundary and returned
// as an error. There are no restarts in memory: a job whose actor fails is
// redelivered and its new actor rebuilds state from the event log.
package actors

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/retailpulse/retailpulse/events"
)

// guard runs fn and turns a panic into an error carrying the stack.
func guard(name string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: panic: %v\n%s", name, r, debug.Stack())
		}
	}()
	return fn()
}

// JobLog is the event log as the engine needs it. Implementations are safe
// for concurrent use.
type JobLog interface {
	// History returns every message on a job's subjects, given its
	// submission, as of the log's leader (never a replica that is behind).
	History(ctx context.Context, id uint64, sub *events.JobSubmitted) (*events.History, error)
	// Append stores evs atomically, fenced on the job's last message being at
	// fence; msgID identifies this append (the same on retries). It returns
	// the new message's sequence; events.ErrFenced when another owner wrote
	// to the job, events.ErrStorageFull when the log has no room, and an
	// error wrapping events.ErrUnavailable when the log could not be reached
	// before ctx's deadline.
	Append(ctx context.Context, id uint64, kind string, fence uint64, msgID string, evs ...events.Event) (uint64, error)
	// FenceHolds reports whether the job's last message is still at fence.
	FenceHolds(ctx context.Context, id, fence uint64) (bool, error)
}

// Delivery is a job handed to this instance; see Queue. Ack, Release and
// Term return nil only once the queue confirmed them; they retry until ctx
// ends.
type Delivery interface {
	JobID() uint64
	Attempts() int // 1 on first delivery
	// Submission returns the job's submission; events.ErrJobNotFound means
	// the delivery is proven to name no runnable job.
	Submission(ctx context.Context) (*events.JobSubmitted, error)
	InProgress() error                                      // keep the delivery alive
	Ack(ctx context.Context) error                          // done for good
	Release(ctx context.Context, delay time.Duration) error // hand back for redelivery after delay
	Term(ctx context.Context) error                         // drop a delivery that names no job
}

// Queue hands out jobs one at a time. NextJob blocks until a job is
// available or ctx ends.
type Queue interface {
	NextJob(ctx context.Context) (Delivery, error)
}

// Fetcher reads an image's dimensions from a URL without decoding pixels.
// Safe for concurrent use; ctx cancellation aborts the download.
type Fetcher interface {
	Dimensions(ctx context.Context, url string) (width, height int, err error)
}

// Observer receives metrics. Implementations are safe for concurrent use.
type Observer interface {
	JobActive(delta int)
	JobFinished(status string)
	ImageProcessed(total time.Duration)
	ImageFailed(reason string, total time.Duration)
	ImageInflight(delta int)
	Download(d time.Duration)
	Append(kind string, events int, d time.Duration)
	// ImageSlots reports the image slots allowed now and the scheduler
	// latency p99 the governor saw (0 when slots are fixed).
	ImageSlots(limit int, schedP99 time.Duration)
}

type nopObserver struct{}

func (nopObserver) JobActive(int)                     {}
func (nopObserver) JobFinished(string)                {}
func (nopObserver) ImageProcessed(time.Duration)      {}
func (nopObserver) ImageFailed(string, time.Duration) {}
func (nopObserver) ImageInflight(int)                 {}
func (nopObserver) Download(time.Duration)            {}
func (nopObserver) Append(string, int, time.Duration) {}
func (nopObserver) ImageSlots(int, time.Duration)     {}
