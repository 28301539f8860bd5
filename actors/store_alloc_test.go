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
