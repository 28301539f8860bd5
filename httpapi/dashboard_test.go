package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// dashJobs answers the dashboard's routes with fixed values or err.
type dashJobs struct {
	*memJobs
	stores events.JobStores
	snap   StatsSnapshot
	asked  uint64
	err    error
}

var (
	_ JobStores = (*dashJobs)(nil)
	_ Stats     = (*dashJobs)(nil)
)

func (d *dashJobs) JobStores(_ context.Context, id uint64) (events.JobStores, error) {
	d.asked = id
	return d.stores, d.err
}

func (d *dashJobs) Stats(context.Context) (StatsSnapshot, error) { return d.snap, d.err }

func TestHandler_DashboardJobStores(t *testing.T) {
	d := &dashJobs{memJobs: newMemJobs(), stores: events.JobStores{Status: events.StatusFailed, Stores: []events.JobStore{
		{StoreID: "S1", StoreName: "One", AreaCode: "A1", Visits: 2, Images: 3, Processed: 2, Failed: 1,
			FirstFailure: &events.StoreFailure{Visit: 1, Index: 0, URL: "http://x/<b>", Reason: "http 404"}},
		{StoreID: "S9", Visits: 1, Images: 1, Processed: 1},
	}}}
	h := mustHandler(t, Config{Jobs: d})
	checkJSON(t, serve(h, http.MethodGet, "/api/jobs/42/stores", ""), 200,
		`{"job_id":"42","status":"failed","stores":[`+
			`{"store_id":"S1","store_name":"One","area_code":"A1","visits":2,"images":3,"processed":2,"failed":1,"first_failure":{"visit":1,"index":0,"url":"http://x/\u003cb\u003e","reason":"http 404"}},`+
			`{"store_id":"S9","store_name":"","area_code":"","visits":1,"images":1,"processed":1,"failed":0}]}`)
	if d.asked != 42 {
		t.Fatalf("asked for job %d", d.asked)
	}
	checkJSON(t, serve(h, http.MethodGet, "/api/jobs/x1/stores", ""), 400, `{}`)
	checkJSON(t, serve(h, http.MethodGet, "/api/jobs/0/stores", ""), 400, `{}`)
	if rec := serve(h, http.MethodPost, "/api/jobs/1/stores", ""); rec.Code != 405 || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: %d %q", rec.Code, rec.Header().Get("Allow"))
	}

	d.stores = events.JobStores{Status: events.StatusOngoing}
	checkJSON(t, serve(h, http.MethodGet, "/api/jobs/7/stores", ""), 200, `{"job_id":"7","status":"ongoing","stores":[]}`)
	for _, tt := range []struct {
		err  error
		code int
		body string
	}{
		{events.ErrJobNotFound, 404, errorBody("job 7 not found")},
		{events.ErrStale, 503, errorBody("read model is catching up with the event log, retry later")},
		{errors.New("disk on fire"), 500, errorBody("internal error")},
	} {
		d.err = tt.err
		rec := serve(h, http.MethodGet, "/api/jobs/7/stores", "")
		checkJSON(t, rec, tt.code, tt.body)
		if tt.code == 503 && rec.Header().Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
	}
}

func TestHandler_DashboardStats(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	d := &dashJobs{memJobs: newMemJobs(), snap: StatsSnapshot{IntervalSeconds: 2,
		Samples:          []StatsSample{{At: at, Processed: 5, Failed: 1}},
		FailuresByReason: []ReasonCount{{Reason: "http 404", Count: 1}},
		Jobs:             JobCounts{Ongoing: 3, Queued: 1, Active: 2}}}
	h := mustHandler(t, Config{Jobs: d})
	checkJSON(t, serve(h, http.MethodGet, "/api/stats", ""), 200,
		`{"interval_seconds":2,"samples":[{"at":"2026-11-23T10:00:00Z","processed":5,"failed":1}],"failures_by_reason":[{"reason":"http 404","count":1}],"jobs":{"ongoing":3,"queued":1,"active":2}}`)
	d.snap = StatsSnapshot{IntervalSeconds: 2}
	checkJSON(t, serve(h, http.MethodGet, "/api/stats/", ""), 200,
		`{"interval_seconds":2,"samples":[],"failures_by_reason":[],"jobs":{"ongoing":0,"queued":0,"active":0}}`)
	d.err = events.ErrUnavailable
	checkJSON(t, serve(h, http.MethodGet, "/api/stats", ""), 503, errorBody("event log unavailable, retry later"))
}

