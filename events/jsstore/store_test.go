package jsstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

func sampleJob(images ...string) *events.JobSubmitted {
	return &events.JobSubmitted{Count: 1, Visits: []events.Visit{{StoreID: "S1", ImageURLs: images, VisitTime: "t"}}}
}

func processed(v, i int) *events.ImageProcessed {
	return &events.ImageProcessed{ImageRef: events.ImageRef{Visit: v, Index: i}, StoreID: "S1", Width: 1, Height: 1, Perimeter: 4}
}

func TestStore_Contract(t *testing.T) {
	if testing.Short() {
		t.Skip("starts NATS clusters")
	}
	for _, b := range jstest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := b.Open(t, jsstore.Config{})
			ctx := context.Background()

			t.Run("submit returns the sequence as job id, idempotently by key", func(t *testing.T) {
				id1, replayed, err := s.Submit(ctx, sampleJob("http://x/a.jpg"), "key-1")
				if err != nil || replayed {
					t.Fatalf("first submit: replayed %v, %v", replayed, err)
				}
				retried := sampleJob("http://x/a.jpg")
				retried.SubmittedAt = time.Now() // the time of the retry is not part of the job
				again, replayed, err := s.Submit(ctx, retried, "key-1")
				if err != nil || again != id1 || !replayed {
					t.Fatalf("retry with same key: %d, replayed %v, %v; want a replay of %d", again, replayed, err, id1)
				}
				if other, _, err := s.Submit(ctx, sampleJob("http://x/other.jpg"), "key-1"); !errors.Is(err, events.ErrIdempotencyConflict) {
					t.Fatalf("same key, other job: %d, %v; want ErrIdempotencyConflict", other, err)
				}
				id2, _, err := s.Submit(ctx, sampleJob("http://x/a.jpg"), "")
				if err != nil || id2 <= id1 {
					t.Fatalf("second job id %d (err %v) not above %d", id2, err, id1)
				}
				if _, err := s.Submission(ctx, id2+100); !errors.Is(err, events.ErrJobNotFound) {
					t.Fatalf("missing job: %v", err)
				}
			})

			t.Run("fenced appends: retries resolve to the first write, stale owners are refused", func(t *testing.T) {
				id, _, err := s.Submit(ctx, sampleJob("a", "b", "c"), "")
				if err != nil {
					t.Fatal(err)
				}
				seq1, err := s.Append(ctx, id, events.KindImages, 0, "owner-a/0", processed(0, 0))
				if err != nil {
					t.Fatal(err)
				}
				// A retry of the same append (its ack was lost) is the same write.
				retry, err := s.Append(ctx, id, events.KindImages, 0, "owner-a/0", processed(0, 0))
				if err != nil || retry != seq1 {
					t.Fatalf("retried append: seq %d err %v, want %d", retry, err, seq1)
				}
				// Another owner holding the old fence must not write.
				if _, err := s.Append(ctx, id, events.KindImages, 0, "owner-b/0", processed(0, 1)); !errors.Is(err, events.ErrFenced) {
					t.Fatalf("stale owner: %v, want ErrFenced", err)
				}
				seq2, err := s.Append(ctx, id, events.KindImages, seq1, "owner-a/"+fmt.Sprint(seq1), processed(0, 1), processed(0, 2))
				if err != nil || seq2 <= seq1 {
					t.Fatalf("second append: %d %v", seq2, err)
				}
				// Another job's appends do not move this job's fence.
				other, _, _ := s.Submit(ctx, sampleJob("z"), "")
				if _, err := s.Append(ctx, other, events.KindStarted, 0, "owner-c/0", &events.JobStarted{Attempt: 1}); err != nil {
					t.Fatal(err)
				}
				seq3, err := s.Append(ctx, id, events.KindCompleted, seq2, "owner-a/"+fmt.Sprint(seq2), &events.JobCompleted{Status: events.StatusCompleted, Processed: 3})
				if err != nil {
					t.Fatal(err)
				}
				h, err := s.LoadJob(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if h.LastSeq != seq3 || len(h.Records) != 3 || h.Submitted.Images() != 3 {
					t.Fatalf("history: last %d, %d records", h.LastSeq, len(h.Records))
				}
				st := events.NewJobState(id, h.Submitted)
				for _, r := range h.Records {
					for _, ev := range r.Events {
						st.Apply(ev)
					}
				}
				if v := st.View(); v.Status != events.StatusCompleted || v.Processed != 3 || st.Duplicates != 0 {
					t.Fatalf("folded %+v dup %d", v, st.Duplicates)
				}
			})

			t.Run("projection follows and reads its writes", func(t *testing.T) {
				model := events.NewReadModel()
				p := jsstore.NewProjection(s, model, nil, nil)
				pctx, cancel := context.WithCancel(ctx)
				defer cancel()
				go p.Run(pctx)
				jstest.CheckFor(t, 10*time.Second, func() error {
					if !p.CaughtUp() {
						return errors.New("not caught up")
					}
					return nil
				})
				id, _, err := s.Submit(ctx, sampleJob("a"), "")
				if err != nil {
					t.Fatal(err)
				}
				if err := p.SyncJob(ctx, id); err != nil {
					t.Fatal(err)
				}
				if v, ok := model.Job(id); !ok || v.Status != events.StatusOngoing {
					t.Fatalf("job right after submit: %+v %v", v, ok)
				}
				// A job beyond the log's end: the sync returns at once, the
				// sink says it does not exist.
				if err := p.SyncJob(ctx, id+1000); err != nil {
					t.Fatal(err)
				}
				if _, ok := model.Job(id + 1000); ok {
					t.Fatal("a job beyond the log exists")
				}
			})

			t.Run("work queue hands out each job once until acked", func(t *testing.T) {
				qctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				seen := map[uint64]int{}
				for {
					d, err := s.NextJob(qctx)
					if err != nil {
						t.Fatal(err)
					}
					seen[d.JobID()]++
					if seen[d.JobID()] > 1 {
						t.Fatalf("job %d delivered twice", d.JobID())
					}
					if err := d.Ack(qctx); err != nil {
						t.Fatal(err)
					}
					info, _ := s.Info(qctx)
					if uint64(len(seen)) >= 5 || d.JobID() >= info.LastSeq {
						break
					}
				}
			})
		})
	}
}

