package jsstore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
)

// Every caller gets the answer of a request sent after it arrived, and
// callers that arrive together share requests: the log is asked at most
// once at a time.
func TestLastSeqFetcher_AnswersFromRequestsSentAfterTheCall(t *testing.T) {
	var logEnd, requests, inFlight, maxInFlight atomic.Int64
	f := lastSeqFetcher{fetch: func(context.Context) (uint64, error) {
		n := inFlight.Add(1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		requests.Add(1)
		end := logEnd.Load() // read at the start of the request
		time.Sleep(2 * time.Millisecond)
		inFlight.Add(-1)
		return uint64(end), nil
	}}
	const callers = 200
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			written := logEnd.Add(1) // a write acknowledged before the call
			got, err := f.get(context.Background())
			if err != nil || got < uint64(written) {
				t.Errorf("caller %d: %d, %v; a write at %d preceded the call", i, got, err, written)
			}
		}()
	}
	wg.Wait()
	if maxInFlight.Load() != 1 {
		t.Errorf("%d requests in flight at once", maxInFlight.Load())
	}
	if n := requests.Load(); n >= callers {
		t.Errorf("%d requests for %d callers: none shared", n, callers)
	}
	t.Logf("%d callers, %d requests", callers, requests.Load())
}

// The queue hands runs bounded in messages and weight, in order, and holds
// the reader back while it is full.
func TestRunQueue_BoundsRunsAndWeight(t *testing.T) {
	q := newRunQueue(10)
	ctx := context.Background()
	msg := func(seq uint64, n int) events.Message {
		evs := make([]events.Event, n)
		for i := range evs {
			evs[i] = &events.JobStarted{}
		}
		return events.Message{Seq: seq, Batch: events.Batch{Events: evs}}
	}
	for seq := uint64(1); seq <= 3; seq++ {
		if err := q.put(ctx, msg(seq, 2)); err != nil { // weight 3 each
			t.Fatal(err)
		}
	}
	blocked := make(chan error, 1)
	go func() { blocked <- q.put(ctx, msg(4, 2)) }()
	select {
	case err := <-blocked:
		t.Fatalf("put over the limit returned %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	run, err := q.take(ctx, 2, 100)
	if err != nil || len(run) != 2 || run[0].Seq != 1 || run[1].Seq != 2 {
		t.Fatalf("first run: %+v %v", run, err)
	}
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	run, _ = q.take(ctx, 10, 3) // weight bound: one message, never none
	if len(run) != 1 || run[0].Seq != 3 {
		t.Fatalf("second run: %+v", run)
	}
	// A message heavier than the limit goes through an empty queue.
	run, _ = q.take(ctx, 10, 100)
	if len(run) != 1 || run[0].Seq != 4 {
		t.Fatalf("third run: %+v", run)
	}
	if err := q.put(ctx, msg(5, 50)); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := q.put(cctx, msg(6, 1)); err == nil {
		t.Fatal("put on a full queue with an ended context succeeded")
	}
}
