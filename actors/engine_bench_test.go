package actors_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/actors"
	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
)

// benchFetcher answers every image at once: the engine's own cost is measured.
type benchFetcher struct{}

func (benchFetcher) Dimensions(context.Context, string) (int, int, error) { return 640, 480, nil }

// benchMemLog is an in-memory JobLog with the store's fencing rule.
type benchMemLog struct {
	mu   sync.Mutex
	seq  uint64
	subs map[uint64]*events.JobSubmitted
	last map[uint64]uint64
}

func (l *benchMemLog) submit(sub *events.JobSubmitted) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	l.subs[l.seq] = sub
	return l.seq
}

func (l *benchMemLog) History(_ context.Context, id uint64, sub *events.JobSubmitted) (*events.History, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return &events.History{ID: id, Submitted: sub, LastSeq: l.last[id]}, nil
}

func (l *benchMemLog) FenceHolds(_ context.Context, id, fence uint64) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last[id] == fence, nil
}

func (l *benchMemLog) Append(_ context.Context, id uint64, _ string, fence uint64, _ string, _ ...events.Event) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last[id] != fence {
		return 0, events.ErrFenced
	}
	l.seq++
	l.last[id] = l.seq
	return l.seq, nil
}

// benchDelivery signals done when the engine acks its job.
type benchDelivery struct {
	actors.Delivery
	done chan<- struct{}
}

func (d benchDelivery) Ack(ctx context.Context) error {
	err := d.Delivery.Ack(ctx)
	d.done <- struct{}{}
	return err
}

// benchMemDelivery is a delivery of the in-memory queue.
type benchMemDelivery struct {
	id  uint64
	log *benchMemLog
}

func (d benchMemDelivery) JobID() uint64                                { return d.id }
func (d benchMemDelivery) Attempts() int                                { return 1 }
func (d benchMemDelivery) InProgress() error                            { return nil }
func (d benchMemDelivery) Ack(context.Context) error                    { return nil }
func (d benchMemDelivery) Release(context.Context, time.Duration) error { return nil }
func (d benchMemDelivery) Term(context.Context) error                   { return nil }
func (d benchMemDelivery) Submission(context.Context) (*events.JobSubmitted, error) {
	d.log.mu.Lock()
	defer d.log.mu.Unlock()
	if sub, ok := d.log.subs[d.id]; ok {
		return sub, nil
	}
	return nil, events.ErrJobNotFound
}

// benchQueue hands out jobs from next, wrapping each so its ack is seen.
type benchQueue struct {
	next func(ctx context.Context) (actors.Delivery, error)
	done chan struct{}
}

func (q benchQueue) NextJob(ctx context.Context) (actors.Delivery, error) {
	d, err := q.next(ctx)
	if err != nil {
		return nil, err
	}
	return benchDelivery{Delivery: d, done: q.done}, nil
}

func benchEngineJob(images int) *events.JobSubmitted {
	const perVisit = 50
	sub := &events.JobSubmitted{Count: (images + perVisit - 1) / perVisit}
	for v := range sub.Count {
		n := min(perVisit, images-v*perVisit)
		urls := make([]string, n)
		for i := range urls {
			urls[i] = "http://img.example/" + strconv.Itoa(v*perVisit+i) + ".jpg"
		}
		sub.Visits = append(sub.Visits, events.Visit{StoreID: "S" + strconv.Itoa(v%20), ImageURLs: urls, VisitTime: "t"})
	}
	return sub
}

func runBenchEngine(b *testing.B, log actors.JobLog, q benchQueue) {
	e, err := actors.NewEngine(actors.Config{
		Log: log, Queue: q, Fetcher: benchFetcher{}, KnownStore: func(string) bool { return true },
		Heartbeat: time.Minute, DrainTimeout: 10 * time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
}

// BenchmarkEngine_Job runs one job of 500 images (10 visits to 10 stores)
// per op through the engine with an instant fetcher and no pause: the
// actors' own overhead per image, over an in-memory log and over the
// embedded JetStream store with fsync on every write.
func BenchmarkEngine_Job(b *testing.B) {
	const images = 500
	sub := benchEngineJob(images)

	b.Run("log=memory", func(b *testing.B) {
		log := &benchMemLog{subs: map[uint64]*events.JobSubmitted{}, last: map[uint64]uint64{}}
		jobs := make(chan uint64, 1)
		q := benchQueue{done: make(chan struct{}, 1), next: func(ctx context.Context) (actors.Delivery, error) {
			select {
			case id := <-jobs:
				return benchMemDelivery{id: id, log: log}, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}}
		runBenchEngine(b, log, q)
		b.ReportAllocs()
		for b.Loop() {
			jobs <- log.submit(sub)
			<-q.done
		}
		b.ReportMetric(float64(b.N*images)/b.Elapsed().Seconds(), "images/s")
	})

	b.Run("log=jetstream", func(b *testing.B) {
		ns, err := jsstore.StartServer(jsstore.ServerConfig{Name: "bench", StoreDir: b.TempDir(), SyncAlways: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		nc, err := jsstore.ConnectInProcess(ns, "bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		store, err := jsstore.Open(ctx, nc, jsstore.Config{})
		if err != nil {
			b.Fatal(err)
		}
		q := benchQueue{done: make(chan struct{}, 1), next: func(ctx context.Context) (actors.Delivery, error) {
			return store.NextJob(ctx)
		}}
		runBenchEngine(b, store, q)
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := store.Submit(context.Background(), sub, ""); err != nil {
				b.Fatal(err)
			}
			<-q.done
		}
		b.ReportMetric(float64(b.N*images)/b.Elapsed().Seconds(), "images/s")
	})
}
