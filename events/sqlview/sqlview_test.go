package sqlview_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/sqlview"
)

var testLog = sqlview.Log{Stream: "RETAILPULSE", Created: "2026-01-01T00:00:00Z", LastSeq: 1 << 40}

var testStores = []sqlview.Store{
	{ID: "S1", Name: "One", AreaCode: "A1"},
	{ID: "S2", Name: "Two, Ltd", AreaCode: "A1"},
	{ID: "S3", Name: "Three", AreaCode: "A2"},
}

func openView(t testing.TB, path string) *sqlview.View {
	t.Helper()
	v, err := sqlview.Open(context.Background(), path, sqlview.Options{Log: testLog, Stores: testStores})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func newView(t testing.TB) *sqlview.View {
	return openView(t, filepath.Join(t.TempDir(), "readmodel.db"))
}

func submitted(seq uint64, at time.Time, visits ...events.Visit) events.Message {
	return events.Message{Seq: seq, Subject: events.SubjectSubmitted, Batch: events.Batch{V: 1, Events: []events.Event{
		&events.JobSubmitted{Count: len(visits), Visits: visits, SubmittedAt: at},
	}}}
}

func jobMsg(seq, id uint64, kind string, evs ...events.Event) events.Message {
	return events.Message{Seq: seq, Subject: events.JobSubject(id, kind), Batch: events.Batch{V: 1, JobID: id, Events: evs}}
}

func ok(v, i int, store string) *events.ImageProcessed {
	return &events.ImageProcessed{ImageRef: events.ImageRef{Visit: v, Index: i}, StoreID: store, Width: 10 + i, Height: 20 + v, Perimeter: 2 * (30 + i + v)}
}

func bad(v, i int, store, url, reason string) *events.ImageFailed {
	return &events.ImageFailed{ImageRef: events.ImageRef{Visit: v, Index: i}, StoreID: store, URL: url, Reason: reason}
}

func apply(t testing.TB, v *sqlview.View, msgs ...events.Message) events.ApplyReport {
	t.Helper()
	rep, err := v.ApplyMessages(context.Background(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// foldAll applies msgs to a fresh in-memory read model: the reference.
func foldAll(msgs []events.Message) *events.ReadModel {
	m := events.NewReadModel()
	m.ApplyMessages(context.Background(), msgs)
	return m
}

// sameJobs fails t unless v answers every job of want as want does.
func sameJobs(t testing.TB, want *events.ReadModel, v *sqlview.View) {
	t.Helper()
	var got []events.JobView
	if err := v.EachJob(context.Background(), func(jv events.JobView) error { got = append(got, jv); return nil }); err != nil {
		t.Fatal(err)
	}
	if w := want.Jobs(); !reflect.DeepEqual(w, got) {
		t.Fatalf("jobs differ from the fold:\nfold %+v\nview %+v", w, got)
	}
	for _, w := range want.Jobs() {
		j, err := v.Job(context.Background(), w.ID)
		if err != nil || !reflect.DeepEqual(j, w) {
			t.Fatalf("Job(%d) = %+v, %v; the fold says %+v", w.ID, j, err, w)
		}
		if j, err := sqlview.JobRow(context.Background(), v, w.ID); err != nil || !reflect.DeepEqual(j, w) {
			t.Fatalf("job %d's row = %+v, %v; the fold says %+v", w.ID, j, err, w)
		}
	}
	problems, err := v.CheckCounters(context.Background())
	if err != nil || len(problems) > 0 {
		t.Fatalf("counters: %v %q", err, problems)
	}
}

func TestView_AgreesWithTheFold(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	twoStores := []events.Visit{
		{StoreID: "S2", ImageURLs: []string{"http://x/a", "http://x/b"}, VisitTime: "2026-11-23T10:00:00Z"},
		{StoreID: "S1", ImageURLs: []string{"http://x/c"}, VisitTime: "t"},
		{StoreID: "S2", ImageURLs: []string{"http://x/d"}, VisitTime: "2026-11-24"},
	}
	tests := []struct {
		name string
		msgs []events.Message
	}{
		{"submitted only", []events.Message{submitted(1, at, twoStores...)}},
		{"all processed, then completed", []events.Message{
			submitted(1, at, twoStores...),
			jobMsg(2, 1, events.KindStarted, &events.JobStarted{Attempt: 1}),
			jobMsg(3, 1, events.KindImages, ok(0, 0, "S2"), ok(0, 1, "S2"), ok(1, 0, "S1"), ok(2, 0, "S2")),
			jobMsg(4, 1, events.KindCompleted, &events.JobCompleted{Status: events.StatusCompleted, Processed: 4}),
		}},
		{"duplicates: the first outcome wins", []events.Message{
			submitted(1, at, twoStores...),
			jobMsg(2, 1, events.KindImages, bad(0, 1, "S2", "http://x/b", "http 404"), ok(0, 1, "S2"), ok(0, 0, "S2")),
			jobMsg(3, 1, events.KindImages, ok(0, 0, "S2"), bad(0, 0, "S2", "http://x/a", "timeout")),
		}},
		{"failed with the event's error list", []events.Message{
			submitted(1, at, twoStores...),
			jobMsg(2, 1, events.KindImages, bad(1, 0, "S1", "http://x/c", "http 404")),
			jobMsg(3, 1, events.KindCompleted, &events.JobCompleted{Status: events.StatusFailed, Errors: []events.StoreError{{StoreID: "S1", Error: "listed by the owner"}}}),
		}},
		{"failed without a list: stores by first visit, first failing image each", []events.Message{
			submitted(1, at, twoStores...),
			jobMsg(2, 1, events.KindImages, bad(2, 0, "S2", "http://x/d", "http 5xx"), bad(1, 0, "S1", "http://x/c", "unknown store")),
			jobMsg(3, 1, events.KindImages, bad(0, 1, "S2", "http://x/b", "http 404"), ok(0, 0, "S2")),
			jobMsg(4, 1, events.KindCompleted, &events.JobCompleted{Status: events.StatusFailed}),
		}},
		{"failure and completion in one message", []events.Message{
			submitted(1, at, twoStores...),
			jobMsg(2, 1, events.KindImages, ok(0, 0, "S2"), bad(0, 1, "S2", "http://x/b", "not an image"),
				&events.JobCompleted{Status: events.StatusFailed}, ok(1, 0, "S1")),
		}},
		{"everything after completion is ignored", []events.Message{
			submitted(1, at, twoStores...),
			jobMsg(2, 1, events.KindCompleted, &events.JobCompleted{Status: events.StatusFailed, Errors: []events.StoreError{{StoreID: "S2", Error: "job abandoned after 5 delivery attempts without progress"}}}),
			jobMsg(3, 1, events.KindImages, ok(0, 0, "S2")),
			jobMsg(4, 1, events.KindCompleted, &events.JobCompleted{Status: events.StatusCompleted}),
		}},
		{"requeue and restarts change nothing", []events.Message{
			submitted(1, at, twoStores...),
			jobMsg(2, 1, events.KindStarted, &events.JobStarted{Attempt: 1}),
			jobMsg(3, 1, events.KindRequeued, &events.JobRequeued{By: "op"}),
			jobMsg(4, 1, events.KindStarted, &events.JobStarted{Attempt: 2}),
		}},
		{"problems are skipped, the rest of the message applies", []events.Message{
			submitted(1, at, twoStores...),
			jobMsg(2, 1, events.KindImages, ok(0, 0, "S2"), ok(7, 0, "S2"), ok(0, 9, "S2"), ok(1, 0, "S1")),
			jobMsg(3, 99, events.KindImages, ok(0, 0, "S2")),
			{Seq: 4, Subject: events.SubjectSubmitted, Err: errors.New("not json")},
			{Seq: 5, Subject: "rp.other", Batch: events.Batch{V: 1, Events: []events.Event{ok(0, 0, "S1")}}},
			submitted(6, at, events.Visit{StoreID: "S9", ImageURLs: []string{"u"}, VisitTime: "t"}),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newView(t)
			apply(t, v, tt.msgs...)
			sameJobs(t, foldAll(tt.msgs), v)
			if last := tt.msgs[len(tt.msgs)-1].Seq; v.LastSeq() != last {
				t.Fatalf("LastSeq = %d, want %d", v.LastSeq(), last)
			}
		})
	}
}

// sameResults fails t unless every job's image results in v are what
// events.ResultsOf folds from its history in msgs.
func sameResults(t testing.TB, msgs []events.Message, v *sqlview.View) {
	t.Helper()
	histories := map[uint64]*events.History{}
	var ids []uint64
	for _, m := range msgs {
		if m.Subject == events.SubjectSubmitted && m.Err == nil {
			if sub, ok := m.Batch.Events[0].(*events.JobSubmitted); ok {
				histories[m.Seq] = &events.History{ID: m.Seq, Submitted: sub}
				ids = append(ids, m.Seq)
			}
			continue
		}
		if id, _, ok := events.ParseJobSubject(m.Subject); ok && histories[id] != nil {
			histories[id].Records = append(histories[id].Records, events.Record{Seq: m.Seq, Subject: m.Subject, Events: m.Batch.Events})
		}
	}
	for _, id := range ids {
		var got []events.ImageResult
		for cursor := ""; ; {
			page, err := v.Results(context.Background(), id, 3, cursor)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, page.Images...)
			if cursor = page.Next; cursor == "" {
				break
			}
		}
		if want := events.ResultsOf(histories[id]); !reflect.DeepEqual(got, want) {
			t.Fatalf("job %d results:\nview %+v\nfold %+v", id, got, want)
		}
	}
}

// randomHistory interleaves the events of several jobs the way owners
// write them, with duplicates, crashes (restarts), out-of-range images and
// completions with and without lists.
func randomHistory(r *rand.Rand, jobs int) []events.Message {
	var msgs []events.Message
	seq := uint64(0)
	next := func() uint64 { seq++; return seq }
	type job struct {
		id     uint64
		visits []events.Visit
		done   bool
	}
	var live []*job
	stores := []string{"S1", "S2", "S3", "S9"}
	reasons := []string{"http 404", "timeout", "unknown store", "not an image"}
	for len(live) > 0 || jobs > 0 {
		if jobs > 0 && (len(live) == 0 || r.IntN(3) == 0) {
			jobs--
			var visits []events.Visit
			for v := range 1 + r.IntN(4) {
				var urls []string
				for i := range 1 + r.IntN(5) {
					urls = append(urls, fmt.Sprintf("http://img/%d/%d/%d", seq, v, i))
				}
				visits = append(visits, events.Visit{StoreID: stores[r.IntN(len(stores))], ImageURLs: urls, VisitTime: "2026-11-2" + fmt.Sprint(r.IntN(9))})
			}
			s := next()
			msgs = append(msgs, submitted(s, time.Unix(int64(s), 0), visits...))
			live = append(live, &job{id: s, visits: visits})
			continue
		}
		k := r.IntN(len(live))
		j := live[k]
		var evs []events.Event
		kind := events.KindImages
		switch n := r.IntN(10); {
		case n == 0:
			kind, evs = events.KindStarted, []events.Event{&events.JobStarted{Attempt: 1}}
		case n == 1 || j.done:
			kind = events.KindCompleted
			c := &events.JobCompleted{Status: events.StatusCompleted}
			if r.IntN(2) == 0 {
				c.Status = events.StatusFailed
				if r.IntN(2) == 0 {
					c.Errors = []events.StoreError{{StoreID: "S1", Error: "given"}}
				}
			}
			evs = []events.Event{c}
			if j.done || r.IntN(2) == 0 {
				live = append(live[:k], live[k+1:]...)
			}
			j.done = true
		default:
			for range 1 + r.IntN(6) {
				// Owners copy the store and URL from the submission; now and
				// then an image beyond the visit or the job.
				v := r.IntN(len(j.visits) + 1)
				i := r.IntN(6)
				store, url := "S0", "http://img/outside"
				if v < len(j.visits) {
					store = j.visits[v].StoreID
					if i < len(j.visits[v].ImageURLs) {
						url = j.visits[v].ImageURLs[i]
					}
				}
				if r.IntN(3) == 0 {
					evs = append(evs, bad(v, i, store, url, reasons[r.IntN(len(reasons))]))
				} else {
					evs = append(evs, ok(v, i, store))
				}
			}
		}
		msgs = append(msgs, jobMsg(next(), j.id, kind, evs...))
	}
	return msgs
}

// Any history, applied in runs of any length, leaves the view answering
// what the fold answers, after every run.
// With a job cache of two entries, jobs are evicted mid-history and reads
// mix cached and database answers.
func TestView_AgreesWithTheFoldOnRandomHistories(t *testing.T) {
	for seed := range uint64(12) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			msgs := randomHistory(r, 6)
			v := newView(t)
			if seed%2 == 1 {
				sqlview.SetJobCacheCapacity(v, 2)
			}
			for i := 0; i < len(msgs); {
				n := 1 + r.IntN(8)
				n = min(n, len(msgs)-i)
				apply(t, v, msgs[i:i+n]...)
				i += n
				sameJobs(t, foldAll(msgs[:i]), v)
			}
			sameResults(t, msgs, v)
		})
	}
}

