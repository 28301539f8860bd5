package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/retailpulse/retailpulse/events"
)

// Queries is optional: when Jobs also implements it, the read side's
// queries are served:
//
//	GET /api/visits?area=&storeid=&startdate=&enddate=&status=&limit=&cursor=
//	GET /api/stores/{store_id}/summary?startdate=&enddate=
//	GET /api/jobs?status=&limit=&cursor=
//
// Implementations are safe for concurrent use, answer no older state than
// one already answered, and return events.ErrBadCursor for a cursor their
// list did not hand out, events.ErrStoreNotFound (404) for an unknown store,
// and events.ErrStale or events.ErrUnavailable (503) when they cannot
// answer now.
type Queries interface {
	Visits(ctx context.Context, f events.VisitFilter) (events.VisitPage, error)
	StoreSummary(ctx context.Context, storeID string, from, to time.Time) (events.StoreSummary, error)
	ListJobs(ctx context.Context, status events.Status, limit int, cursor string) (events.JobPage, error)
}

// routeQueries registers the Queries routes through route (see NewHandler).
func (h *handler) routeQueries(r *mux.Router, route func(*mux.Router, string, []string, http.Handler), qs Queries) {
	h.queries = qs
	route(r, "/api/visits", []string{"/api/visits", "/api/visits/"},
		h.requireToken(allowMethods(h.visits, http.MethodGet, http.MethodHead)))
	route(r, "/api/stores/{store_id}/summary", []string{"/api/stores/{store_id}/summary"},
		h.requireToken(allowMethods(h.storeSummary, http.MethodGet, http.MethodHead)))
	route(r, "/api/jobs", []string{"/api/jobs", "/api/jobs/"},
		h.requireToken(allowMethods(h.listJobs, http.MethodGet, http.MethodHead)))
}

// paramError is a query parameter the client got wrong: 400 naming it.
type paramError struct{ param, what string }

func (e *paramError) Error() string { return e.param + ": " + e.what }

// maxFilterLength bounds a free-text filter value (area, storeid).
const maxFilterLength = 256

// param returns a query parameter's value ("" when absent or empty); a
// parameter given twice is an error.
func param(q url.Values, name string) (string, error) {
	vs := q[name]
	switch {
	case len(vs) > 1:
		return "", &paramError{name, "given more than once"}
	case len(vs) == 0:
		return "", nil
	case len(vs[0]) > maxFilterLength:
		return "", &paramError{name, fmt.Sprintf("longer than %d characters", maxFilterLength)}
	}
	return vs[0], nil
}

// pageParams reads limit (1..events.MaxPageLimit, default
// events.DefaultPageLimit) and cursor.
func pageParams(q url.Values) (limit int, cursor string, err error) {
	text, err := param(q, "limit")
	if err != nil {
		return 0, "", err
	}
	limit = events.DefaultPageLimit
	if text != "" {
		n, err := strconv.Atoi(text)
		if err != nil || n < 1 || n > events.MaxPageLimit {
			return 0, "", &paramError{"limit", fmt.Sprintf("want an integer from 1 to %d", events.MaxPageLimit)}
		}
		limit = n
	}
	cursor, err = param(q, "cursor")
	return limit, cursor, err
}

// dateRange reads startdate and enddate: YYYY-MM-DD (a whole UTC day:
// startdate from its first millisecond, enddate to its last) or an RFC 3339
// time. Zero when absent.
func dateRange(q url.Values) (from, to time.Time, err error) {
	parse := func(name string, end bool) (time.Time, error) {
		text, err := param(q, name)
		if err != nil || text == "" {
			return time.Time{}, err
		}
		if d, err := time.Parse(time.DateOnly, text); err == nil {
			if end {
				d = d.Add(24*time.Hour - time.Millisecond)
			}
			return d, nil
		}
		t, err := time.Parse(time.RFC3339Nano, text)
		if err != nil {
			return time.Time{}, &paramError{name, "want a date YYYY-MM-DD or an RFC 3339 time"}
		}
		return t, nil
	}
	if from, err = parse("startdate", false); err != nil {
		return time.Time{}, time.Time{}, err
	}
	if to, err = parse("enddate", true); err != nil {
		return time.Time{}, time.Time{}, err
	}
	if !from.IsZero() && !to.IsZero() && to.Before(from) {
		return time.Time{}, time.Time{}, &paramError{"enddate", "before startdate"}
	}
	return from, to, nil
}

