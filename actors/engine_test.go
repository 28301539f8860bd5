package actors_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/actors"
	"github.com/retailpulse/retailpulse/actors/imagefetch"
	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

type queue struct{ s *jsstore.EventLog }

func (q queue) NextJob(ctx context.Context) (actors.Delivery, error) { return q.s.NextJob(ctx) }

// gatedImages serves a 10x10 PNG. Requests whose User-Agent is held wait
// until release is called; the first such request closes blocked.
type gatedImages struct {
	*httptest.Server
	held      string
	blocked   chan struct{}
	gate      chan struct{}
	onceBlock sync.Once
	onceOpen  sync.Once
}

func newGatedImages(t *testing.T, held string) *gatedImages {
	var buf bytes.Buffer
	png.Encode(&buf, image.NewGray(image.Rect(0, 0, 10, 10)))
	g := &gatedImages{held: held, blocked: make(chan struct{}), gate: make(chan struct{})}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.UserAgent() == g.held {
			g.onceBlock.Do(func() { close(g.blocked) })
			select {
			case <-g.gate:
			case <-r.Context().Done():
				return
			}
		}
		w.Write(buf.Bytes())
	}))
	t.Cleanup(g.Close)
	t.Cleanup(g.release)
	return g
}

func (g *gatedImages) release() { g.onceOpen.Do(func() { close(g.gate) }) }

// startEngine runs an engine over store until the test ends.
func startEngine(t *testing.T, store *jsstore.EventLog, owner string, mutate func(*actors.Config)) *actors.Engine {
	t.Helper()
	f := imagefetch.New(imagefetch.Config{AllowPrivateNetworks: true, UserAgent: owner, TotalTimeout: time.Minute})
	cfg := actors.Config{
		Log: store, Queue: queue{store}, Fetcher: f, Reason: imagefetch.Reason,
		KnownStore: func(id string) bool { return id == "S1" },
		Owner:      owner, Heartbeat: 200 * time.Millisecond, DrainTimeout: 5 * time.Second,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := actors.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; f.Close() })
	return e
}