// Submissions of every size around the rows one INSERT carries keep every
// image, in its visit and place, with its URL.
func TestView_StoresEveryImageOfLargeSubmissions(t *testing.T) {
	v := newView(t)
	var msgs []events.Message
	for seq, sizes := range [][]int{{63}, {64}, {65}, {50, 50, 50}, {1, 128, 0, 7}, {200}} {
		var visits []events.Visit
		for vi, n := range sizes {
			var urls []string
			for i := range n {
				urls = append(urls, fmt.Sprintf("http://img/%d/%d/%d", seq, vi, i))
			}
			visits = append(visits, events.Visit{StoreID: "S1", ImageURLs: urls, VisitTime: "t"})
		}
		msgs = append(msgs, submitted(uint64(seq+1), time.Unix(int64(seq), 0), visits...))
	}
	last := uint64(len(msgs))
	msgs = append(msgs, jobMsg(last+1, last, events.KindImages, ok(0, 199, "S1"), bad(0, 0, "S1", "http://img/5/0/0", "http 404")))
	apply(t, v, msgs...)
	sameJobs(t, foldAll(msgs), v)
	sameResults(t, msgs, v)
}

// A message is applied once: runs that repeat or overlap what was applied
// change nothing, and a closed and reopened database resumes after the
// last sequence it committed.
func TestView_AppliesEachMessageOnceAcrossRestarts(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	msgs := randomHistory(r, 8)
	path := filepath.Join(t.TempDir(), "readmodel.db")
	v := openView(t, path)
	half := len(msgs) / 2
	apply(t, v, msgs[:half]...)
	rep := apply(t, v, msgs[:half]...)
	if rep.Applied != 0 {
		t.Fatalf("a repeated run applied %d events", rep.Applied)
	}
	apply(t, v, msgs[half-3:half+2]...) // overlaps
	v.Close()

	v = openView(t, path)
	if got := v.LastSeq(); got != msgs[half+1].Seq {
		t.Fatalf("reopened at %d, want %d", got, msgs[half+1].Seq)
	}
	apply(t, v, msgs...) // a reader that starts over from the beginning
	sameJobs(t, foldAll(msgs), v)
	p, err := v.Progress(context.Background())
	if err != nil || p.LastSeq != msgs[len(msgs)-1].Seq {
		t.Fatalf("progress %+v %v", p, err)
	}
}

