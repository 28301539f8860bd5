package jsstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// heldSink is a real read model whose applies wait until released: a
// projection that is behind for as long as the test wants.
type heldSink struct {
	*events.ReadModel
	release chan struct{}
}

func newHeldSink() *heldSink {
	return &heldSink{ReadModel: events.NewReadModel(), release: make(chan struct{})}
}

func (h *heldSink) ApplyMessages(ctx context.Context, msgs []events.Message) (events.ApplyReport, error) {
	select {
	case <-h.release:
	case <-ctx.Done():
		return events.ApplyReport{}, ctx.Err()
	}
	return h.ReadModel.ApplyMessages(ctx, msgs)
}

func runProjection(t *testing.T, p *jsstore.Projection) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("projection: %v", err)
		}
	})
}

// completeJob submits a one-image job and records its outcome and
// completion, as an owner would.
func completeJob(t *testing.T, s *jsstore.EventLog) uint64 {
	t.Helper()
	ctx := context.Background()
	id, _, err := s.Submit(ctx, sampleJob("a"), "")
	if err != nil {
		t.Fatal(err)
	}
	seq, err := s.Append(ctx, id, events.KindImages, 0, fmt.Sprintf("t-%d/0", id), processed(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, id, events.KindCompleted, seq, fmt.Sprintf("t-%d/%d", id, seq), &events.JobCompleted{Status: events.StatusCompleted, Processed: 1}); err != nil {
		t.Fatal(err)
	}
	return id
}

// Monotonic reads: of two projections of one log, the one that is behind
// never lets a read through before it has reached what the log held when
// the read arrived: it waits, then answers ErrStale, and serves the read
// once it has caught up.
func TestProjection_SyncNeverServesOlderThanTheLog(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	ctx := context.Background()
	id := completeJob(t, s)

	ahead := events.NewReadModel()
	pa := jsstore.NewProjection(s, ahead, nil, nil)
	pa.Linearizable = true
	runProjection(t, pa)
	behind := newHeldSink()
	pb := jsstore.NewProjection(s, behind, nil, nil)
	pb.Linearizable = true
	pb.ReadWait = 200 * time.Millisecond
	runProjection(t, pb)

	if err := pa.SyncJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	if v, _ := ahead.Job(id); v.Status != events.StatusCompleted {
		t.Fatalf("the projection ahead says %+v", v)
	}
	start := time.Now()
	err := pb.SyncJob(ctx, id)
	if !errors.Is(err, events.ErrStale) {
		t.Fatalf("sync of the projection behind: %v, want ErrStale", err)
	}
	if waited := time.Since(start); waited < pb.ReadWait {
		t.Fatalf("gave up after %s, before ReadWait %s", waited, pb.ReadWait)
	}
	if pb.CaughtUp() {
		t.Fatal("caught up without applying")
	}
	close(behind.release)
	if err := pb.SyncJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	if v, _ := behind.Job(id); v.Status != events.StatusCompleted {
		t.Fatalf("after catching up: %+v", v)
	}
	jstest.CheckFor(t, 5*time.Second, func() error {
		if !pb.CaughtUp() {
			return errors.New("not caught up")
		}
		return nil
	})
}

// Without Linearizable (a sole instance), reads of applied jobs go straight
// to the sink once it has caught up, but never before: during the catch-up
// after a start every read waits for the log's end.
func TestProjection_SyncJobWaitsDuringCatchUpOnly(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	ctx := context.Background()
	id := completeJob(t, s)
	sink := newHeldSink()
	p := jsstore.NewProjection(s, sink, nil, nil)
	p.ReadWait = 100 * time.Millisecond
	runProjection(t, p)
	if err := p.SyncJob(ctx, id); !errors.Is(err, events.ErrStale) {
		t.Fatalf("read during the catch-up: %v, want ErrStale", err)
	}
	close(sink.release)
	jstest.CheckFor(t, 5*time.Second, func() error {
		if !p.CaughtUp() {
			return errors.New("not caught up")
		}
		return nil
	})
	// A job submitted after the catch-up is in the sink once SyncJob
	// returns (read-your-writes).
	for range 20 {
		next, _, err := s.Submit(ctx, sampleJob("b"), "")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.SyncJob(ctx, next); err != nil {
			t.Fatal(err)
		}
		if _, ok := sink.Job(next); !ok {
			t.Fatalf("job %d not in the sink after SyncJob", next)
		}
	}
}

// A sink that fails to store stops the projection with its error.
func TestProjection_SinkFailureStopsRun(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	completeJob(t, s)
	p := jsstore.NewProjection(s, failingSink{events.NewReadModel()}, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Run(ctx); err == nil || !errors.Is(err, errDiskFull) {
		t.Fatalf("Run = %v, want the sink's error", err)
	}
}

var errDiskFull = errors.New("disk full")

type failingSink struct{ *events.ReadModel }

func (failingSink) ApplyMessages(context.Context, []events.Message) (events.ApplyReport, error) {
	return events.ApplyReport{}, errDiskFull
}
