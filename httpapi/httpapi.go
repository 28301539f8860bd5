// Package httpapi is retailpulse's HTTP front end: the customer's two
// endpoints (POST /api/submit/ and GET /api/status?jobid=N) plus health,
// readiness and metrics.
//
// It declares the one interface it consumes, Jobs, and imports nothing of
// ours but the events package. Routes:
//
//	POST /api/submit, /api/submit/   201 {"job_id": 123}
//	GET  /api/status, /api/status/   200 {"status": "...", "job_id": "123"[, "error": [...]]}
//	GET  /api/jobs/{id}/events       text/event-stream (Config.Streams; see sse.go)
//	GET  /api/events                 text/event-stream (Config.Streams; see sse.go)
//	GET  /api/results                200 {"job_id", "status", "images": [...], "next_cursor"} (Results)
//	GET  /api/visits, /api/jobs, /api/stores/{store_id}/summary (Queries)
//	GET  /api/openapi.yaml           the OpenAPI document (Config.OpenAPI)
//	GET  /api/jobs/{id}/stores       a job's stores (JobStores; see dashboard.go)
//	GET  /api/stats                  recent throughput and jobs (Stats)
//	GET  /, /ui/...                  the dashboard (Config.UI)
//	GET  /healthz                    200 {"status": "ok"}
//	GET  /readyz                     200 {"status": "ready"} or 503 {"status": "not ready"}
//	GET  /metrics                    Config.MetricsHandler, when set
//
// An instance that serves no API (a worker) uses NewOpsHandler: health,
// readiness and metrics only.
//
// Every JSON response has Content-Type application/json and carries no
// trailing newline. Errors are {"error": "<what is wrong>"}, except the
// status endpoint's 400, which is {} exactly, as the spec says. A route
// answers other methods with 405 and an Allow header; an unknown path is
// 404 {"error": "not found"}.
package httpapi

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/retailpulse/retailpulse/events"
)

// Jobs is the engine as the API sees it. Implementations are safe for
// concurrent use.
type Jobs interface {
	// Submit durably records the job and returns its id. The same non-empty
	// idempotencyKey with the same job returns the same id without creating
	// a new job (replayed = true); with another job it returns
	// events.ErrIdempotencyConflict (422). events.ErrOverloaded,
	// events.ErrStorageFull and events.ErrUnavailable become 503 with
	// Retry-After.
	Submit(ctx context.Context, job *events.JobSubmitted, idempotencyKey string) (id uint64, replayed bool, err error)
	// Status returns the job's current view, or events.ErrJobNotFound.
	Status(ctx context.Context, id uint64) (events.JobView, error)
}

// Results is optional: when Jobs also implements it, GET /api/results
// serves every image's recorded result, a page at a time. Safe for
// concurrent use.
type Results interface {
	// Results returns the job's status and a page of at most limit of its
	// images in submission order, after cursor ("" = from the first), or
	// events.ErrJobNotFound, or events.ErrBadCursor.
	Results(ctx context.Context, id uint64, limit int, cursor string) (events.ResultPage, error)
}

// Other defaults of Config.
const (
	DefaultRetryAfter = time.Second
	// MaxIdempotencyKeyLength bounds the Idempotency-Key header.
	MaxIdempotencyKeyLength = 128
)

