package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/retailpulse/retailpulse/events"
)

// What the dashboard reads beyond the other routes, and the dashboard
// itself:
//
//	GET /api/jobs/{id}/stores  a job's stores (JobStores)
//	GET /api/stats             recent throughput, failures, jobs (Stats)
//	GET /, /ui/...             the dashboard's files (Config.UI)

// JobStores is optional: when Jobs also implements it, GET
// /api/jobs/{id}/stores serves a job's stores with their counters and
// first failure. Safe for concurrent use.
type JobStores interface {
	// JobStores returns the job's status and its stores in the order of
	// each store's first visit, or events.ErrJobNotFound.
	JobStores(ctx context.Context, id uint64) (events.JobStores, error)
}

// Stats is optional: when Jobs also implements it, GET /api/stats serves
// the service's recent activity. Safe for concurrent use.
type Stats interface {
	Stats(ctx context.Context) (StatsSnapshot, error)
}

// StatsSnapshot is the service's recent activity as the dashboard draws
// it.
type StatsSnapshot struct {
	// IntervalSeconds is the length of each sample.
	IntervalSeconds int `json:"interval_seconds"`
	// Samples are the images settled in each interval of the recent window,
	// oldest first, the last one still filling.
	Samples []StatsSample `json:"samples"`
	// FailuresByReason counts the window's failed images by reason class,
	// most frequent first.
	FailuresByReason []ReasonCount `json:"failures_by_reason"`
	// Jobs counts the jobs not completed yet.
	Jobs JobCounts `json:"jobs"`
}

// StatsSample is one interval of StatsSnapshot.Samples.
type StatsSample struct {
	At        time.Time `json:"at"` // the interval's start
	Processed int       `json:"processed"`
	Failed    int       `json:"failed"`
}

// ReasonCount is a failure reason class and its count.
type ReasonCount struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

// JobCounts counts unfinished jobs: Ongoing (not completed), of which
// Queued wait for an owner and Active are being processed.
type JobCounts struct {
	Ongoing int `json:"ongoing"`
	Queued  int `json:"queued"`
	Active  int `json:"active"`
}

// routeDashboard registers the dashboard's routes through route (see
// NewHandler): the JSON routes its implementations allow, and the UI.
func (h *handler) routeDashboard(r *mux.Router, route func(*mux.Router, string, []string, http.Handler), cfg Config, instrument func(string, http.Handler) http.Handler) {
	if js, ok := cfg.Jobs.(JobStores); ok {
		route(r, "/api/jobs/{id}/stores", []string{"/api/jobs/{id}/stores"},
			h.requireToken(allowMethods(func(w http.ResponseWriter, r *http.Request) { h.jobStores(w, r, js) }, http.MethodGet, http.MethodHead)))
	}
	if st, ok := cfg.Jobs.(Stats); ok {
		route(r, "/api/stats", []string{"/api/stats", "/api/stats/"},
			h.requireToken(allowMethods(func(w http.ResponseWriter, r *http.Request) { h.stats(w, r, st) }, http.MethodGet, http.MethodHead)))
	}
	if cfg.UI != nil {
		// The page itself is public, like /healthz: it holds no data, and
		// asks for the token (when there is one) before it reads any.
		ui := instrument("/ui", h.recoverPanics(allowMethods(cfg.UI.ServeHTTP, http.MethodGet, http.MethodHead)))
		r.Handle("/", ui)
		r.PathPrefix("/ui/").Handler(ui)
	}
}

type jobStoresResponse struct {
	JobID  string            `json:"job_id"`
	Status events.Status     `json:"status"`
	Stores []events.JobStore `json:"stores"`
}

// jobStores handles GET /api/jobs/{id}/stores.
func (h *handler) jobStores(w http.ResponseWriter, r *http.Request, js JobStores) {
	w.Header().Set("Cache-Control", "no-store")
	id, err := events.ParseJobID(mux.Vars(r)["id"])
	if err != nil {
		writeRaw(w, http.StatusBadRequest, emptyObject)
		return
	}
	out, err := js.JobStores(r.Context(), id)
	switch {
	case err == nil:
	case errors.Is(err, events.ErrJobNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("job %d not found", id))
		return
	default:
		h.queryAnswered(w, r, err)
		return
	}
	if out.Stores == nil {
		out.Stores = []events.JobStore{}
	}
	writeJSON(w, http.StatusOK, jobStoresResponse{JobID: strconv.FormatUint(id, 10), Status: out.Status, Stores: out.Stores})
}

// stats handles GET /api/stats.
func (h *handler) stats(w http.ResponseWriter, r *http.Request, st Stats) {
	w.Header().Set("Cache-Control", "no-store")
	snap, err := st.Stats(r.Context())
	if !h.queryAnswered(w, r, err) {
		return
	}
	if snap.Samples == nil {
		snap.Samples = []StatsSample{}
	}
	if snap.FailuresByReason == nil {
		snap.FailuresByReason = []ReasonCount{}
	}
	writeJSON(w, http.StatusOK, snap)
}
