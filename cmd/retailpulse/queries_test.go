package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/sqlview"
)

// Stores of the sample store master in two areas.
const (
	area1, area1StoreA, area1StoreB = "560001", "S00000001", "S00000002"
	area2, area2StoreA              = "560034", "S00000004"
)

// readSide is what a new user does: visits to stores in two areas on
// different days, one image failing, one visit_time free text.
type readSide struct {
	jobs []uint64
}

func submitReadSide(t testing.TB, post func(body string) uint64, imgURL string) readSide {
	t.Helper()
	var rs readSide
	for _, body := range []string{
		jobBody(visit{area1StoreA, []string{imgURL + "/640x480.jpg/a1"}, "2026-11-20T10:00:00Z"},
			visit{area2StoreA, []string{imgURL + "/800x600.jpg/a2"}, "2026-11-21 09:30:00"}),
		jobBody(visit{area1StoreB, []string{imgURL + "/640x480.jpg/b1", imgURL + "/404"}, "2026-11-22"},
			visit{area2StoreA, []string{imgURL + "/640x480.jpg/b2"}, "2026-11-27T08:00:00+05:30"}),
		jobBody(visit{area1StoreA, []string{imgURL + "/640x480.jpg/c1"}, "2026-11-27 09:00"},
			visit{area1StoreB, []string{imgURL + "/640x480.jpg/c2"}, "yesterday afternoon"}),
	} {
		rs.jobs = append(rs.jobs, post(body))
	}
	return rs
}

// readSideQueries are the reads whose answers must survive restarts.
func readSideQueries(rs readSide) []string {
	q := []string{
		"/api/visits?area=" + area1,
		"/api/visits?area=" + area2,
		"/api/visits?area=" + area1 + "&startdate=2026-11-20&enddate=2026-11-22",
		"/api/visits?storeid=" + area1StoreA,
		"/api/visits?area=" + area1 + "&status=failed",
		"/api/visits?area=nowhere",
		"/api/visits?startdate=2026-11-27",
		"/api/stores/" + area1StoreA + "/summary",
		"/api/stores/" + area2StoreA + "/summary?startdate=2026-11-21&enddate=2026-11-21",
		"/api/stores/S404/summary",
		"/api/jobs",
		"/api/jobs?status=failed",
	}
	for _, id := range rs.jobs {
		q = append(q, fmt.Sprintf("/api/status?jobid=%d", id), fmt.Sprintf("/api/results?jobid=%d&limit=1", id))
	}
	return q
}

type visitsBody struct {
	Visits     []events.VisitView `json:"visits"`
	NextCursor string             `json:"next_cursor"`
}

func visitIDs(vs []events.VisitView) []string {
	out := []string{}
	for _, v := range vs {
		out = append(out, fmt.Sprintf("%d/%d", v.JobID, v.Visit))
	}
	return out
}

// answers runs every query and returns "code body" per path.
func (a *testApp) answers(t testing.TB, paths []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range paths {
		code, _, body := do(t, "GET", a.url+p, "")
		out[p] = fmt.Sprintf("%d %s", code, body)
	}
	return out
}

func sameAnswers(t testing.TB, when string, got, want map[string]string) {
	t.Helper()
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s: %s answered\n%s\nwas\n%s", when, p, got[p], w)
		}
	}
}