// A run whose transaction does not commit (here: its context ends) leaves
// nothing behind, not even its sequence; the same run applies later.
func TestView_UncommittedRunLeavesNothing(t *testing.T) {
	at := time.Unix(0, 0)
	v := newView(t)
	apply(t, v, submitted(1, at, events.Visit{StoreID: "S1", ImageURLs: []string{"a"}, VisitTime: "t"}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	run := []events.Message{jobMsg(2, 1, events.KindImages, ok(0, 0, "S1")), jobMsg(3, 1, events.KindCompleted, &events.JobCompleted{Status: events.StatusCompleted})}
	if _, err := v.ApplyMessages(ctx, run); err == nil {
		t.Fatal("a run with an ended context applied")
	}
	if v.LastSeq() != 1 {
		t.Fatalf("LastSeq = %d after a failed run", v.LastSeq())
	}
	if j, _ := v.Job(context.Background(), 1); j.Status != events.StatusOngoing || j.Processed != 0 {
		t.Fatalf("job after a failed run: %+v", j)
	}
	apply(t, v, run...)
	if j, _ := v.Job(context.Background(), 1); j.Status != events.StatusCompleted || j.Processed != 1 {
		t.Fatalf("job after the run: %+v", j)
	}
}

// A database of another stream, of an earlier incarnation of the stream,
// or ahead of the log is discarded and starts empty; the store master is
// replaced when it changes.
func TestOpen_DiscardsDatabaseOfAnotherLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "readmodel.db")
	v := openView(t, path)
	apply(t, v, submitted(5, time.Unix(0, 0), events.Visit{StoreID: "S1", ImageURLs: []string{"a"}, VisitTime: "t"}))
	v.Close()
	tests := []struct {
		name string
		log  sqlview.Log
		kept bool
	}{
		{"same log", testLog, true},
		{"same log, further on", sqlview.Log{Stream: testLog.Stream, Created: testLog.Created, LastSeq: 5}, true},
		{"log behind the database", sqlview.Log{Stream: testLog.Stream, Created: testLog.Created, LastSeq: 4}, false},
		{"another stream", sqlview.Log{Stream: "OTHER", Created: testLog.Created, LastSeq: 100}, false},
		{"recreated stream", sqlview.Log{Stream: testLog.Stream, Created: "2027-01-01T00:00:00Z", LastSeq: 100}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each case starts from the same database.
			v, err := sqlview.Open(context.Background(), path, sqlview.Options{Log: testLog})
			if err != nil {
				t.Fatal(err)
			}
			if v.LastSeq() == 0 {
				apply(t, v, submitted(5, time.Unix(0, 0), events.Visit{StoreID: "S1", ImageURLs: []string{"a"}, VisitTime: "t"}))
			}
			v.Close()
			v, err = sqlview.Open(context.Background(), path, sqlview.Options{Log: tt.log})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			_, jerr := v.Job(context.Background(), 5)
			if kept := v.LastSeq() == 5 && jerr == nil; kept != tt.kept {
				t.Fatalf("kept = %v (last %d, job: %v), want %v", kept, v.LastSeq(), jerr, tt.kept)
			}
			if !tt.kept && !errors.Is(jerr, events.ErrJobNotFound) {
				t.Fatalf("job of a discarded database: %v", jerr)
			}
		})
	}
}

