package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/retailpulse/retailpulse/events"
)

// submit handles POST /api/submit/: it decodes and validates the body,
// hands the job to Jobs.Submit and answers 201 {"job_id": N}.
//
// An Idempotency-Key header (at most MaxIdempotencyKeyLength printable ASCII
// characters) is passed to Jobs.Submit, scoped to the caller's API token
// when tokens are on, so a client may retry a submission whose answer it
// lost without creating a second job: the retry answers 201 with the same
// id and Idempotent-Replayed: true. The same key with a different job
// answers 422 and stores nothing. Content-Type is not
// checked: the body is parsed as JSON whatever it claims to be.
func (h *handler) submit(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Idempotency-Key")
	if !validIdempotencyKey(key) {
		h.reject("invalid")
		writeError(w, http.StatusBadRequest,
			fmt.Sprintf("Idempotency-Key must be at most %d printable ASCII characters", MaxIdempotencyKeyLength))
		return
	}
	if r.ContentLength > h.maxBody {
		h.tooLarge(w)
		return
	}
	if !h.submits.tryAcquire() {
		h.reject("overloaded")
		h.unavailable(w, r, events.ErrOverloaded, "service is at capacity, retry later")
		return
	}
	defer h.submits.release()
	body := http.MaxBytesReader(w, r.Body, h.maxBody)
	job, err := DecodeSubmit(body, h.limits, h.checkURL)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			h.tooLarge(w)
			return
		}
		h.reject("invalid")
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	job.SubmittedAt = h.now().UTC()

	if key != "" && len(h.tokens) > 0 {
		// Keys are scoped per API token: one client's key never names
		// another client's job.
		given, _ := bearerToken(r.Header.Get("Authorization"))
		sum := sha256.Sum256([]byte(given))
		key = hex.EncodeToString(sum[:8]) + "/" + key
	}
	id, replayed, err := h.jobs.Submit(r.Context(), job, key)
	switch {
	case err == nil:
	case errors.Is(err, events.ErrIdempotencyConflict):
		h.reject("invalid")
		writeError(w, http.StatusUnprocessableEntity, "Idempotency-Key was already used for a different job; send a new key for a new job")
		return
	case errors.Is(err, events.ErrOverloaded):
		h.unavailable(w, r, err, "service is at capacity, retry later")
		return
	case errors.Is(err, events.ErrStorageFull):
		h.unavailable(w, r, err, "event log is full, retry later")
		return
	case errors.Is(err, events.ErrJobTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "job too large to store: "+err.Error())
		return
	case errors.Is(err, events.ErrUnavailable):
		h.unavailable(w, r, err, logUnavailable)
		return
	case isContextError(err):
		h.unavailable(w, r, err, "submission did not complete in time, retry later")
		return
	default:
		h.internalError(w, r, err)
		return
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Location", "/api/status?jobid="+strconv.FormatUint(id, 10))
	writeJSON(w, http.StatusCreated, submitResponse{JobID: id})
}

// reject reports a submit refused by the API layer itself.
func (h *handler) reject(reason string) {
	if h.onReject != nil {
		h.onReject(reason)
	}
}

type submitResponse struct {
	JobID uint64 `json:"job_id"`
}

func (h *handler) tooLarge(w http.ResponseWriter) {
	h.reject("too_large")
	// The rest of the body is not read: close rather than drain it.
	w.Header().Set("Connection", "close")
	writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", h.maxBody))
}