// Config configures NewHandler. Only Jobs is required; a zero field takes
// its default.
type Config struct {
	// Jobs receives submissions and answers status requests.
	Jobs Jobs
	// CheckURL validates one image URL at submit; its error is shown to the
	// client. Nil accepts any non-empty string.
	CheckURL func(raw string) error
	// MaxBodyBytes caps a submit body: a larger one is refused with 413.
	// Default DefaultMaxBodyBytes (10 MiB).
	MaxBodyBytes int64
	// MaxVisits, MaxImages, MaxURLLength, MaxStoreIDLength and
	// MaxVisitTimeLength bound a submission (see Limits); beyond them a
	// submit is refused with 400 naming the limit.
	MaxVisits          int
	MaxImages          int
	MaxURLLength       int
	MaxStoreIDLength   int
	MaxVisitTimeLength int
	// APITokens, if not empty, makes every /api/ path require
	// "Authorization: Bearer <token>" with one of these tokens; otherwise
	// the answer is 401 with WWW-Authenticate: Bearer. Health, readiness
	// and metrics are never behind a token.
	APITokens []string
	// Ready reports readiness for /readyz. Nil means always ready.
	Ready func() bool
	// Instrument, if set, wraps each route's handler, given the route's
	// template ("/api/submit", "/api/status", "/healthz", "/readyz",
	// "/metrics"); both spellings of a route share one template.
	Instrument func(route string, h http.Handler) http.Handler
	// MetricsHandler is served at /metrics when set.
	MetricsHandler http.Handler
	// RetryAfter is sent in Retry-After with every 503, in whole seconds,
	// rounded up, at least 1. Default DefaultRetryAfter.
	RetryAfter time.Duration
	// Logger receives server errors (500s, recovered panics) and refused
	// submissions (503s). Default: discard.
	Logger *slog.Logger
	// OnReject, if set, is told each request the API refuses by itself:
	// "overloaded" (503, MaxPendingSubmits reached),
	// "invalid" (400 on submit), "too_large" (413), "unauthorized" (401).
	OnReject func(reason string)
	// Now stamps SubmittedAt. Default time.Now.
	Now func() time.Time
	// MaxPendingSubmits bounds submits in progress, taken before the body is
	// read, so concurrent large bodies are never all decoded at once;
	// beyond it 503 at once. 0 = unbounded.
	MaxPendingSubmits int
	// MaxPendingResults bounds /api/results requests in progress (each
	// reads a whole job from the log); beyond it 503 at once. 0 = unbounded.
	MaxPendingResults int
	// Streams, if set, serves the event-stream routes
	// (GET /api/jobs/{id}/events and GET /api/events: see sse.go); it must
	// be running (Streams.Run). Jobs.Status tells which jobs exist.
	Streams *Streams
	// OpenAPI, when set, is served at GET /api/openapi.yaml (behind the
	// token like every /api/ path): the API's OpenAPI document.
	OpenAPI []byte
	// UI, when set, is the dashboard: served at / and under /ui/ (GET and
	// HEAD), without a token (the page asks for one before it reads the
	// API). See dashboard.go.
	UI http.Handler
}

// handler holds a validated Config.
type handler struct {
	jobs       Jobs
	resultsOf  Results
	onReject   func(string)
	checkURL   func(string) error
	maxBody    int64
	limits     Limits
	tokens     [][sha256.Size]byte
	ready      func() bool
	retryAfter string
	log        *slog.Logger
	now        func() time.Time
	submits    semaphore // nil = unbounded
	resultsIn  semaphore // nil = unbounded
	streams    *Streams  // nil: no event-stream routes
	queries    Queries   // nil unless Jobs implements it
}

// semaphore bounds work in progress; a nil one admits everything.
type semaphore chan struct{}

func newSemaphore(n int) semaphore {
	if n <= 0 {
		return nil
	}
	return make(semaphore, n)
}