func TestParseVisitTime_Layouts(t *testing.T) {
	utc := func(s string) time.Time { t, _ := time.Parse(time.RFC3339Nano, s); return t.UTC() }
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2026-11-23T10:00:00Z", utc("2026-11-23T10:00:00Z"), true},
		{"2026-11-23T10:00:00.250+05:30", utc("2026-11-23T04:30:00.25Z"), true},
		{"2026-11-23 10:00:00+05:30", utc("2026-11-23T04:30:00Z"), true},
		{"2026-11-23 10:00:00", utc("2026-11-23T10:00:00Z"), true},
		{"2026-11-23T10:00:00", utc("2026-11-23T10:00:00Z"), true},
		{"2026-11-23 10:00:00.5", utc("2026-11-23T10:00:00.5Z"), true},
		{"2026-11-23 10:00", utc("2026-11-23T10:00:00Z"), true},
		{" 2026-11-23 ", utc("2026-11-23T00:00:00Z"), true},
		{"time of store visit", time.Time{}, false},
		{"23/11/2026", time.Time{}, false},
		{"2026-13-01", time.Time{}, false},
		{"", time.Time{}, false},
	}
	for _, tt := range tests {
		got, ok := sqlview.ParseVisitTime(tt.in)
		if ok != tt.ok || !got.Equal(tt.want) {
			t.Errorf("ParseVisitTime(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestView_WaitForReleasesOnCommit(t *testing.T) {
	v := newView(t)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- v.WaitFor(ctx, 2)
	}()
	apply(t, v, submitted(1, time.Unix(0, 0), events.Visit{StoreID: "S1", ImageURLs: []string{"a"}, VisitTime: "t"}))
	select {
	case err := <-done:
		t.Fatalf("WaitFor(2) returned %v at sequence 1", err)
	case <-time.After(20 * time.Millisecond):
	}
	apply(t, v, jobMsg(2, 1, events.KindStarted, &events.JobStarted{}))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := v.WaitFor(ctx, 3); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitFor with an ended context: %v", err)
	}
	if !strings.HasSuffix(v.Path(), "readmodel.db") {
		t.Fatal(v.Path())
	}
}
