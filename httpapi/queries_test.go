package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
)

// queryJobs records the queries the handler makes and answers them with
// fixed pages or err.
type queryJobs struct {
	*memJobs
	visits  events.VisitFilter
	store   string
	from    time.Time
	to      time.Time
	status  events.Status
	limit   int
	cursor  string
	err     error
	results events.ResultPage
}

var (
	_ Queries = (*queryJobs)(nil)
	_ Results = (*queryJobs)(nil)
)

func (q *queryJobs) Visits(_ context.Context, f events.VisitFilter) (events.VisitPage, error) {
	q.visits = f
	return events.VisitPage{Visits: []events.VisitView{{JobID: 7, StoreID: "S1", Images: []events.VisitImage{}}}, Next: "next"}, q.err
}

func (q *queryJobs) StoreSummary(_ context.Context, store string, from, to time.Time) (events.StoreSummary, error) {
	q.store, q.from, q.to = store, from, to
	return events.StoreSummary{StoreID: store, Days: []events.DayCount{}}, q.err
}

func (q *queryJobs) ListJobs(_ context.Context, status events.Status, limit int, cursor string) (events.JobPage, error) {
	q.status, q.limit, q.cursor = status, limit, cursor
	return events.JobPage{}, q.err
}

func (q *queryJobs) Results(_ context.Context, id uint64, limit int, cursor string) (events.ResultPage, error) {
	q.limit, q.cursor = limit, cursor
	return q.results, q.err
}

func TestHandler_VisitsParameters(t *testing.T) {
	d := func(s string) time.Time { t, _ := time.Parse(time.RFC3339Nano, s); return t }
	tests := []struct {
		query string
		want  events.VisitFilter
		err   string // the 400's error, if any
	}{
		{"", events.VisitFilter{Limit: 100}, ""},
		{"area=710006&storeid=S1&status=failed&limit=1000&cursor=abc", events.VisitFilter{AreaCode: "710006", StoreID: "S1", Status: "failed", Limit: 1000, Cursor: "abc"}, ""},
		{"startdate=2026-11-20&enddate=2026-11-26", events.VisitFilter{From: d("2026-11-20T00:00:00Z"), To: d("2026-11-26T23:59:59.999Z"), Limit: 100}, ""},
		{"startdate=2026-11-20T10:00:00%2B05:30", events.VisitFilter{From: d("2026-11-20T10:00:00+05:30"), Limit: 100}, ""},
		{"enddate=2026-11-20T10:00:00Z", events.VisitFilter{To: d("2026-11-20T10:00:00Z"), Limit: 100}, ""},
		{"area=", events.VisitFilter{Limit: 100}, ""},
		{"startdate=20-11-2026", events.VisitFilter{}, "startdate: want a date YYYY-MM-DD or an RFC 3339 time"},
		{"enddate=2026-02-30", events.VisitFilter{}, "enddate: want a date YYYY-MM-DD or an RFC 3339 time"},
		{"startdate=2026-11-21&enddate=2026-11-20", events.VisitFilter{}, "enddate: before startdate"},
		{"status=done", events.VisitFilter{}, "status: want processed, failed or pending"},
		{"limit=0", events.VisitFilter{}, "limit: want an integer from 1 to 1000"},
		{"limit=1001", events.VisitFilter{}, "limit: want an integer from 1 to 1000"},
		{"limit=ten", events.VisitFilter{}, "limit: want an integer from 1 to 1000"},
		{"storeid=S1&storeid=S2", events.VisitFilter{}, "storeid: given more than once"},
		{fmt.Sprintf("area=%0300d", 1), events.VisitFilter{}, "area: longer than 256 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			jobs := &queryJobs{memJobs: newMemJobs()}
			rec := serve(mustHandler(t, Config{Jobs: jobs}), http.MethodGet, "/api/visits?"+tt.query, "")
			if tt.err != "" {
				checkJSON(t, rec, http.StatusBadRequest, errorBody(tt.err))
				return
			}
			if rec.Code != 200 || !reflect.DeepEqual(jobs.visits, tt.want) {
				t.Fatalf("%d %s; filter %+v, want %+v", rec.Code, rec.Body, jobs.visits, tt.want)
			}
			checkJSON(t, rec, 200, `{"visits":[{"job_id":"7","visit":0,"store_id":"S1","store_name":"","area_code":"","visit_time":"","status":"","image_count":0,"processed":0,"failed":0,"images":[]}],"next_cursor":"next"}`)
		})
	}
}

func TestHandler_QueryErrors(t *testing.T) {
	tests := []struct {
		name, target string
		err          error
		code         int
		body         string
	}{
		{"bad cursor", "/api/visits?cursor=x", events.ErrBadCursor, 400, errorBody("cursor: not a cursor of this list; start again without one")},
		{"bad cursor of jobs", "/api/jobs?cursor=x", fmt.Errorf("sqlview: %w", events.ErrBadCursor), 400, errorBody("cursor: not a cursor of this list; start again without one")},
		{"bad cursor of results", "/api/results?jobid=1&cursor=x", events.ErrBadCursor, 400, errorBody("cursor: not a cursor of this list; start again without one")},
		{"unknown store", "/api/stores/S404/summary", events.ErrStoreNotFound, 404, errorBody(`no store "S404" in the store master or in any visit`)},
		{"read model behind", "/api/visits", events.ErrStale, 503, errorBody("read model is catching up with the event log, retry later")},
		{"log unavailable", "/api/jobs", events.ErrUnavailable, 503, errorBody("event log unavailable, retry later")},
		{"results of an unknown job", "/api/results?jobid=9", events.ErrJobNotFound, 400, `{}`},
		{"results read model behind", "/api/results?jobid=9", events.ErrStale, 503, errorBody("read model is catching up with the event log, retry later")},
		{"other", "/api/stores/S1/summary", fmt.Errorf("disk on fire"), 500, errorBody("internal error")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobs := &queryJobs{memJobs: newMemJobs(), err: tt.err}
			rec := serve(mustHandler(t, Config{Jobs: jobs}), http.MethodGet, tt.target, "")
			checkJSON(t, rec, tt.code, tt.body)
			if tt.code == 503 && rec.Header().Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		})
	}
}