type visitsResponse struct {
	Visits     []events.VisitView `json:"visits"`
	NextCursor string             `json:"next_cursor,omitempty"`
}

// visits handles GET /api/visits: the visits that match every filter
// given, newest visit_time first, a page at a time.
func (h *handler) visits(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	q := r.URL.Query()
	var f events.VisitFilter
	var status string
	var err error
	for _, p := range []struct {
		name string
		dst  *string
	}{{"area", &f.AreaCode}, {"storeid", &f.StoreID}, {"status", &status}} {
		if *p.dst, err = param(q, p.name); err != nil {
			h.badParam(w, err)
			return
		}
	}
	switch s := events.VisitStatus(status); s {
	case "", events.VisitProcessed, events.VisitFailed, events.VisitPending:
		f.Status = s
	default:
		h.badParam(w, &paramError{"status", "want processed, failed or pending"})
		return
	}
	if f.From, f.To, err = dateRange(q); err != nil {
		h.badParam(w, err)
		return
	}
	if f.Limit, f.Cursor, err = pageParams(q); err != nil {
		h.badParam(w, err)
		return
	}
	page, err := h.queries.Visits(r.Context(), f)
	if !h.queryAnswered(w, r, err) {
		return
	}
	if page.Visits == nil {
		page.Visits = []events.VisitView{}
	}
	writeJSON(w, http.StatusOK, visitsResponse{Visits: page.Visits, NextCursor: page.Next})
}

// storeSummary handles GET /api/stores/{store_id}/summary: a store's
// visits and images, in all and per day, within startdate..enddate.
func (h *handler) storeSummary(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	from, to, err := dateRange(r.URL.Query())
	if err != nil {
		h.badParam(w, err)
		return
	}
	sum, err := h.queries.StoreSummary(r.Context(), mux.Vars(r)["store_id"], from, to)
	if !h.queryAnswered(w, r, err) {
		return
	}
	writeJSON(w, http.StatusOK, sum)
}

type jobsResponse struct {
	Jobs       []events.JobSummary `json:"jobs"`
	NextCursor string              `json:"next_cursor,omitempty"`
}

// listJobs handles GET /api/jobs: jobs newest first, a page at a time.
func (h *handler) listJobs(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	q := r.URL.Query()
	status, err := param(q, "status")
	if err != nil {
		h.badParam(w, err)
		return
	}
	switch events.Status(status) {
	case "", events.StatusOngoing, events.StatusCompleted, events.StatusFailed:
	default:
		h.badParam(w, &paramError{"status", "want ongoing, completed or failed"})
		return
	}
	limit, cursor, err := pageParams(q)
	if err != nil {
		h.badParam(w, err)
		return
	}
	page, err := h.queries.ListJobs(r.Context(), events.Status(status), limit, cursor)
	if !h.queryAnswered(w, r, err) {
		return
	}
	if page.Jobs == nil {
		page.Jobs = []events.JobSummary{}
	}
	writeJSON(w, http.StatusOK, jobsResponse{Jobs: page.Jobs, NextCursor: page.Next})
}

// badParam answers 400 naming the parameter.
func (h *handler) badParam(w http.ResponseWriter, err error) {
	writeError(w, http.StatusBadRequest, err.Error())
}

// queryAnswered answers the request itself when err is not nil (400 for a
// bad cursor, 404 for an unknown store, 503 when the read model cannot
// answer now, 500 otherwise) and reports whether err was nil.
func (h *handler) queryAnswered(w http.ResponseWriter, r *http.Request, err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, events.ErrBadCursor):
		h.badParam(w, &paramError{"cursor", "not a cursor of this list; start again without one"})
	case errors.Is(err, events.ErrStoreNotFound):
		writeError(w, http.StatusNotFound, "no store "+strconv.Quote(mux.Vars(r)["store_id"])+" in the store master or in any visit")
	case errors.Is(err, events.ErrStale):
		h.unavailable(w, r, err, readModelBehind)
	case errors.Is(err, events.ErrUnavailable):
		h.unavailable(w, r, err, logUnavailable)
	case isContextError(err):
		h.unavailable(w, r, err, "query did not complete in time, retry later")
	default:
		h.internalError(w, r, err)
	}
	return false
}