func submit(t *testing.T, store *jsstore.EventLog, urls ...string) uint64 {
	t.Helper()
	id, _, err := store.Submit(context.Background(), &events.JobSubmitted{Count: 1, Visits: []events.Visit{{StoreID: "S1", ImageURLs: urls, VisitTime: "t"}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// fold loads a job's history and folds it, also counting terminal events.
func fold(t *testing.T, store *jsstore.EventLog, id uint64) (*events.JobState, *events.History, int) {
	t.Helper()
	h, err := store.LoadJob(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	st := events.NewJobState(id, h.Submitted)
	completions := 0
	for _, r := range h.Records {
		for _, ev := range r.Events {
			if _, ok := ev.(*events.JobCompleted); ok {
				completions++
			}
			if _, err := st.Apply(ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	return st, h, completions
}

func waitCompleted(t *testing.T, store *jsstore.EventLog, id uint64) {
	t.Helper()
	jstest.CheckFor(t, 30*time.Second, func() error {
		if st, _, _ := fold(t, store, id); !st.Completed {
			return fmt.Errorf("job %d not completed: %d/%d settled", id, st.Processed+st.Failed, st.Images)
		}
		return nil
	})
}

// A paused owner whose job was redelivered elsewhere must not write: exactly
// one set of outcomes lands, on a single node and on a 3-node cluster.
func TestEngine_StaleOwnerCannotWrite(t *testing.T) {
	for _, b := range jstest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			store := b.Open(t, jsstore.Config{AckWait: time.Second})
			img := newGatedImages(t, "owner-a")
			var urls []string
			for i := range 6 {
				urls = append(urls, fmt.Sprintf("%s/%d.png", img.URL, i))
			}
			// Owner A takes the job, then stalls (no heartbeats, downloads held).
			a := startEngine(t, store, "owner-a", func(c *actors.Config) { c.Heartbeat = time.Hour; c.JobSlots = 1 })
			id := submit(t, store, urls...)
			select {
			case <-img.blocked:
			case <-time.After(20 * time.Second):
				t.Fatal("owner A never started downloading")
			}
			// The ack wait runs out; owner B gets the job and finishes it.
			startEngine(t, store, "owner-b", nil)
			waitCompleted(t, store, id)
			// A wakes up with six finished images and tries to append them.
			img.release()
			jstest.CheckFor(t, 20*time.Second, func() error {
				if a.Active() != 0 {
					return errors.New("owner A still holds the job")
				}
				return nil
			})
			st, h, completions := fold(t, store, id)
			if st.Duplicates != 0 || completions != 1 || st.Processed != 6 || st.Status != events.StatusCompleted {
				t.Fatalf("folded: processed %d, duplicates %d, completions %d, status %s", st.Processed, st.Duplicates, completions, st.Status)
			}
			var owners []string
			for _, r := range h.Records {
				for _, ev := range r.Events {
					if s, ok := ev.(*events.JobStarted); ok {
						owners = append(owners, fmt.Sprintf("%s#%d", s.Owner, s.Attempt))
					}
				}
			}
			if fmt.Sprint(owners) != "[owner-a#1 owner-b#2]" {
				t.Fatalf("owners = %v", owners)
			}
		})
	}
}

// A job whose owners keep stopping without recording anything completes as
// failed after MaxAttempts such deliveries.
func TestEngine_AbandonsJobAfterMaxAttempts(t *testing.T) {
	store := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{AckWait: time.Second})
	img := newGatedImages(t, "owner-a")
	startEngine(t, store, "owner-a", func(c *actors.Config) { c.Heartbeat = time.Hour; c.JobSlots = 1 })
	id := submit(t, store, img.URL+"/1.png", img.URL+"/2.png")
	<-img.blocked
	startEngine(t, store, "owner-b", func(c *actors.Config) { c.MaxAttempts = 1 })
	waitCompleted(t, store, id)
	st, _, _ := fold(t, store, id)
	want := []events.StoreError{{StoreID: "S1", Error: "job abandoned after 1 delivery attempts without progress"}}
	if st.Status != events.StatusFailed || fmt.Sprint(st.Errors) != fmt.Sprint(want) {
		t.Fatalf("status %s errors %+v", st.Status, st.Errors)
	}
}

// Outcomes are batched: a job's images land in far fewer messages than
// images, and each image exactly once.
func TestEngine_BatchesOutcomes(t *testing.T) {
	store := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	img := newGatedImages(t, "nobody")
	startEngine(t, store, "owner", func(c *actors.Config) {
		// Every image waits on a shared 20 ms pause, so outcomes arrive together.
		c.Pause = func(ctx context.Context) error { time.Sleep(20 * time.Millisecond); return nil }
	})
	var urls []string
	for i := range 200 {
		urls = append(urls, fmt.Sprintf("%s/%d.png", img.URL, i))
	}
	id := submit(t, store, urls...)
	waitCompleted(t, store, id)
	st, h, _ := fold(t, store, id)
	if st.Processed != 200 || st.Duplicates != 0 {
		t.Fatalf("processed %d duplicates %d", st.Processed, st.Duplicates)
	}
	if len(h.Records) >= 100 {
		t.Fatalf("200 images took %d messages: outcomes are not batched", len(h.Records))
	}
}

// With a linger, a job's outcomes are gathered into few, large appends.
func TestEngine_LingerGathersOutcomes(t *testing.T) {
	store := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	img := newGatedImages(t, "nobody")
	startEngine(t, store, "owner", func(c *actors.Config) {
		c.BatchLinger = time.Second // longer than the whole job: only MaxBatch and the end cut it
		c.MaxBatch = 50
	})
	var urls []string
	for i := range 200 {
		urls = append(urls, fmt.Sprintf("%s/%d.png", img.URL, i))
	}
	id := submit(t, store, urls...)
	waitCompleted(t, store, id)
	st, h, _ := fold(t, store, id)
	if st.Processed != 200 || st.Duplicates != 0 {
		t.Fatalf("processed %d duplicates %d", st.Processed, st.Duplicates)
	}
	images := 0
	for _, r := range h.Records {
		if strings.HasSuffix(r.Subject, ".images") {
			images++
			if len(r.Events) > 50 {
				t.Fatalf("a message of %d events exceeds MaxBatch", len(r.Events))
			}
		}
	}
	if images > 5 { // 200 images, 50 per message, plus at most one partial
		t.Fatalf("200 images in %d messages", images)
	}
}

func TestEngine_LingerGrowsWithJobsUnderAppendRate(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name   string
		linger time.Duration
		rate   int
		active int
		want   time.Duration
	}{
		{"no rate: the configured linger", 20 * ms, 0, 50, 20 * ms},
		{"no linger, no rate: append at once", 0, 0, 50, 0},
		{"few jobs: the configured linger", 20 * ms, 250, 1, 20 * ms},
		{"20 jobs share 250 appends/s", 20 * ms, 250, 20, 80 * ms},
		{"64 jobs share 250 appends/s", 0, 250, 64, 256 * ms},
		{"at most a second", 20 * ms, 250, 10_000, time.Second},
		{"a longer configured linger stays", 500 * ms, 250, 20, 500 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := actors.LingerFor(actors.Config{BatchLinger: tt.linger, AppendRate: tt.rate}, tt.active)
			if got != tt.want {
				t.Fatalf("linger = %v, want %v", got, tt.want)
			}
		})
	}
}

// Under an append rate, outcomes that trickle in are gathered into few
// appends even with no configured linger: one job's share of 2 appends/s
// is a 500 ms linger.
func TestEngine_AppendRateGathersTricklingOutcomes(t *testing.T) {
	store := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	img := newGatedImages(t, "nobody")
	release := make(chan struct{})
	startEngine(t, store, "owner", func(c *actors.Config) {
		c.BatchLinger, c.AppendRate = 0, 2
		c.Pause = func(ctx context.Context) error {
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	var urls []string
	for i := range 20 {
		urls = append(urls, fmt.Sprintf("%s/%d.png", img.URL, i))
	}
	id := submit(t, store, urls...)
	start := time.Now()
	for range urls { // one image's pause ends every few milliseconds
		release <- struct{}{}
		time.Sleep(5 * time.Millisecond)
	}
	waitCompleted(t, store, id)
	elapsed := time.Since(start)
	st, h, _ := fold(t, store, id)
	if st.Processed != 20 {
		t.Fatalf("processed %d of 20", st.Processed)
	}
	images := 0
	for _, r := range h.Records {
		if strings.HasSuffix(r.Subject, ".images") {
			images++
		}
	}
	// Each append gathers for 500 ms after its first outcome.
	if most := int(elapsed/(500*time.Millisecond)) + 1; images > most {
		t.Fatalf("20 outcomes over %v in %d appends; want at most %d", elapsed, images, most)
	}
}

// recordingQueue wraps a queue's deliveries to count how each ended.
type recordingQueue struct {
	actors.Queue
	mu       sync.Mutex
	releases int
	acks     int
	terms    int
}

type recordingDelivery struct {
	actors.Delivery
	q *recordingQueue
}

func (q *recordingQueue) NextJob(ctx context.Context) (actors.Delivery, error) {
	d, err := q.Queue.NextJob(ctx)
	if err != nil {
		return nil, err
	}
	return recordingDelivery{d, q}, nil
}

func (q *recordingQueue) counts() (releases, acks, terms int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.releases, q.acks, q.terms
}

func (d recordingDelivery) Release(ctx context.Context, delay time.Duration) error {
	d.q.mu.Lock()
	d.q.releases++
	d.q.mu.Unlock()
	return d.Delivery.Release(ctx, delay)
}

func (d recordingDelivery) Ack(ctx context.Context) error {
	d.q.mu.Lock()
	d.q.acks++
	d.q.mu.Unlock()
	return d.Delivery.Ack(ctx)
}

func (d recordingDelivery) Term(ctx context.Context) error {
	d.q.mu.Lock()
	d.q.terms++
	d.q.mu.Unlock()
	return d.Delivery.Term(ctx)
}

// A stale owner that stops after its job moved to another owner hands
// nothing back: its release would redeliver the job its successor runs.
func TestEngine_StaleOwnerDoesNotHandBack(t *testing.T) {
	store := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{AckWait: time.Second})
	imgA := newGatedImages(t, "owner-a")
	imgB := newGatedImages(t, "owner-b")
	var urls []string
	for i := range 4 {
		urls = append(urls, fmt.Sprintf("%s/%d.png", imgA.URL, i))
	}
	// Owner A takes the job and stalls (no heartbeats, downloads held).
	qa := &recordingQueue{Queue: queue{store}}
	f := imagefetch.New(imagefetch.Config{AllowPrivateNetworks: true, UserAgent: "owner-a", TotalTimeout: time.Minute})
	defer f.Close()
	engA, err := actors.NewEngine(actors.Config{
		Log: store, Queue: qa, Fetcher: f, Reason: imagefetch.Reason, KnownStore: func(string) bool { return true },
		Owner: "owner-a", Heartbeat: time.Hour, JobSlots: 1, DrainTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctxA, stopA := context.WithCancel(context.Background())
	doneA := make(chan struct{})
	go func() { defer close(doneA); engA.Run(ctxA) }()
	defer func() { stopA(); <-doneA }()
	id := submit(t, store, urls...)
	<-imgA.blocked
	// The ack wait runs out; B takes the job and starts it (its downloads
	// from the same host are not held, but it waits on its own gate first).
	_ = imgB
	startEngine(t, store, "owner-b", func(c *actors.Config) {
		c.Pause = func(ctx context.Context) error {
			select {
			case <-imgB.gate:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	jstest.CheckFor(t, 20*time.Second, func() error {
		if st, _, _ := fold(t, store, id); st.Attempts < 2 {
			return errors.New("owner B has not started the job")
		}
		return nil
	})
	// A stops: its held downloads are abandoned at the drain deadline, so it
	// would hand the job back, but its fence is gone.
	stopA()
	<-doneA
	if rel, acks, _ := qa.counts(); rel != 0 || acks != 0 {
		t.Fatalf("stale owner A released %d and acked %d deliveries", rel, acks)
	}
	imgB.release()
	waitCompleted(t, store, id)
	st, _, completions := fold(t, store, id)
	if st.Attempts != 2 || completions != 1 || st.Processed != 4 {
		t.Fatalf("attempts %d completions %d processed %d: the job was delivered again", st.Attempts, completions, st.Processed)
	}
}

// flakyLog fails History with an unavailable log a number of times.
type flakyLog struct {
	actors.JobLog
	mu    sync.Mutex
	fails int
}

func (l *flakyLog) History(ctx context.Context, id uint64, sub *events.JobSubmitted) (*events.History, error) {
	l.mu.Lock()
	fail := l.fails > 0
	l.fails--
	l.mu.Unlock()
	if fail {
		return nil, fmt.Errorf("load job %d: %w", id, events.ErrUnavailable)
	}
	return l.JobLog.History(ctx, id, sub)
}

// A delivery whose job cannot be loaded is never acked: it is handed back
// with a delay and runs once the log answers again.
func TestEngine_UnloadableDeliveryIsHandedBackNotAcked(t *testing.T) {
	store := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{AckWait: time.Hour})
	img := newGatedImages(t, "nobody")
	q := &recordingQueue{Queue: queue{store}}
	log := &flakyLog{JobLog: store, fails: 1}
	startEngine(t, store, "owner", func(c *actors.Config) { c.Log = log; c.Queue = q })
	id := submit(t, store, img.URL+"/1.png")
	waitCompleted(t, store, id)
	rel, acks, terms := q.counts()
	if rel != 1 || acks != 1 || terms != 0 {
		t.Fatalf("releases %d acks %d terms %d; want the failed load released once, then one ack", rel, acks, terms)
	}
}

// panicObserver panics in the job actor on the first processed image, once
// four downloads have finished: by then the mailbox is full and both image
// slots belong to images waiting to report. Everything else it ignores.
type panicObserver struct {
	once      sync.Once
	downloads atomic.Int32
}

func (o *panicObserver) JobActive(int)                     {}
func (o *panicObserver) JobFinished(string)                {}
func (o *panicObserver) ImageFailed(string, time.Duration) {}
func (o *panicObserver) ImageInflight(int)                 {}
func (o *panicObserver) Append(string, int, time.Duration) {}
func (o *panicObserver) ImageSlots(int, time.Duration)     {}
func (o *panicObserver) Download(time.Duration)            { o.downloads.Add(1) }
func (o *panicObserver) ImageProcessed(time.Duration) {
	o.once.Do(func() {
		for deadline := time.Now().Add(10 * time.Second); o.downloads.Load() < 4 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		panic("observer failed")
	})
}

// A job actor that dies with a full mailbox does not leave its store
// actors blocked holding image slots: the next job still runs.
func TestEngine_DeadJobActorFreesImageSlots(t *testing.T) {
	store := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{AckWait: time.Hour})
	img := newGatedImages(t, "nobody")
	startEngine(t, store, "owner", func(c *actors.Config) {
		c.Observer = &panicObserver{}
		c.MailboxSize = 1
		c.ImageSlots = 2
		c.JobSlots = 1
	})
	var urls []string
	for i := range 20 {
		urls = append(urls, fmt.Sprintf("%s/%d.png", img.URL, i))
	}
	first := submit(t, store, urls...)
	second := submit(t, store, img.URL+"/x.png")
	waitCompleted(t, store, second)
	waitCompleted(t, store, first) // handed back after the panic, then finished
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A job's completion line at info level carries its failures by reason.
func TestEngine_CompletionLogCountsFailuresByReason(t *testing.T) {
	store := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	img := newGatedImages(t, "nobody")
	var logs syncBuffer
	startEngine(t, store, "owner", func(c *actors.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		c.KnownStore = func(id string) bool { return id == "S1" }
	})
	sub := &events.JobSubmitted{Count: 2, Visits: []events.Visit{
		{StoreID: "S1", ImageURLs: []string{img.URL + "/1.png", "http://127.0.0.1:1/refused.png"}, VisitTime: "t"},
		{StoreID: "S404", ImageURLs: []string{"a", "b"}, VisitTime: "t"},
	}}
	id, _, err := store.Submit(context.Background(), sub, "")
	if err != nil {
		t.Fatal(err)
	}
	waitCompleted(t, store, id)
	jstest.CheckFor(t, 10*time.Second, func() error {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, `"msg":"job completed"`) {
				if want := `"failed_by_reason":{"connection failed":1,"unknown store":2}`; !strings.Contains(line, want) {
					return fmt.Errorf("completion line %s lacks %s", line, want)
				}
				return nil
			}
		}
		return errors.New("no completion line yet")
	})
}
