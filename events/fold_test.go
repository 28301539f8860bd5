package events

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"
)

func submission(visits ...Visit) *JobSubmitted {
	return &JobSubmitted{Count: len(visits), Visits: visits}
}

func ok(v, i int) *ImageProcessed {
	return &ImageProcessed{ImageRef: ImageRef{v, i}, StoreID: "S1", Width: 640, Height: 480, Perimeter: 2240}
}

func bad(v, i int, store, reason string) *ImageFailed {
	return &ImageFailed{ImageRef: ImageRef{v, i}, StoreID: store, URL: "http://x/img", Reason: reason}
}

func TestJobState_Fold(t *testing.T) {
	sub := submission(
		Visit{StoreID: "S1", ImageURLs: []string{"a", "b"}},
		Visit{StoreID: "S2", ImageURLs: []string{"c"}},
	)
	tests := []struct {
		name           string
		events         []Event
		wantStatus     Status
		wantProcessed  int
		wantFailed     int
		wantDuplicates int
		wantErrors     []StoreError
		wantUnsettled  int
	}{
		{name: "nothing yet", wantStatus: StatusOngoing, wantUnsettled: 3},
		{name: "all processed, not completed", events: []Event{ok(0, 0), ok(0, 1), ok(1, 0)}, wantStatus: StatusOngoing, wantProcessed: 3},
		{
			name:       "duplicate outcome ignored, first wins",
			events:     []Event{ok(0, 0), bad(0, 0, "S1", "http 404"), ok(0, 0)},
			wantStatus: StatusOngoing, wantProcessed: 1, wantDuplicates: 2, wantUnsettled: 2,
		},
		{
			name:       "failed store listed once",
			events:     []Event{bad(0, 0, "S1", "http 404"), bad(0, 1, "S1", "timeout"), ok(1, 0), &JobCompleted{Status: StatusFailed, Errors: []StoreError{{"S1", "image http://x/img: http 404"}}}},
			wantStatus: StatusFailed, wantProcessed: 1, wantFailed: 2,
			wantErrors: []StoreError{{"S1", "image http://x/img: http 404"}},
		},
		{
			name:       "events after completion ignored",
			events:     []Event{ok(0, 0), ok(0, 1), ok(1, 0), &JobCompleted{Status: StatusCompleted}, bad(0, 0, "S1", "late"), &JobCompleted{Status: StatusFailed}},
			wantStatus: StatusCompleted, wantProcessed: 3, wantDuplicates: 2,
		},
		{
			name:       "unknown store error has no url",
			events:     []Event{bad(1, 0, "S2", ReasonUnknownStore)},
			wantStatus: StatusOngoing, wantFailed: 1, wantUnsettled: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := NewJobState(7, sub)
			for _, ev := range tt.events {
				if _, err := st.Apply(ev); err != nil {
					t.Fatal(err)
				}
			}
			v := st.View()
			if v.Status != tt.wantStatus || v.Processed != tt.wantProcessed || v.Failed != tt.wantFailed || st.Duplicates != tt.wantDuplicates {
				t.Fatalf("view %+v duplicates %d", v, st.Duplicates)
			}
			if !reflect.DeepEqual(v.Errors, tt.wantErrors) {
				t.Errorf("errors = %+v, want %+v", v.Errors, tt.wantErrors)
			}
			if !st.Completed && st.Unsettled() != tt.wantUnsettled {
				t.Errorf("unsettled = %d, want %d", st.Unsettled(), tt.wantUnsettled)
			}
		})
	}
}