func TestStore_FullStreamRefusesWithErrStorageFull(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{MaxBytes: 1 << 20})
	ctx := context.Background()
	long := strings.Repeat("x", 60<<10)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, _, err = s.Submit(ctx, sampleJob("http://x/"+fmt.Sprint(i)+long[:60<<10-100]), "")
	}
	if !errors.Is(err, events.ErrStorageFull) {
		t.Fatalf("err = %v, want ErrStorageFull", err)
	}
}

func TestAdmission_RefusesNearFullAndWhenQueueIsLong(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{MaxBytes: 1 << 20})
	ctx := context.Background()
	a := jsstore.NewAdmission(s, 3)
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Check(); err != nil {
		t.Fatalf("empty stream refused: %v", err)
	}
	for range 3 {
		if _, _, err := s.Submit(ctx, sampleJob("http://x/a.jpg"), ""); err != nil {
			t.Fatal(err)
		}
	}
	// The work consumer counts a stored job as pending a moment after the
	// publish is acknowledged: refresh until it does.
	jstest.CheckFor(t, 10*time.Second, func() error {
		if err := a.Refresh(ctx); err != nil {
			return err
		}
		if err := a.Check(); !errors.Is(err, events.ErrOverloaded) {
			return fmt.Errorf("3 queued jobs (%d counted): %v, want ErrOverloaded", a.Queued(), err)
		}
		return nil
	})
	a.MaxQueued = 0
	long := strings.Repeat("y", 50<<10)
	for i := 0; i < 40; i++ { // until past the 90% mark (or full)
		if _, _, err := s.Submit(ctx, sampleJob("http://x/"+fmt.Sprint(i)+long[:30<<10]), ""); err != nil {
			break
		}
	}
	a.Refresh(ctx)
	if err := a.Check(); !errors.Is(err, events.ErrStorageFull) {
		t.Fatalf("nearly full stream: %v, want ErrStorageFull", err)
	}
}

// A restarted sole instance reclaims the deliveries its predecessor left
// unacked, at once and only those: jobs acked after an unacked one are not
// redelivered, and delivery counts carry on.
func TestStore_ReclaimJobsRedeliversOnlyUnacked(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{AckWait: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ids []uint64
	for _, tag := range []string{"a", "b", "c", "d"} {
		id, _, err := s.Submit(ctx, sampleJob(tag), "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// The predecessor took all four, acked the 1st, 3rd and 4th, then died
	// holding the 2nd.
	for i, want := range ids {
		d, err := s.NextJob(ctx)
		if err != nil || d.JobID() != want {
			t.Fatalf("delivery %d: job %v, %v", i, d, err)
		}
		if i != 1 {
			if err := d.Ack(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := s.ReclaimJobs(ctx)
	if err != nil || n != 1 {
		t.Fatalf("reclaim: %d, %v; want 1 job", n, err)
	}
	d, err := s.NextJob(ctx)
	if err != nil || d.JobID() != ids[1] || d.Attempts() != 2 {
		t.Fatalf("after reclaim: %+v, %v; want job %d on its 2nd delivery", d, err, ids[1])
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancelShort()
	if d, err := s.NextJob(short); err == nil {
		t.Fatalf("job %d delivered again after it was acked", d.JobID())
	}
	ws, err := s.WorkState(ctx)
	if err != nil || ws.AckPending != 0 || ws.AckFloor != ids[3] {
		t.Fatalf("work state %+v, %v; want nothing pending, floor %d", ws, err, ids[3])
	}
}

// The largest job the API accepts (100,000 images, a 10 MiB body) is
// stored atomically as one message and read back whole.
func TestStore_LargestJobIsStoredWhole(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	ctx := context.Background()
	var urls []string
	for i := range 100_000 {
		urls = append(urls, fmt.Sprintf("https://images.example.com/retail/2026/11/23/store-visits/%08d-%s.jpg", i, strings.Repeat("x", 12)))
	}
	sub := &events.JobSubmitted{Count: 1, Visits: []events.Visit{{StoreID: "S1", ImageURLs: urls, VisitTime: "t"}}}
	id, _, err := s.Submit(ctx, sub, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Submission(ctx, id)
	if err != nil || got.Images() != 100_000 || got.Visits[0].ImageURLs[99_999] != urls[99_999] {
		t.Fatalf("read back: %v", err)
	}
}
