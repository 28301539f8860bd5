package jsstore_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
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

// gatedSink is a real read model that applies a message only once its
// sequence is at or below the gate.
type gatedSink struct {
	*events.ReadModel
	mu    sync.Mutex
	gate  uint64
	moved chan struct{} // closed and replaced whenever the gate moves
	waits chan uint64   // the sequence of each WaitFor call
}

func newGatedSink(gate uint64) *gatedSink {
	return &gatedSink{ReadModel: events.NewReadModel(), gate: gate, moved: make(chan struct{}), waits: make(chan uint64, 16)}
}

func (g *gatedSink) WaitFor(ctx context.Context, seq uint64) error {
	g.waits <- seq
	return g.ReadModel.WaitFor(ctx, seq)
}

func (g *gatedSink) setGate(seq uint64) {
	g.mu.Lock()
	g.gate = seq
	close(g.moved)
	g.moved = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedSink) ApplyMessages(ctx context.Context, msgs []events.Message) (events.ApplyReport, error) {
	var report events.ApplyReport
	for _, m := range msgs {
		for {
			g.mu.Lock()
			open, moved := m.Seq <= g.gate, g.moved
			g.mu.Unlock()
			if open {
				break
			}
			select {
			case <-moved:
			case <-ctx.Done():
				return report, ctx.Err()
			}
		}
		r, err := g.ReadModel.ApplyMessages(ctx, []events.Message{m})
		if err != nil {
			return report, err
		}
		report.Applied += r.Applied
		report.Duplicates += r.Duplicates
		report.Problems = append(report.Problems, r.Problems...)
	}
	return report, nil
}

// Read-your-writes for a sole instance waits for the job's submission,
// not for the log's end: messages after it that the sink has not applied
// do not hold up the read.
func TestProjection_SyncJobWaitsForTheJobNotTheLogsEnd(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	ctx := context.Background()
	before := completeJob(t, s)
	sink := newGatedSink(math.MaxUint64)
	p := jsstore.NewProjection(s, sink, nil, nil)
	p.ReadWait = 5 * time.Second
	runProjection(t, p)
	jstest.CheckFor(t, 5*time.Second, func() error {
		if !p.CaughtUp() || sink.LastSeq() < before {
			return errors.New("not caught up")
		}
		return nil
	})
	sink.setGate(sink.LastSeq()) // hold everything from now on
	id, _, err := s.Submit(ctx, sampleJob("a"), "")
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 3 { // the job's outcomes, after its submission
		if last, err = s.Append(ctx, id, events.KindImages, last, fmt.Sprintf("t-%d/%d", id, i), processed(0, i)); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- p.SyncJob(ctx, id) }()
	if seq := <-sink.waits; seq != id {
		t.Fatalf("SyncJob waits for sequence %d, want the job's submission %d (the log ends at %d)", seq, id, last)
	}
	sink.setGate(id) // the submission is applied; what follows stays held
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("SyncJob: %v", err)
		}
	case <-time.After(p.ReadWait / 2):
		t.Fatal("SyncJob still waiting with the job's submission applied: it waits for the log's end")
	}
	if _, ok := sink.Job(id); !ok {
		t.Fatalf("job %d not in the sink after SyncJob", id)
	}
	if got := sink.LastSeq(); got != id {
		t.Fatalf("sink at %d, want exactly the submission %d (the rest held)", got, id)
	}
	sink.setGate(math.MaxUint64)
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