func TestHandler_JobsSummaryAndResultsParameters(t *testing.T) {
	jobs := &queryJobs{memJobs: newMemJobs(), results: events.ResultPage{Status: events.StatusOngoing, Next: "r2"}}
	h := mustHandler(t, Config{Jobs: jobs})
	checkJSON(t, serve(h, http.MethodGet, "/api/jobs?status=failed&limit=5&cursor=c1", ""), 200, `{"jobs":[]}`)
	if jobs.status != events.StatusFailed || jobs.limit != 5 || jobs.cursor != "c1" {
		t.Fatalf("jobs query %+v", jobs)
	}
	checkJSON(t, serve(h, http.MethodGet, "/api/jobs?status=done", ""), 400, errorBody("status: want ongoing, completed or failed"))
	checkJSON(t, serve(h, http.MethodGet, "/api/stores/S%201/summary?startdate=2026-11-20&enddate=2026-11-20", ""), 200,
		`{"store_id":"S 1","store_name":"","area_code":"","visits":0,"images":0,"processed":0,"failed":0,"pending":0,"days":[]}`)
	if jobs.store != "S 1" || !jobs.from.Equal(time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)) || !jobs.to.Equal(time.Date(2026, 11, 20, 23, 59, 59, 999e6, time.UTC)) {
		t.Fatalf("summary query %q %v %v", jobs.store, jobs.from, jobs.to)
	}
	checkJSON(t, serve(h, http.MethodGet, "/api/stores/S1/summary?startdate=x", ""), 400, errorBody("startdate: want a date YYYY-MM-DD or an RFC 3339 time"))
	rec := serve(h, http.MethodGet, "/api/results?jobid=3&limit=2&cursor=r1", "")
	checkJSON(t, rec, 200, `{"job_id":"3","status":"ongoing","images":[],"next_cursor":"r2"}`)
	if jobs.limit != 2 || jobs.cursor != "r1" {
		t.Fatalf("results query %+v", jobs)
	}
	checkJSON(t, serve(h, http.MethodGet, "/api/results?jobid=3&limit=0", ""), 400, errorBody("limit: want an integer from 1 to 1000"))
	var m map[string]any
	if err := json.Unmarshal(serve(h, http.MethodGet, "/api/results?jobid=3", "").Body.Bytes(), &m); err != nil || jobs.limit != 100 {
		t.Fatalf("default limit %d, %v", jobs.limit, err)
	}
	for _, target := range []string{"/api/visits", "/api/jobs", "/api/stores/S1/summary"} {
		rec := serve(h, http.MethodPost, target, "")
		if rec.Code != 405 || rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("POST %s: %d %q", target, rec.Code, rec.Header().Get("Allow"))
		}
	}
}

// Without Queries the query routes do not exist.
func TestHandler_QueriesOnlyWhenImplemented(t *testing.T) {
	rec := serve(mustHandler(t, Config{}), http.MethodGet, "/api/visits", "")
	checkJSON(t, rec, 404, errorBody("not found"))
}

// The query routes are behind the token like every /api/ route.
func TestHandler_QueriesNeedTheToken(t *testing.T) {
	h := mustHandler(t, Config{Jobs: &queryJobs{memJobs: newMemJobs()}, APITokens: []string{"secret"}})
	for _, target := range []string{"/api/visits", "/api/jobs", "/api/stores/S1/summary", "/api/results?jobid=1"} {
		if rec := serve(h, http.MethodGet, target, ""); rec.Code != 401 {
			t.Errorf("%s without a token: %d", target, rec.Code)
		}
		if rec := serve(h, http.MethodGet, target, "", "Authorization", "Bearer secret"); rec.Code != 200 {
			t.Errorf("%s with the token: %d %s", target, rec.Code, rec.Body)
		}
	}
}

// Config.OpenAPI is served as is at /api/openapi.yaml, behind the token.
func TestHandler_OpenAPIServedWhenSet(t *testing.T) {
	spec := []byte("openapi: 3.1.0\n")
	h := mustHandler(t, Config{OpenAPI: spec, APITokens: []string{"secret"}})
	if rec := serve(h, http.MethodGet, "/api/openapi.yaml", ""); rec.Code != 401 {
		t.Fatalf("without the token: %d", rec.Code)
	}
	rec := serve(h, http.MethodGet, "/api/openapi.yaml", "", "Authorization", "Bearer secret")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/yaml" || rec.Body.String() != string(spec) {
		t.Fatalf("GET: %d %q %q", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	if rec := serve(mustHandler(t, Config{}), http.MethodGet, "/api/openapi.yaml", ""); rec.Code != 404 {
		t.Fatalf("without a document: %d", rec.Code)
	}
}
