package actors

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
)

// An image's goroutine allocates nothing once its download has returned:
// the pause, the outcome and its report to the job actor make no garbage.
// Goroutines that allocate while the collector marks must each help it
// mark; an engine at thousands of images a second has hundreds of them in
// every cycle, and the API's requests then wait behind their help.
func TestStoreActor_ImageAllocatesNothingAfterItsDownload(t *testing.T) {
	if raceDetector {
		t.Skip("allocations are counted without the race detector (.ci/run runs them so)")
	}
	e := &Engine{cfg: Config{Fetcher: fixedFetcher{}, KnownStore: func(string) bool { return true },
		Pause: RandomPause(time.Microsecond, 2*time.Microsecond), Observer: nopObserver{}, Logger: slog.New(slog.DiscardHandler)}}
	out := make(chan jobMsg, 1)
	s := &storeActor{e: e, jobID: 1, storeID: "S1", out: out, stopping: make(chan struct{})}
	tk := task{ref: events.ImageRef{Visit: 0, Index: 3}, url: "http://img.example/3.jpg"}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(200, func() {
		s.process(ctx, tk)
		imageDones.Put((<-out).(*imageDone)) // as the job actor does once it has the event
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per image besides its download, want 0", allocs)
	}
}

// fixedFetcher answers every image at once, allocating nothing.
type fixedFetcher struct{}

func (fixedFetcher) Dimensions(context.Context, string) (int, int, error) { return 640, 480, nil }

// Starting an image's goroutine allocates nothing either: a store actor's
// Run allocates the same for a hundred images as for one.
func TestStoreActor_StartingAnImageAllocatesNothing(t *testing.T) {
	if raceDetector {
		t.Skip("allocations are counted without the race detector (.ci/run runs them so)")
	}
	e := &Engine{cfg: Config{Fetcher: fixedFetcher{}, KnownStore: func(string) bool { return true },
		StoreConcurrency: 8, Observer: nopObserver{}, Logger: slog.New(slog.DiscardHandler)}, imageSlots: newGate(8)}
	run := func(n int) float64 {
		tasks := make([]task, n)
		for i := range tasks {
			tasks[i] = task{ref: events.ImageRef{Index: i}, url: "http://img.example/x.jpg"}
		}
		out := make(chan jobMsg, n)
		s := &storeActor{e: e, jobID: 1, storeID: "S1", tasks: tasks, out: out, stopping: make(chan struct{})}
		return testing.AllocsPerRun(20, func() {
			if err := s.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			for range n {
				imageDones.Put((<-out).(*imageDone))
			}
		})
	}
	one, hundred := run(1), run(100)
	if hundred > one {
		t.Fatalf("Run allocates %.1f times for 100 images and %.1f for one: %.2f per image, want 0", hundred, one, (hundred-one)/99)
	}
}