// validIdempotencyKey accepts "" (no key) and up to
// MaxIdempotencyKeyLength printable ASCII characters.
func validIdempotencyKey(key string) bool {
	if len(key) > MaxIdempotencyKeyLength {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

// status handles GET /api/status?jobid=N. A jobid that is missing,
// repeated, not a positive decimal integer, or unknown is answered 400 {}
// exactly, as the spec says. The job id is a string in this answer (an
// integer in submit's), as in the spec's examples.
func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	id, view, ok := h.lookup(w, r)
	if !ok {
		return
	}
	jobID := strconv.FormatUint(id, 10)
	if view.Status == events.StatusFailed {
		errs := view.Errors
		if errs == nil {
			errs = []events.StoreError{}
		}
		writeJSON(w, http.StatusOK, failedStatusResponse{Status: view.Status, JobID: jobID, Error: errs})
		return
	}
	writeJSON(w, http.StatusOK, statusResponse{Status: view.Status, JobID: jobID})
}

// lookup parses ?jobid= and returns the job's view, or answers the request
// itself (400 {} for a missing, malformed or unknown id) and returns false.
func (h *handler) lookup(w http.ResponseWriter, r *http.Request) (uint64, events.JobView, bool) {
	w.Header().Set("Cache-Control", "no-store")
	values := r.URL.Query()["jobid"]
	if len(values) != 1 {
		writeRaw(w, http.StatusBadRequest, emptyObject)
		return 0, events.JobView{}, false
	}
	id, err := events.ParseJobID(values[0])
	if err != nil {
		writeRaw(w, http.StatusBadRequest, emptyObject)
		return 0, events.JobView{}, false
	}
	view, err := h.jobs.Status(r.Context(), id)
	switch {
	case err == nil:
		return id, view, true
	case errors.Is(err, events.ErrJobNotFound):
		writeRaw(w, http.StatusBadRequest, emptyObject)
	case errors.Is(err, events.ErrUnavailable):
		h.unavailable(w, r, err, logUnavailable)
	case errors.Is(err, events.ErrStale):
		h.unavailable(w, r, err, readModelBehind)
	case isContextError(err):
		h.unavailable(w, r, err, "status lookup did not complete in time, retry later")
	default:
		h.internalError(w, r, err)
	}
	return 0, events.JobView{}, false
}

// results handles GET /api/results?jobid=N[&limit=&cursor=]: a page of
// the job's image results, in submission order. Unknown ids are answered
// like status does.
func (h *handler) results(w http.ResponseWriter, r *http.Request) {
	if !h.resultsIn.tryAcquire() {
		h.unavailable(w, r, events.ErrOverloaded, "too many results requests in progress, retry later")
		return
	}
	defer h.resultsIn.release()
	w.Header().Set("Cache-Control", "no-store")
	q := r.URL.Query()
	values := q["jobid"]
	if len(values) != 1 {
		writeRaw(w, http.StatusBadRequest, emptyObject)
		return
	}
	id, err := events.ParseJobID(values[0])
	if err != nil {
		writeRaw(w, http.StatusBadRequest, emptyObject)
		return
	}
	limit, cursor, err := pageParams(q)
	if err != nil {
		h.badParam(w, err)
		return
	}
	page, err := h.resultsOf.Results(r.Context(), id, limit, cursor)
	switch {
	case err == nil:
	case errors.Is(err, events.ErrJobNotFound):
		writeRaw(w, http.StatusBadRequest, emptyObject)
		return
	case isContextError(err):
		h.unavailable(w, r, err, "results lookup did not complete in time, retry later")
		return
	default:
		h.queryAnswered(w, r, err)
		return
	}
	if page.Images == nil {
		page.Images = []events.ImageResult{}
	}
	writeJSON(w, http.StatusOK, resultsResponse{JobID: strconv.FormatUint(id, 10), Status: page.Status, Images: page.Images, NextCursor: page.Next})
}

type resultsResponse struct {
	JobID      string               `json:"job_id"`
	Status     events.Status        `json:"status"`
	Images     []events.ImageResult `json:"images"`
	NextCursor string               `json:"next_cursor,omitempty"`
}

var emptyObject = []byte("{}")

// Field order is the spec's: status, job_id, error.
type statusResponse struct {
	Status events.Status `json:"status"`
	JobID  string        `json:"job_id"`
}

type failedStatusResponse struct {
	Status events.Status       `json:"status"`
	JobID  string              `json:"job_id"`
	Error  []events.StoreError `json:"error"`
}

type healthResponse struct {
	Status string `json:"status"`
}

func (h *handler) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, healthResponse{Status: "ok"})
}

func (h *handler) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if !h.ready() {
		writeJSON(w, http.StatusServiceUnavailable, healthResponse{Status: "not ready"})
		return
	}
	writeJSON(w, http.StatusOK, healthResponse{Status: "ready"})
}

// logUnavailable is the client's message when the event log cannot be
// reached or has lost its quorum.
const logUnavailable = "event log unavailable, retry later"

// readModelBehind is the client's message when the read model has not
// reached the log yet (events.ErrStale).
const readModelBehind = "read model is catching up with the event log, retry later"

// unavailable answers 503 with Retry-After and logs the cause at warn.
func (h *handler) unavailable(w http.ResponseWriter, r *http.Request, err error, msg string) {
	h.log.Warn("request refused", "method", r.Method, "path", r.URL.Path, "error", err)
	w.Header().Set("Retry-After", h.retryAfter)
	writeError(w, http.StatusServiceUnavailable, msg)
}

// internalError answers 500 without details and logs the cause.
func (h *handler) internalError(w http.ResponseWriter, r *http.Request, err error) {
	h.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	writeError(w, http.StatusInternalServerError, "internal error")
}

func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