func TestJobState_OutcomeIsIndependentOfArrivalOrder(t *testing.T) {
	tests := []struct {
		name       string
		sub        *JobSubmitted
		outcomes   []Event
		wantStatus Status
		wantErrors []StoreError
	}{
		{
			name:       "no failures",
			sub:        submission(Visit{StoreID: "S1", ImageURLs: []string{"a", "b"}}, Visit{StoreID: "S2", ImageURLs: []string{"c"}}),
			outcomes:   []Event{ok(0, 0), ok(0, 1), ok(1, 0)},
			wantStatus: StatusCompleted,
		},
		{
			name: "stores in order of first visit, not of first failure",
			sub: submission(
				Visit{StoreID: "S1", ImageURLs: []string{"a"}},
				Visit{StoreID: "S2", ImageURLs: []string{"b"}},
				Visit{StoreID: "S3", ImageURLs: []string{"c"}},
				Visit{StoreID: "S1", ImageURLs: []string{"d"}},
			),
			outcomes:   []Event{ok(0, 0), bad(1, 0, "S2", "http 404"), bad(2, 0, "S3", ReasonUnknownStore), bad(3, 0, "S1", "timeout")},
			wantStatus: StatusFailed,
			wantErrors: []StoreError{{"S1", "image http://x/img: timeout"}, {"S2", "image http://x/img: http 404"}, {"S3", "unknown store"}},
		},
		{
			name: "a store reports its first failing image by visit, then image",
			sub: submission(
				Visit{StoreID: "S2", ImageURLs: []string{"a", "b", "c"}},
				Visit{StoreID: "S1", ImageURLs: []string{"d", "e"}},
				Visit{StoreID: "S2", ImageURLs: []string{"f"}},
			),
			outcomes: []Event{
				ok(0, 0), bad(0, 1, "S2", "http 500"), bad(0, 2, "S2", "http 404"), bad(2, 0, "S2", "timeout"),
				bad(1, 0, "S1", "not an image"), bad(1, 1, "S1", "too large"),
			},
			wantStatus: StatusFailed,
			wantErrors: []StoreError{{"S2", "image http://x/img: http 500"}, {"S1", "image http://x/img: not an image"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orders := 0
			permute(tt.outcomes, func(evs []Event) {
				orders++
				st := NewJobState(1, tt.sub)
				for _, ev := range evs {
					if _, err := st.Apply(ev); err != nil {
						t.Fatal(err)
					}
				}
				status, errs := st.Outcome()
				if status != tt.wantStatus || !reflect.DeepEqual(errs, tt.wantErrors) {
					t.Fatalf("outcomes in order %v: Outcome() = %s %+v, want %s %+v", evs, status, errs, tt.wantStatus, tt.wantErrors)
				}
				// A terminal event without a list takes the same one.
				st.Apply(&JobCompleted{Status: status})
				if v := st.View(); !reflect.DeepEqual(v.Errors, tt.wantErrors) {
					t.Fatalf("outcomes in order %v: completed view errors %+v, want %+v", evs, v.Errors, tt.wantErrors)
				}
			})
			if orders < 6 {
				t.Fatalf("only %d orders tried", orders)
			}
		})
	}
}

// permute calls f with every ordering of evs (Heap's algorithm). f must not
// keep its argument.
func permute(evs []Event, f func([]Event)) {
	a := append([]Event(nil), evs...)
	var gen func(n int)
	gen = func(n int) {
		if n <= 1 {
			f(a)
			return
		}
		for i := range n - 1 {
			gen(n - 1)
			if n%2 == 0 {
				a[i], a[n-1] = a[n-1], a[i]
			} else {
				a[0], a[n-1] = a[n-1], a[0]
			}
		}
		gen(n - 1)
	}
	gen(len(a))
}

func TestJobState_RejectsImagesOutsideTheJob(t *testing.T) {
	st := NewJobState(1, submission(Visit{StoreID: "S1", ImageURLs: []string{"a"}}))
	for _, ev := range []Event{ok(0, 1), ok(1, 0), ok(-1, 0)} {
		if _, err := st.Apply(ev); err == nil || !strings.Contains(err.Error(), "not in the job") {
			t.Errorf("Apply(%+v) err = %v", ev, err)
		}
	}
	if st.Processed != 0 {
		t.Fatal("out-of-range image counted")
	}
}

// Every event type, with every field set.
func TestCodec_RoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	evs := []Event{
		&JobSubmitted{Count: 2, Visits: []Visit{{StoreID: "S1", ImageURLs: []string{"a", "b"}, VisitTime: "t"}, {StoreID: "S2", ImageURLs: []string{"c"}, VisitTime: "u"}}, SubmittedAt: at},
		ok(0, 1),
		&ImageProcessed{ImageRef: ImageRef{3, 4}, StoreID: "S3", Width: 1, Height: 2, Perimeter: 6, At: at},
		bad(1, 0, "S2", "http 404"),
		&ImageFailed{ImageRef: ImageRef{5, 6}, StoreID: "S4", URL: "http://y", Reason: "timeout", At: at},
		&JobStarted{Attempt: 2, Owner: "host-1", At: at},
		&JobRequeued{By: "ops", Reason: "stranded", At: at},
		&JobCompleted{Status: StatusFailed, Errors: []StoreError{{"S2", "x"}}, Processed: 1, Failed: 1, At: at},
	}
	body, err := Encode(42, evs...)
	if err != nil {
		t.Fatal(err)
	}
	for _, enc := range []string{"", EncodingGzip} {
		data := body
		if enc == EncodingGzip {
			if data, err = Compress(body); err != nil {
				t.Fatal(err)
			}
		}
		b, err := Decode(data, enc)
		if err != nil {
			t.Fatal(err)
		}
		if b.JobID != 42 || b.V != SchemaVersion || !reflect.DeepEqual(b.Events, evs) {
			t.Fatalf("decoded %+v", b)
		}
	}
	if HeaderTypeOf(evs[1:3]) != string(TypeImageProcessed) || HeaderTypeOf(evs) != "batch" {
		t.Error("HeaderTypeOf")
	}
}

