package sqlview_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/sqlview"
)

func day(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}

func endOfDay(s string) time.Time { return day(s).Add(24*time.Hour - time.Millisecond) }

// visitKey names a visit in expectations: "job/visit".
func visitKeys(vs []events.VisitView) []string {
	out := []string{}
	for _, v := range vs {
		out = append(out, fmt.Sprintf("%d/%d", v.JobID, v.Visit))
	}
	return out
}

// queryFixture applies a small history: stores S1, S2 (area A1), S3 (A2)
// and S9 (not in the store master), visits on three days and one whose
// time does not parse.
//
//	job 1: v0 S1 2026-11-20 10:00Z  a ok, b 404   -> failed
//	       v1 S3 2026-11-22 09:00Z  c ok          -> processed
//	job 4: v0 S2 "2026-11-21 08:00" d pending     -> pending
//	       v1 S1 "time of visit"    e ok          -> processed
//	       v2 S9 2026-11-22         f unknown     -> failed
//	job 9: v0 S1 2026-11-22T23:59:59.999+00:00 g ok -> processed, completed
func queryFixture(t *testing.T) *sqlview.View {
	v := newView(t)
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	apply(t, v,
		submitted(1, at, events.Visit{StoreID: "S1", ImageURLs: []string{"http://x/a", "http://x/b"}, VisitTime: "2026-11-20T10:00:00Z"},
			events.Visit{StoreID: "S3", ImageURLs: []string{"http://x/c"}, VisitTime: "2026-11-22T09:00:00Z"}),
		jobMsg(2, 1, events.KindImages, ok(0, 0, "S1"), bad(0, 1, "S1", "http://x/b", "http 404"), ok(1, 0, "S3")),
		jobMsg(3, 1, events.KindCompleted, &events.JobCompleted{Status: events.StatusFailed, Errors: []events.StoreError{{StoreID: "S1", Error: "image http://x/b: http 404"}}}),
		submitted(4, at.Add(time.Minute), events.Visit{StoreID: "S2", ImageURLs: []string{"http://x/d"}, VisitTime: "2026-11-21 08:00"},
			events.Visit{StoreID: "S1", ImageURLs: []string{"http://x/e"}, VisitTime: "time of visit"},
			events.Visit{StoreID: "S9", ImageURLs: []string{"http://x/f"}, VisitTime: "2026-11-22"}),
		jobMsg(5, 4, events.KindImages, ok(1, 0, "S1"), bad(2, 0, "S9", "http://x/f", events.ReasonUnknownStore)),
		submitted(9, at.Add(2*time.Minute), events.Visit{StoreID: "S1", ImageURLs: []string{"http://x/g"}, VisitTime: "2026-11-22T23:59:59.999+00:00"}),
		jobMsg(10, 9, events.KindImages, ok(0, 0, "S1")),
		jobMsg(11, 9, events.KindCompleted, &events.JobCompleted{Status: events.StatusCompleted}),
	)
	return v
}

func TestView_VisitsFilters(t *testing.T) {
	v := queryFixture(t)
	ctx := context.Background()
	tests := []struct {
		name string
		f    events.VisitFilter
		want []string
	}{
		{"all, newest first, unparsed time last", events.VisitFilter{}, []string{"9/0", "1/1", "4/2", "4/0", "1/0", "4/1"}},
		{"area", events.VisitFilter{AreaCode: "A1"}, []string{"9/0", "4/0", "1/0", "4/1"}},
		{"store", events.VisitFilter{StoreID: "S1"}, []string{"9/0", "1/0", "4/1"}},
		{"store and area", events.VisitFilter{StoreID: "S1", AreaCode: "A2"}, []string{}},
		{"inclusive days", events.VisitFilter{From: day("2026-11-21"), To: endOfDay("2026-11-22")}, []string{"9/0", "1/1", "4/2", "4/0"}},
		{"from only excludes unparsed times", events.VisitFilter{StoreID: "S1", From: day("2026-11-01")}, []string{"9/0", "1/0"}},
		{"to only excludes unparsed times", events.VisitFilter{StoreID: "S1", To: endOfDay("2026-11-21")}, []string{"1/0"}},
		{"an instant", events.VisitFilter{From: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC), To: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)}, []string{"1/1"}},
		{"area and a range", events.VisitFilter{AreaCode: "A1", From: day("2026-11-20"), To: endOfDay("2026-11-21")}, []string{"4/0", "1/0"}},
		{"failed", events.VisitFilter{Status: events.VisitFailed}, []string{"4/2", "1/0"}},
		{"pending", events.VisitFilter{Status: events.VisitPending}, []string{"4/0"}},
		{"processed", events.VisitFilter{Status: events.VisitProcessed}, []string{"9/0", "1/1", "4/1"}},
		{"unknown area", events.VisitFilter{AreaCode: "nowhere"}, []string{}},
		{"unknown store", events.VisitFilter{StoreID: "S404"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page, err := v.Visits(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := visitKeys(page.Visits); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("visits %v, want %v", got, tt.want)
			}
			if page.Next != "" {
				t.Fatalf("a last page with a next cursor %q", page.Next)
			}
		})
	}
}