// tryAcquire takes a slot if one is free; release gives it back.
func (s semaphore) tryAcquire() bool {
	if s == nil {
		return true
	}
	select {
	case s <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s semaphore) release() {
	if s != nil {
		<-s
	}
}

// NewHandler validates cfg and returns the API's handler. It fails if Jobs
// is nil, a limit is negative, or a token is empty.
func NewHandler(cfg Config) (http.Handler, error) {
	if cfg.Jobs == nil {
		return nil, errors.New("httpapi: Config.Jobs is required")
	}
	if cfg.MaxBodyBytes < 0 || cfg.MaxVisits < 0 || cfg.MaxImages < 0 || cfg.MaxURLLength < 0 ||
		cfg.MaxStoreIDLength < 0 || cfg.MaxVisitTimeLength < 0 || cfg.RetryAfter < 0 ||
		cfg.MaxPendingSubmits < 0 || cfg.MaxPendingResults < 0 {
		return nil, errors.New("httpapi: limits and RetryAfter must not be negative")
	}
	lim := Limits{MaxVisits: cfg.MaxVisits, MaxImages: cfg.MaxImages, MaxURLLength: cfg.MaxURLLength,
		MaxStoreIDLength: cfg.MaxStoreIDLength, MaxVisitTimeLength: cfg.MaxVisitTimeLength}
	h := &handler{
		jobs:      cfg.Jobs,
		checkURL:  cfg.CheckURL,
		maxBody:   cfg.MaxBodyBytes,
		limits:    lim.withDefaults(),
		ready:     cfg.Ready,
		log:       cfg.Logger,
		now:       cfg.Now,
		onReject:  cfg.OnReject,
		submits:   newSemaphore(cfg.MaxPendingSubmits),
		resultsIn: newSemaphore(cfg.MaxPendingResults),
	}
	if h.maxBody == 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	for i, tok := range cfg.APITokens {
		if tok == "" {
			return nil, fmt.Errorf("httpapi: APITokens[%d] is empty", i)
		}
		h.tokens = append(h.tokens, sha256.Sum256([]byte(tok)))
	}
	if h.ready == nil {
		h.ready = func() bool { return true }
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	retry := cfg.RetryAfter
	if retry == 0 {
		retry = DefaultRetryAfter
	}
	h.retryAfter = fmt.Sprint(max(1, int64((retry+time.Second-1)/time.Second)))

	instrument := cfg.Instrument
	if instrument == nil {
		instrument = func(_ string, h http.Handler) http.Handler { return h }
	}
	route := func(r *mux.Router, template string, paths []string, inner http.Handler) {
		wrapped := instrument(template, h.recoverPanics(inner))
		for _, p := range paths {
			r.Handle(p, wrapped)
		}
	}

	r := mux.NewRouter()
	r.StrictSlash(false) // both spellings are routes of their own; never redirect
	route(r, "/api/submit", []string{"/api/submit", "/api/submit/"},
		h.requireToken(allowMethods(h.submit, http.MethodPost)))
	route(r, "/api/status", []string{"/api/status", "/api/status/"},
		h.requireToken(allowMethods(h.status, http.MethodGet, http.MethodHead)))
	route(r, "/healthz", []string{"/healthz"},
		allowMethods(h.healthz, http.MethodGet, http.MethodHead))
	route(r, "/readyz", []string{"/readyz"},
		allowMethods(h.readyz, http.MethodGet, http.MethodHead))
	if rs, ok := cfg.Jobs.(Results); ok {
		h.resultsOf = rs
		route(r, "/api/results", []string{"/api/results", "/api/results/"},
			h.requireToken(allowMethods(h.results, http.MethodGet, http.MethodHead)))
	}
	if cfg.Streams != nil {
		h.streams = cfg.Streams
		route(r, "/api/jobs/{id}/events", []string{"/api/jobs/{id}/events"},
			h.requireToken(allowMethods(h.jobEvents, http.MethodGet)))
		route(r, "/api/events", []string{"/api/events", "/api/events/"},
			h.requireToken(allowMethods(h.allEvents, http.MethodGet)))
	}
	if qs, ok := cfg.Jobs.(Queries); ok {
		h.routeQueries(r, route, qs)
	}
	if cfg.OpenAPI != nil {
		spec := cfg.OpenAPI
		route(r, "/api/openapi.yaml", []string{"/api/openapi.yaml"},
			h.requireToken(allowMethods(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/yaml")
				w.WriteHeader(http.StatusOK)
				w.Write(spec)
			}, http.MethodGet, http.MethodHead)))
	}
	h.routeDashboard(r, route, cfg, instrument)
	if cfg.MetricsHandler != nil {
		route(r, "/metrics", []string{"/metrics"},
			allowMethods(cfg.MetricsHandler.ServeHTTP, http.MethodGet, http.MethodHead))
	}
	r.NotFoundHandler = http.HandlerFunc(h.notFound)
	return h.recoverPanics(r), nil
}

// OpsConfig configures NewOpsHandler.
type OpsConfig struct {
	// Ready reports readiness for /readyz. Nil means always ready.
	Ready func() bool
	// Instrument, if set, wraps each route's handler, as Config.Instrument.
	Instrument func(route string, h http.Handler) http.Handler
	// MetricsHandler is served at /metrics when set.
	MetricsHandler http.Handler
	// Logger receives recovered panics. Default: discard.
	Logger *slog.Logger
}

// NewOpsHandler returns the handler of an instance that serves no API (a
// worker): /healthz, /readyz and /metrics as NewHandler serves them, and
// 404 {"error": "not found"} for every other path, /api/* included.
func NewOpsHandler(cfg OpsConfig) http.Handler {
	h := &handler{ready: cfg.Ready, log: cfg.Logger}
	if h.ready == nil {
		h.ready = func() bool { return true }
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	instrument := cfg.Instrument
	if instrument == nil {
		instrument = func(_ string, h http.Handler) http.Handler { return h }
	}
	r := mux.NewRouter()
	route := func(path string, inner http.Handler) {
		r.Handle(path, instrument(path, h.recoverPanics(inner)))
	}
	route("/healthz", allowMethods(h.healthz, http.MethodGet, http.MethodHead))
	route("/readyz", allowMethods(h.readyz, http.MethodGet, http.MethodHead))
	if cfg.MetricsHandler != nil {
		route("/metrics", allowMethods(cfg.MetricsHandler.ServeHTTP, http.MethodGet, http.MethodHead))
	}
	r.NotFoundHandler = http.HandlerFunc(h.notFound)
	return h.recoverPanics(r)
}

// NewServer returns an http.Server for h on addr with timeouts and a header
// cap suited to this API: ReadHeaderTimeout 5s, ReadTimeout 30s (a 10 MiB
// body over a slow link), WriteTimeout 30s, IdleTimeout 120s,
// MaxHeaderBytes 64 KiB.
func NewServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}
