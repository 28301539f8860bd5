package jsstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// An instance sharing the stream with others refuses settings that differ
// from the stream's and consumer's, naming each, and changes nothing;
// UpdateExisting applies them.
func TestStore_SharedOpenRefusesDrift(t *testing.T) {
	nc := jstest.StartSingle(t)
	base := jsstore.Config{AckWait: time.Minute, MaxBytes: 1 << 30, Shared: true}
	jstest.Open(t, nc, base)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	same := base
	if _, err := jsstore.Open(ctx, nc, same); err != nil {
		t.Fatalf("same settings: %v", err)
	}
	drifting := base
	drifting.AckWait, drifting.MaxBytes = 15*time.Second, 2<<30
	_, err := jsstore.Open(ctx, nc, drifting)
	var de *jsstore.DriftError
	if !errors.As(err, &de) {
		t.Fatalf("drifting settings: %v, want a DriftError", err)
	}
	got := fmt.Sprint(de.Diffs)
	for _, want := range []string{"{ack_wait 1m0s 15s}", "{max_bytes 1073741824 2147483648}"} {
		if !strings.Contains(got, want) {
			t.Errorf("diffs %s lack %s", got, want)
		}
	}
	if len(de.Diffs) != 2 {
		t.Errorf("diffs %s: want exactly ack_wait and max_bytes", got)
	}
	js, _ := jetstream.New(nc)
	c, err := js.Consumer(ctx, "RETAILPULSE", jsstore.WorkConsumer)
	if err != nil || c.CachedInfo().Config.AckWait != time.Minute {
		t.Fatalf("the refused open changed the consumer: %v", err)
	}
	drifting.UpdateExisting = true
	if _, err := jsstore.Open(ctx, nc, drifting); err != nil {
		t.Fatalf("update: %v", err)
	}
	c, _ = js.Consumer(ctx, "RETAILPULSE", jsstore.WorkConsumer)
	if c.CachedInfo().Config.AckWait != 15*time.Second {
		t.Fatalf("update did not apply the ack wait: %s", c.CachedInfo().Config.AckWait)
	}
}

// Loading a job reads from the stream leader message by message: it
// creates no consumer, so it neither needs the meta leader nor leaves
// anything behind.
func TestStore_LoadJobCreatesNoConsumer(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	ctx := context.Background()
	id, _, _ := s.Submit(ctx, sampleJob("a", "b", "c"), "")
	fence := uint64(0)
	for i := range 3 {
		seq, err := s.Append(ctx, id, events.KindImages, fence, fmt.Sprint("m", i), processed(0, i))
		if err != nil {
			t.Fatal(err)
		}
		fence = seq
	}
	for range 20 {
		h, err := s.LoadJob(ctx, id)
		if err != nil || len(h.Records) != 3 || h.LastSeq != fence {
			t.Fatalf("load: %+v, %v", h, err)
		}
	}
	stream, _ := s.JetStream().Stream(ctx, s.StreamName())
	info, _ := stream.Info(ctx)
	if info.State.Consumers != 1 {
		t.Fatalf("%d consumers on the stream after 20 loads; want only the work consumer", info.State.Consumers)
	}
}

// A requeued job is delivered again through its requeue event; a completed
// one cannot be requeued.
func TestStore_RequeueDeliversTheJobAgain(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{AckWait: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id, _, _ := s.Submit(ctx, sampleJob("a"), "")
	d, err := s.NextJob(ctx)
	if err != nil || d.JobID() != id {
		t.Fatalf("delivery: %v", err)
	}
	if err := d.Ack(ctx); err != nil { // lost: acked while unfinished
		t.Fatal(err)
	}
	seq, err := s.Requeue(ctx, id, &events.JobRequeued{By: "test", At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s.Requeue(ctx, id, &events.JobRequeued{By: "test", At: time.Now()}); !errors.Is(err, jsstore.ErrRequeued) {
		t.Fatalf("a second requeue over the first: %d, %v; want ErrRequeued", again, err)
	}
	d, err = s.NextJob(ctx)
	if err != nil || d.JobID() != id {
		t.Fatalf("after requeue: %+v, %v", d, err)
	}
	sub, err := d.Submission(ctx)
	if err != nil || sub.Visits[0].ImageURLs[0] != "a" {
		t.Fatalf("requeued delivery's submission: %+v, %v", sub, err)
	}
	if _, err := s.Append(ctx, id, events.KindCompleted, seq, "done", &events.JobCompleted{Status: events.StatusCompleted}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Requeue(ctx, id, &events.JobRequeued{By: "test"}); !errors.Is(err, jsstore.ErrJobTerminal) {
		t.Fatalf("requeue of a completed job: %v", err)
	}
	if _, err := s.Requeue(ctx, id+1000, &events.JobRequeued{By: "test"}); !errors.Is(err, events.ErrJobNotFound) {
		t.Fatalf("requeue of no job: %v", err)
	}
}

// Submits and appends survive stream leader step-downs between store and
// acknowledgement: every submit gets an id, each stored exactly once, and a
// retried fenced append resolves to its first write.
func TestStore_WritesSurviveLeaderStepDowns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NATS cluster")
	}
	_, nc := jstest.StartCluster(t)
	s := jstest.Open(t, nc, jsstore.Config{Replicas: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var steps sync.WaitGroup
	steps.Add(1)
	go func() {
		defer steps.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+s.StreamName(), nil, 2*time.Second)
		}
	}()
	const n = 40
	ids := make([]uint64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 50 * time.Millisecond)
			ids[i], _, errs[i] = s.Submit(ctx, sampleJob(fmt.Sprint("img-", i)), fmt.Sprint("key-", i))
			if errs[i] != nil {
				return
			}
			fence := uint64(0)
			for k := range 3 {
				seq, err := s.Append(ctx, ids[i], events.KindImages, fence, fmt.Sprintf("a-%d-%d", i, k), processed(0, 0))
				if err != nil {
					errs[i] = fmt.Errorf("append %d: %w", k, err)
					return
				}
				fence = seq
			}
		}()
	}
	wg.Wait()
	close(stop)
	steps.Wait()
	seen := map[uint64]int{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
		if prev, dup := seen[ids[i]]; dup {
			t.Fatalf("jobs %d and %d got the same id %d", prev, i, ids[i])
		}
		seen[ids[i]] = i
	}
	subs := 0
	err := s.Scan(ctx, 1, 0, func(m jsstore.Message) error {
		if m.Subject == events.SubjectSubmitted {
			subs++
		}
		return nil
	})
	if err != nil || subs != n {
		t.Fatalf("log holds %d submissions (%v), want %d", subs, err, n)
	}
	for i, id := range ids {
		h, err := s.LoadJob(ctx, id)
		if err != nil || len(h.Records) != 3 {
			t.Fatalf("job %d (%d): %d messages, %v; want each append once", i, id, len(h.Records), err)
		}
	}
}