func TestView_VisitsCarryStoreAndImages(t *testing.T) {
	v := queryFixture(t)
	page, err := v.Visits(context.Background(), events.VisitFilter{StoreID: "S1", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	want := events.VisitView{JobID: 9, Visit: 0, StoreID: "S1", StoreName: "One", AreaCode: "A1", VisitTime: "2026-11-22T23:59:59.999+00:00",
		Status: events.VisitProcessed, ImageCount: 1, Processed: 1,
		Images: []events.VisitImage{{Index: 0, URL: "http://x/g", State: "processed", Width: 10, Height: 20, Perimeter: 60}}}
	if !reflect.DeepEqual(page.Visits[0], want) {
		t.Fatalf("visit %+v\nwant %+v", page.Visits[0], want)
	}
	failed := page.Visits[1]
	if failed.Status != events.VisitFailed || len(failed.Images) != 2 || failed.Images[1].State != "failed" || failed.Images[1].Error != "http 404" {
		t.Fatalf("failed visit %+v", failed)
	}
	unknown, _ := v.Visits(context.Background(), events.VisitFilter{StoreID: "S9"})
	if u := unknown.Visits[0]; u.StoreName != "" || u.AreaCode != "" || u.Images[0].Error != events.ReasonUnknownStore {
		t.Fatalf("visit to a store not in the store master: %+v", u)
	}
}

// Walking the pages of any filter yields exactly its single-page answer,
// in order, also when visits are added between pages (they land before
// the cursor or after it, never twice).
func TestView_VisitPagesWalkTheWholeList(t *testing.T) {
	v := queryFixture(t)
	ctx := context.Background()
	for _, f := range []events.VisitFilter{{}, {AreaCode: "A1"}, {StoreID: "S1"}, {From: day("2026-11-20"), To: endOfDay("2026-11-22")}, {Status: events.VisitProcessed}} {
		t.Run(fmt.Sprintf("%+v", f), func(t *testing.T) {
			all, err := v.Visits(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			var walked []events.VisitView
			f.Limit = 1
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatal("pages never end")
				}
				page, err := v.Visits(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				walked = append(walked, page.Visits...)
				if page.Next == "" {
					break
				}
				f.Cursor = page.Next
			}
			if !reflect.DeepEqual(visitKeys(walked), visitKeys(all.Visits)) {
				t.Fatalf("pages %v, one page %v", visitKeys(walked), visitKeys(all.Visits))
			}
		})
	}
}

func TestView_PagesRefuseForeignCursors(t *testing.T) {
	v := queryFixture(t)
	ctx := context.Background()
	jobs, err := v.Jobs(ctx, "", 1, "")
	if err != nil || jobs.Next == "" {
		t.Fatalf("jobs: %+v %v", jobs, err)
	}
	for _, c := range []string{jobs.Next, "not-a-cursor", "dg", "di4xLjI"} {
		if _, err := v.Visits(ctx, events.VisitFilter{Cursor: c}); !errors.Is(err, events.ErrBadCursor) {
			t.Errorf("visits with cursor %q: %v", c, err)
		}
	}
	visits, _ := v.Visits(ctx, events.VisitFilter{Limit: 1})
	if _, err := v.Jobs(ctx, "", 1, visits.Next); !errors.Is(err, events.ErrBadCursor) {
		t.Errorf("jobs with a visits cursor: %v", err)
	}
	if _, err := v.Results(ctx, 1, 1, visits.Next); !errors.Is(err, events.ErrBadCursor) {
		t.Errorf("results with a visits cursor: %v", err)
	}
}

// A page of visits holds at most 1,000 images of one visit and about
// 10,000 in all: it ends early, and the next page goes on.
func TestView_VisitPagesBoundTheirImages(t *testing.T) {
	v := newView(t)
	urls := make([]string, 1200)
	for i := range urls {
		urls[i] = fmt.Sprintf("http://x/%d", i)
	}
	var visits []events.Visit
	for range 12 {
		visits = append(visits, events.Visit{StoreID: "S1", ImageURLs: urls, VisitTime: "2026-11-20"})
	}
	apply(t, v, submitted(1, time.Unix(0, 0), visits...))
	page, err := v.Visits(context.Background(), events.VisitFilter{})
	if err != nil {
		t.Fatal(err)
	}
	images := 0
	for _, vv := range page.Visits {
		if vv.ImageCount != 1200 || len(vv.Images) != events.MaxPageLimit || vv.Images[999].Index != 999 {
			t.Fatalf("visit %d: %d of %d images", vv.Visit, len(vv.Images), vv.ImageCount)
		}
		images += len(vv.Images)
	}
	if len(page.Visits) >= 12 || images > 10_000 || page.Next == "" {
		t.Fatalf("first page: %d visits, %d images, next %q", len(page.Visits), images, page.Next)
	}
	rest, err := v.Visits(context.Background(), events.VisitFilter{Cursor: page.Next})
	if err != nil || len(page.Visits)+len(rest.Visits) != 12 {
		t.Fatalf("second page: %d visits, %v", len(rest.Visits), err)
	}
}

func TestView_StoreSummary(t *testing.T) {
	v := queryFixture(t)
	ctx := context.Background()
	tests := []struct {
		name     string
		store    string
		from, to time.Time
		want     events.StoreSummary
	}{
		{"all time: the undated visit counts in the totals only", "S1", time.Time{}, time.Time{}, events.StoreSummary{
			StoreID: "S1", StoreName: "One", AreaCode: "A1", Visits: 3, Images: 4, Processed: 3, Failed: 1,
			Days: []events.DayCount{{Date: "2026-11-20", Visits: 1, Images: 2, Processed: 1, Failed: 1}, {Date: "2026-11-22", Visits: 1, Images: 1, Processed: 1}},
		}},
		{"a range", "S1", day("2026-11-21"), endOfDay("2026-11-22"), events.StoreSummary{
			StoreID: "S1", StoreName: "One", AreaCode: "A1", Visits: 1, Images: 1, Processed: 1,
			Days: []events.DayCount{{Date: "2026-11-22", Visits: 1, Images: 1, Processed: 1}},
		}},
		{"pending images", "S2", time.Time{}, time.Time{}, events.StoreSummary{
			StoreID: "S2", StoreName: "Two, Ltd", AreaCode: "A1", Visits: 1, Images: 1, Pending: 1,
			Days: []events.DayCount{{Date: "2026-11-21", Visits: 1, Images: 1}},
		}},
		{"in the store master, no visits", "S3", day("2027-01-01"), time.Time{}, events.StoreSummary{
			StoreID: "S3", StoreName: "Three", AreaCode: "A2", Days: []events.DayCount{},
		}},
		{"visited, not in the store master", "S9", time.Time{}, time.Time{}, events.StoreSummary{
			StoreID: "S9", Visits: 1, Images: 1, Failed: 1, Days: []events.DayCount{{Date: "2026-11-22", Visits: 1, Images: 1, Failed: 1}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.StoreSummary(ctx, tt.store, tt.from, tt.to)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("summary %+v, %v\nwant %+v", got, err, tt.want)
			}
		})
	}
	if _, err := v.StoreSummary(ctx, "S404", time.Time{}, time.Time{}); !errors.Is(err, events.ErrStoreNotFound) {
		t.Fatalf("unknown store: %v", err)
	}
}

func TestView_JobsAndResultsPages(t *testing.T) {
	v := queryFixture(t)
	ctx := context.Background()
	var ids []uint64
	for cursor := ""; ; {
		page, err := v.Jobs(ctx, "", 2, cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range page.Jobs {
			ids = append(ids, j.JobID)
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	if !reflect.DeepEqual(ids, []uint64{9, 4, 1}) {
		t.Fatalf("jobs %v", ids)
	}
	failed, err := v.Jobs(ctx, events.StatusFailed, 0, "")
	want := events.JobSummary{JobID: 1, Status: events.StatusFailed, SubmittedAt: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC), Images: 3, Processed: 2, Failed: 1}
	if err != nil || len(failed.Jobs) != 1 || failed.Jobs[0] != want || failed.Next != "" {
		t.Fatalf("failed jobs %+v %v", failed, err)
	}

	var results []events.ImageResult
	for cursor := ""; ; {
		page, err := v.Results(ctx, 4, 1, cursor)
		if err != nil || page.Status != events.StatusOngoing {
			t.Fatalf("results: %+v %v", page, err)
		}
		results = append(results, page.Images...)
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	wantResults := []events.ImageResult{
		{Visit: 0, Index: 0, StoreID: "S2", URL: "http://x/d", State: "pending"},
		{Visit: 1, Index: 0, StoreID: "S1", URL: "http://x/e", State: "processed", Width: 10, Height: 21, Perimeter: 62},
		{Visit: 2, Index: 0, StoreID: "S9", URL: "http://x/f", State: "failed", Error: "unknown store"},
	}
	if !reflect.DeepEqual(results, wantResults) {
		t.Fatalf("results %+v\nwant %+v", results, wantResults)
	}
	if _, err := v.Results(ctx, 2, 0, ""); !errors.Is(err, events.ErrJobNotFound) {
		t.Fatalf("results of a sequence that is no job: %v", err)
	}
}

// A store master that changes moves the visits to their stores' new areas.
func TestOpen_StoreMasterChangeMovesVisits(t *testing.T) {
	path := t.TempDir() + "/readmodel.db"
	v := openView(t, path)
	apply(t, v, submitted(1, time.Unix(0, 0), events.Visit{StoreID: "S1", ImageURLs: []string{"a"}, VisitTime: "t"}))
	v.Close()
	moved := []sqlview.Store{{ID: "S1", Name: "One, renamed", AreaCode: "A9"}}
	v, err := sqlview.Open(context.Background(), path, sqlview.Options{Log: testLog, Stores: moved})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	page, err := v.Visits(context.Background(), events.VisitFilter{AreaCode: "A9"})
	if err != nil || len(page.Visits) != 1 || page.Visits[0].StoreName != "One, renamed" {
		t.Fatalf("visits in the new area: %+v %v", page, err)
	}
	if page, _ := v.Visits(context.Background(), events.VisitFilter{AreaCode: "A1"}); len(page.Visits) != 0 {
		t.Fatalf("visits left in the old area: %+v", page)
	}
	apply(t, v, submitted(2, time.Unix(0, 0), events.Visit{StoreID: "S1", ImageURLs: []string{"b"}, VisitTime: "t"}))
	if page, _ := v.Visits(context.Background(), events.VisitFilter{AreaCode: "A9"}); len(page.Visits) != 2 {
		t.Fatalf("a new visit is not in the store's area: %+v", page)
	}
}

func TestView_JobStores(t *testing.T) {
	v := queryFixture(t)
	ctx := context.Background()
	got, err := v.JobStores(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != events.StatusOngoing || len(got.Stores) != 3 {
		t.Fatalf("job 4: %+v", got)
	}
	want := []events.JobStore{
		{StoreID: "S2", StoreName: got.Stores[0].StoreName, AreaCode: "A1", Visits: 1, Images: 1},
		{StoreID: "S1", StoreName: got.Stores[1].StoreName, AreaCode: "A1", Visits: 1, Images: 1, Processed: 1},
		{StoreID: "S9", Visits: 1, Images: 1, Failed: 1, FirstFailure: &events.StoreFailure{Visit: 2, Index: 0, URL: "http://x/f", Reason: events.ReasonUnknownStore}},
	}
	if !reflect.DeepEqual(got.Stores, want) {
		t.Fatalf("job 4 stores:\n got %+v\nwant %+v", got.Stores, want)
	}
	if got.Stores[0].StoreName == "" || got.Stores[2].StoreName != "" {
		t.Fatalf("store names: %+v", got.Stores)
	}

	got, err = v.JobStores(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != events.StatusFailed || len(got.Stores) != 2 || got.Stores[0].StoreID != "S1" {
		t.Fatalf("job 1: %+v", got)
	}
	f := got.Stores[0].FirstFailure
	if f == nil || *f != (events.StoreFailure{Visit: 0, Index: 1, URL: "http://x/b", Reason: "http 404"}) || got.Stores[1].FirstFailure != nil {
		t.Fatalf("job 1 failures: %+v %+v", f, got.Stores[1])
	}
	if _, err := v.JobStores(ctx, 2); !errors.Is(err, events.ErrJobNotFound) {
		t.Fatalf("not a job: %v", err)
	}
}

func TestView_CountJobs(t *testing.T) {
	v := queryFixture(t)
	for status, want := range map[events.Status]int{events.StatusOngoing: 1, events.StatusFailed: 1, events.StatusCompleted: 1} {
		if n, err := v.CountJobs(context.Background(), status); err != nil || n != want {
			t.Errorf("%s: %d, %v; want %d", status, n, err, want)
		}
	}
}