// Decode reads every event's data in one pass, into one struct holding
// the fields of every event type: each field of each event must be there,
// under the same JSON name, with the same Go type.
func TestCodec_WireDataCoversEveryEvent(t *testing.T) {
	fields := map[string]reflect.Type{}
	wd := reflect.TypeOf(wireData{})
	for i := range wd.NumField() {
		fields[strings.Split(wd.Field(i).Tag.Get("json"), ",")[0]] = wd.Field(i).Type
	}
	var check func(name string, typ reflect.Type)
	check = func(name string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if f.Anonymous {
				check(name, f.Type)
				continue
			}
			tag := strings.Split(f.Tag.Get("json"), ",")[0]
			if got, ok := fields[tag]; !ok || got != f.Type {
				t.Errorf("%s.%s (json %q, %v): wireData has %v", name, f.Name, tag, f.Type, got)
			}
		}
	}
	for _, ev := range []Event{&JobSubmitted{}, &JobStarted{}, &ImageProcessed{}, &ImageFailed{}, &JobRequeued{}, &JobCompleted{}} {
		check(string(ev.EventType()), reflect.TypeOf(ev).Elem())
	}
}

func TestCodec_RejectsWhatItDoesNotUnderstand(t *testing.T) {
	for name, body := range map[string]string{
		"not json":             `nope`,
		"future version":       `{"v":99,"events":[{"type":"job_started","data":{}}]}`,
		"unknown type":         `{"v":1,"events":[{"type":"job_exploded","data":{}}]}`,
		"no events":            `{"v":1,"events":[]}`,
		"no data":              `{"v":1,"events":[{"type":"job_started"}]}`,
		"null data":            `{"v":1,"events":[{"type":"job_started","data":null}]}`,
		"data of a wrong type": `{"v":1,"events":[{"type":"image_processed","data":{"width":"wide"}}]}`,
	} {
		if _, err := Decode([]byte(body), ""); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	if _, err := Decode([]byte(`{}`), "br"); err == nil {
		t.Error("unknown encoding decoded")
	}
}

func TestSubjects(t *testing.T) {
	if s := JobSubject(12, KindImages); s != "rp.job.12.images" {
		t.Fatal(s)
	}
	if f := JobFilter(12); f != "rp.job.12.>" {
		t.Fatal(f)
	}
	id, kind, ok := ParseJobSubject("rp.job.12.completed")
	if !ok || id != 12 || kind != KindCompleted {
		t.Fatal(id, kind, ok)
	}
	for _, s := range []string{"rp.submitted", "rp.job.x.images", "rp.job.0.images", "rp.job.1", "rp.job.1.a.b"} {
		if _, _, ok := ParseJobSubject(s); ok {
			t.Errorf("ParseJobSubject(%q) ok", s)
		}
	}
}

func TestParseJobID(t *testing.T) {
	for _, s := range []string{"", "0", "-1", "*", ">", "1.5", " 1", "1e3", "0x10", "99999999999999999999999"} {
		if _, err := ParseJobID(s); err == nil {
			t.Errorf("ParseJobID(%q) accepted", s)
		}
	}
	if id, err := ParseJobID("123"); err != nil || id != 123 {
		t.Fatal(id, err)
	}
}

func TestReadModel_ApplyIsIdempotentAndOrdered(t *testing.T) {
	m := NewReadModel()
	sub := submission(Visit{StoreID: "S1", ImageURLs: []string{"a", "b"}})
	mustApply := func(seq uint64, subject string, evs ...Event) ApplyResult {
		t.Helper()
		res, err := m.Apply(seq, subject, Batch{V: 1, Events: evs})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	mustApply(1, SubjectSubmitted, sub)
	mustApply(2, JobSubject(1, KindImages), ok(0, 0), ok(0, 0))
	if res := mustApply(2, JobSubject(1, KindImages), ok(0, 1)); res.Duplicates != 1 || res.Applied != 0 {
		t.Fatalf("replayed seq applied: %+v", res)
	}
	mustApply(3, JobSubject(1, KindImages), ok(0, 1))
	mustApply(4, JobSubject(1, KindCompleted), &JobCompleted{Status: StatusCompleted})
	v, found := m.Job(1)
	if !found || v.Status != StatusCompleted || v.Processed != 2 {
		t.Fatalf("job 1 = %+v", v)
	}
	if _, found := m.Job(2); found {
		t.Fatal("job 2 exists")
	}
	if _, err := m.Apply(5, JobSubject(9, KindImages), Batch{Events: []Event{ok(0, 0)}}); err == nil {
		t.Fatal("orphan events applied")
	}
	if m.LastSeq() != 5 {
		t.Fatalf("last seq %d", m.LastSeq())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if err := m.WaitFor(ctx, 6); err == nil {
		t.Fatal("WaitFor(6) returned before seq 6")
	}
	done := make(chan error)
	go func() { done <- m.WaitFor(context.Background(), 6) }()
	m.Skip(6)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestResultsOf_FirstOutcomeWins(t *testing.T) {
	h := &History{Submitted: submission(Visit{StoreID: "S1", ImageURLs: []string{"a", "b"}}, Visit{StoreID: "S2", ImageURLs: []string{"c"}})}
	h.Records = []Record{
		{Events: []Event{ok(0, 1), bad(1, 0, "S2", "http 404"), bad(0, 1, "S1", "late"), ok(5, 5)}},
		{Events: []Event{&JobCompleted{Status: StatusFailed}, ok(0, 0)}}, // after completion: ignored
	}
	got := ResultsOf(h)
	want := []ImageResult{
		{Visit: 0, Index: 0, StoreID: "S1", URL: "a", State: "pending"},
		{Visit: 0, Index: 1, StoreID: "S1", URL: "b", State: "processed", Width: 640, Height: 480, Perimeter: 2240},
		{Visit: 1, Index: 0, StoreID: "S2", URL: "c", State: "failed", Error: "http 404"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
}