// Without the interfaces the routes do not exist; with a token they need
// it like every /api/ route.
func TestHandler_DashboardRoutesNeedTheToken(t *testing.T) {
	for _, target := range []string{"/api/stats", "/api/jobs/1/stores"} {
		checkJSON(t, serve(mustHandler(t, Config{}), http.MethodGet, target, ""), 404, errorBody("not found"))
	}
	h := mustHandler(t, Config{Jobs: &dashJobs{memJobs: newMemJobs()}, APITokens: []string{"secret"}})
	for _, target := range []string{"/api/stats", "/api/jobs/1/stores"} {
		if rec := serve(h, http.MethodGet, target, ""); rec.Code != 401 {
			t.Errorf("%s without a token: %d", target, rec.Code)
		}
		if rec := serve(h, http.MethodGet, target, "", "Authorization", "Bearer secret"); rec.Code != 200 {
			t.Errorf("%s with the token: %d %s", target, rec.Code, rec.Body)
		}
	}
}

// Config.UI is served at / and under /ui/ without a token (the page holds
// no data); unknown /api/ paths keep their JSON 404 behind the token, and
// other paths their JSON 404.
func TestHandler_UIServedWhenSet(t *testing.T) {
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("ui " + r.URL.Path))
	})
	h := mustHandler(t, Config{UI: ui, APITokens: []string{"secret"}})
	for _, target := range []string{"/", "/ui/", "/ui/app.js"} {
		rec := serve(h, http.MethodGet, target, "")
		if rec.Code != 200 || rec.Body.String() != "ui "+target {
			t.Errorf("GET %s: %d %q", target, rec.Code, rec.Body)
		}
	}
	if rec := serve(h, http.MethodPost, "/", ""); rec.Code != 405 || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: %d %q", rec.Code, rec.Header().Get("Allow"))
	}
	if rec := serve(h, http.MethodGet, "/api/nope", ""); rec.Code != 401 {
		t.Errorf("unknown /api/ path without the token: %d", rec.Code)
	}
	checkJSON(t, serve(h, http.MethodGet, "/api/nope", "", "Authorization", "Bearer secret"), 404, errorBody("not found"))
	checkJSON(t, serve(h, http.MethodGet, "/elsewhere", ""), 404, errorBody("not found"))
	checkJSON(t, serve(mustHandler(t, Config{}), http.MethodGet, "/", ""), 404, errorBody("not found"))
}

// StreamsConfig.OnMessage sees every message of the shared tail, in
// order, whether or not a client listens.
func TestStreams_OnMessageSeesEveryMessageOfTheTail(t *testing.T) {
	var mu sync.Mutex
	var seqs []uint64
	imagesSeen := 0
	env := newSSEEnv(t, StreamsConfig{OnMessage: func(rec events.Record) {
		mu.Lock()
		defer mu.Unlock()
		seqs = append(seqs, rec.Seq)
		for _, ev := range rec.Events {
			switch ev.(type) {
			case *events.ImageProcessed, *events.ImageFailed:
				imagesSeen++
			}
		}
	}}, Config{}, nil)
	id := env.submit(10)
	env.write(id, events.KindImages, images(0, 6)...)
	env.write(id, events.KindImages, images(6, 10)...)
	last := env.complete(id)
	jstest.CheckFor(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seqs) == 0 || seqs[len(seqs)-1] != last {
			return fmt.Errorf("seen %v, want up to %d", seqs, last)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(seqs) != 4 || seqs[0] != id || !slices.IsSorted(seqs) || imagesSeen != 10 {
		t.Fatalf("seen %v with %d images", seqs, imagesSeen)
	}
}