// The read side as a new user tries it: visits in two areas on different
// days found by area, store and date range, paged, a store's summary; the
// same answers after a restart and after the database is deleted.
func TestService_ReadSideScenario(t *testing.T) {
	img := newImageServer(t)
	dir := t.TempDir()
	app := startApp(t, dir)
	rs := submitReadSide(t, func(body string) uint64 { return app.submit(t, body) }, img.URL)
	for _, id := range rs.jobs {
		app.waitDone(t, id)
	}
	j1, j2, j3 := rs.jobs[0], rs.jobs[1], rs.jobs[2]
	key := func(job uint64, visit int) string { return fmt.Sprintf("%d/%d", job, visit) }
	getVisits := func(query string) visitsBody {
		t.Helper()
		code, hdr, body := do(t, "GET", app.url+"/api/visits?"+query, "")
		var v visitsBody
		if code != 200 || hdr.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &v) != nil {
			t.Fatalf("visits?%s: %d %q %s", query, code, hdr.Get("Content-Type"), body)
		}
		return v
	}
	for _, tt := range []struct {
		query string
		want  []string
	}{
		// Newest first; a visit_time that does not parse comes last.
		{"area=" + area1, []string{key(j3, 0), key(j2, 0), key(j1, 0), key(j3, 1)}},
		{"area=" + area2, []string{key(j2, 1), key(j1, 1)}},
		// Inclusive days; the unparsed visit_time matches no date filter.
		{"area=" + area1 + "&startdate=2026-11-20&enddate=2026-11-22", []string{key(j2, 0), key(j1, 0)}},
		{"storeid=" + area1StoreA, []string{key(j3, 0), key(j1, 0)}},
		{"storeid=" + area1StoreA + "&area=" + area2, []string{}},
		{"area=" + area1 + "&status=failed", []string{key(j2, 0)}},
		{"status=processed&startdate=2026-11-21", []string{key(j3, 0), key(j2, 1), key(j1, 1)}},
		// 2026-11-27T08:00+05:30 is 02:30Z: on the 27th in UTC.
		{"startdate=2026-11-27&enddate=2026-11-27", []string{key(j3, 0), key(j2, 1)}},
		{"startdate=" + url.QueryEscape("2026-11-27T08:30:00+05:30"), []string{key(j3, 0)}},
		{"area=nowhere", []string{}},
		{"storeid=S404", []string{}},
	} {
		if got := visitIDs(getVisits(tt.query).Visits); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("visits?%s = %v, want %v", tt.query, got, tt.want)
		}
	}
	first := getVisits("storeid=" + area1StoreA).Visits[1]
	want := events.VisitView{JobID: j1, Visit: 0, StoreID: area1StoreA, StoreName: "Lakeview Provisions", AreaCode: area1,
		VisitTime: "2026-11-20T10:00:00Z", Status: events.VisitProcessed, ImageCount: 1, Processed: 1,
		Images: []events.VisitImage{{Index: 0, URL: img.URL + "/640x480.jpg/a1", State: "processed", Width: 640, Height: 480, Perimeter: 2240}}}
	if !reflect.DeepEqual(first, want) {
		t.Errorf("visit %+v\nwant %+v", first, want)
	}

	// Paging through an area a visit at a time finds the same visits.
	var paged []events.VisitView
	for cursor := ""; ; {
		page := getVisits("area=" + area1 + "&limit=1&cursor=" + url.QueryEscape(cursor))
		paged = append(paged, page.Visits...)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if got, all := visitIDs(paged), visitIDs(getVisits("area="+area1).Visits); !reflect.DeepEqual(got, all) {
		t.Errorf("paged %v, one page %v", got, all)
	}

	code, _, body := do(t, "GET", app.url+"/api/stores/"+area1StoreA+"/summary?startdate=2026-11-01&enddate=2026-11-30", "")
	var sum events.StoreSummary
	if code != 200 || json.Unmarshal([]byte(body), &sum) != nil {
		t.Fatalf("summary: %d %s", code, body)
	}
	wantSum := events.StoreSummary{StoreID: area1StoreA, StoreName: "Lakeview Provisions", AreaCode: area1, Visits: 2, Images: 2, Processed: 2,
		Days: []events.DayCount{{Date: "2026-11-20", Visits: 1, Images: 1, Processed: 1}, {Date: "2026-11-27", Visits: 1, Images: 1, Processed: 1}}}
	if !reflect.DeepEqual(sum, wantSum) {
		t.Errorf("summary %+v\nwant %+v", sum, wantSum)
	}
	if code, _, body := do(t, "GET", app.url+"/api/stores/S404/summary", ""); code != 404 || !strings.Contains(body, `"error"`) {
		t.Errorf("summary of an unknown store: %d %s", code, body)
	}
	for _, bad := range []string{"startdate=2026-13-01", "enddate=tomorrow", "status=lost", "limit=5000", "cursor=bogus"} {
		code, _, body := do(t, "GET", app.url+"/api/visits?"+bad, "")
		name, _, _ := strings.Cut(bad, "=")
		if code != 400 || !strings.Contains(body, `"error":"`+name+`: `) {
			t.Errorf("visits?%s: %d %s, want 400 naming %s", bad, code, body, name)
		}
	}

	queries := readSideQueries(rs)
	before := app.answers(t, queries)
	app.stop()
	app = startApp(t, dir)
	sameAnswers(t, "after a restart", app.answers(t, queries), before)
	app.stop()
	if err := sqlview.Remove(filepath.Join(dir, readModelFile)); err != nil {
		t.Fatal(err)
	}
	app = startApp(t, dir)
	sameAnswers(t, "after rebuilding the database", app.answers(t, queries), before)
}

// /api/results pages through a job's images in submission order.
func TestService_ResultsPages(t *testing.T) {
	img := newImageServer(t)
	app := startApp(t, t.TempDir())
	var urls []string
	for i := range 25 {
		urls = append(urls, fmt.Sprintf("%s/%dx2.png/%d", img.URL, i+1, i))
	}
	id := app.submit(t, jobBody(visit{storeA, urls[:20], "t"}, visit{storeB, urls[20:], "t"}))
	app.waitDone(t, id)
	var got []events.ImageResult
	pages := 0
	for cursor := ""; ; pages++ {
		code, _, body := do(t, "GET", fmt.Sprintf("%s/api/results?jobid=%d&limit=10&cursor=%s", app.url, id, url.QueryEscape(cursor)), "")
		var page struct {
			Status     string               `json:"status"`
			Images     []events.ImageResult `json:"images"`
			NextCursor string               `json:"next_cursor"`
		}
		if code != 200 || json.Unmarshal([]byte(body), &page) != nil || page.Status != "completed" {
			t.Fatalf("results: %d %s", code, body)
		}
		got = append(got, page.Images...)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if pages != 2 || len(got) != 25 {
		t.Fatalf("%d pages, %d images", pages+1, len(got))
	}
	for i, r := range got {
		if r.URL != urls[i] || r.Width != i+1 || r.State != "processed" || (i < 20) != (r.Visit == 0) {
			t.Fatalf("image %d: %+v", i, r)
		}
	}
}
