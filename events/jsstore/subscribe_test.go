package jsstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// twoJobs stores two jobs whose messages interleave and returns their ids
// and the sequences of each job's messages (submission first).
func twoJobs(t *testing.T, s *jsstore.EventLog) (a, b uint64, seqs map[uint64][]uint64) {
	t.Helper()
	ctx := context.Background()
	seqs = map[uint64][]uint64{}
	var err error
	if a, _, err = s.Submit(ctx, sampleJob("x", "y"), ""); err != nil {
		t.Fatal(err)
	}
	if b, _, err = s.Submit(ctx, sampleJob("z"), ""); err != nil {
		t.Fatal(err)
	}
	seqs[a], seqs[b] = []uint64{a}, []uint64{b}
	fence := map[uint64]uint64{}
	write := func(id uint64, kind string, evs ...events.Event) {
		seq, err := s.Append(ctx, id, kind, fence[id], fmt.Sprintf("w/%d/%d", id, fence[id]), evs...)
		if err != nil {
			t.Fatal(err)
		}
		fence[id] = seq
		seqs[id] = append(seqs[id], seq)
	}
	write(a, events.KindStarted, &events.JobStarted{Attempt: 1})
	write(b, events.KindStarted, &events.JobStarted{Attempt: 1})
	write(a, events.KindImages, processed(0, 0))
	write(b, events.KindImages, processed(0, 0))
	write(b, events.KindCompleted, &events.JobCompleted{Status: events.StatusCompleted, Processed: 1})
	write(a, events.KindImages, processed(0, 1))
	return a, b, seqs
}

func TestEventLog_ReadJob(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	ctx := context.Background()
	a, b, seqs := twoJobs(t, s)
	last, err := s.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sa := seqs[a]
	tests := []struct {
		name     string
		id       uint64
		from, to uint64
		want     []uint64
	}{
		{"whole job", a, 0, last, sa},
		{"whole job, other", b, 1, last, seqs[b]},
		{"after the submission", a, a + 1, last, sa[1:]},
		{"from a message on", a, sa[2], last, sa[2:]},
		{"up to a message", a, 0, sa[1], sa[:2]},
		{"up to a sequence between messages", a, 0, sa[2] + 1, sa[:3]},
		{"past the end", a, last + 1, last + 10, nil},
		{"nothing before the submission", a, 0, a - 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []uint64
			err := s.ReadJob(ctx, tt.id, tt.from, tt.to, func(r events.Record, err error) error {
				if err != nil {
					t.Errorf("seq %d: %v", r.Seq, err)
				}
				if r.Seq != tt.id && r.Subject != events.SubjectSubmitted {
					if id, _, ok := events.ParseJobSubject(r.Subject); !ok || id != tt.id {
						t.Errorf("seq %d on %s is not job %d's", r.Seq, r.Subject, tt.id)
					}
				}
				got = append(got, r.Seq)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("sequences %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("not a job", func(t *testing.T) {
		err := s.ReadJob(ctx, sa[1], 0, last, func(events.Record, error) error { return nil })
		if !errors.Is(err, events.ErrJobNotFound) {
			t.Fatalf("ReadJob of a sequence that holds no submission: %v, want ErrJobNotFound", err)
		}
	})
	t.Run("fn's error stops the read", func(t *testing.T) {
		stop := errors.New("stop")
		n := 0
		err := s.ReadJob(ctx, a, 0, last, func(events.Record, error) error { n++; return stop })
		if !errors.Is(err, stop) || n != 1 {
			t.Fatalf("err %v after %d messages, want stop after 1", err, n)
		}
	})
}

func TestEventLog_JobCompleted(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	ctx := context.Background()
	a, b, seqs := twoJobs(t, s)
	if got, err := s.JobCompleted(ctx, a); err != nil || got != 0 {
		t.Fatalf("unfinished job: %d, %v; want 0", got, err)
	}
	want := seqs[b][len(seqs[b])-1]
	if got, err := s.JobCompleted(ctx, b); err != nil || got != want {
		t.Fatalf("completed job: %d, %v; want %d", got, err, want)
	}
}

func TestEventLog_TailDeliversLiveMessagesInOrder(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, _, err := s.Submit(ctx, sampleJob("x"), "")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan uint64, 100)
	done := make(chan error, 1)
	go func() {
		done <- s.Tail(ctx, first, func(r events.Record, err error) error {
			if err != nil {
				return err
			}
			got <- r.Seq
			return nil
		})
	}()
	var want []uint64
	for i := range 5 {
		id, _, err := s.Submit(ctx, sampleJob(fmt.Sprint(i)), "")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	for _, w := range want {
		select {
		case seq := <-got:
			if seq != w {
				t.Fatalf("got seq %d, want %d (the message at %d was before the tail's start)", seq, w, first)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no message %d", w)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Tail after cancel: %v, want context.Canceled", err)
	}
}

func TestEventLog_ReadAll(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	ctx := context.Background()
	twoJobs(t, s)
	last, _ := s.LastSeq(ctx)
	var got []uint64
	if err := s.ReadAll(ctx, 3, 0, func(r events.Record, err error) error {
		got = append(got, r.Seq)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var want []uint64
	for seq := uint64(3); seq <= last; seq++ {
		want = append(want, seq)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("sequences %v, want %v", got, want)
	}
}

// Any number of job streams may read at once: ReadJob holds none of the
// stream's consumers, whose number NATS bounds.
func TestEventLog_ReadJobCreatesNoConsumer(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	ctx := context.Background()
	a, _, _ := twoJobs(t, s)
	consumers := func() int {
		st, err := s.JetStream().Stream(ctx, jsstore.DefaultStream)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().State.Consumers
	}
	before := consumers()
	n := 0
	err := s.ReadJob(ctx, a, 0, 1000, func(events.Record, error) error {
		n++
		if c := consumers(); c != before {
			t.Fatalf("%d consumers during ReadJob, %d before", c, before)
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("read %d messages: %v", n, err)
	}
}
