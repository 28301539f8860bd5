package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
)

// memJobs is an in-memory Jobs for testing the HTTP layer.
type memJobs struct {
	mu        sync.Mutex
	next      uint64
	submitted map[uint64]*events.JobSubmitted
	views     map[uint64]events.JobView
	keys      map[string]uint64
	lastKey   string
	submitErr error // returned by Submit when set
	statusErr error // returned by Status when set
	panicMsg  string
}

var _ Jobs = (*memJobs)(nil)

func newMemJobs() *memJobs {
	return &memJobs{
		submitted: map[uint64]*events.JobSubmitted{},
		views:     map[uint64]events.JobView{},
		keys:      map[string]uint64{},
	}
}

func (m *memJobs) Submit(_ context.Context, job *events.JobSubmitted, key string) (uint64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.panicMsg != "" {
		panic(m.panicMsg)
	}
	m.lastKey = key
	if m.submitErr != nil {
		return 0, false, m.submitErr
	}
	if id, ok := m.keys[key]; ok && key != "" {
		if m.submitted[id].Digest() != job.Digest() {
			return 0, false, events.ErrIdempotencyConflict
		}
		return id, true, nil
	}
	m.next++
	m.submitted[m.next] = job
	m.views[m.next] = events.JobView{ID: m.next, Status: events.StatusOngoing, Images: job.Images()}
	if key != "" {
		m.keys[key] = m.next
	}
	return m.next, false, nil
}

func (m *memJobs) Status(_ context.Context, id uint64) (events.JobView, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.statusErr != nil {
		return events.JobView{}, m.statusErr
	}
	v, ok := m.views[id]
	if !ok {
		return events.JobView{}, events.ErrJobNotFound
	}
	return v, nil
}

func (m *memJobs) setView(v events.JobView) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.views[v.ID] = v
}

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("X", 3600))

// mustHandler returns NewHandler(cfg) with Jobs and Now filled in if unset.
func mustHandler(tb testing.TB, cfg Config) http.Handler {
	tb.Helper()
	if cfg.Jobs == nil {
		cfg.Jobs = newMemJobs()
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return testNow }
	}
	h, err := NewHandler(cfg)
	if err != nil {
		tb.Fatalf("NewHandler: %v", err)
	}
	return h
}

// serve sends one request to h and returns the recorded response.
func serve(h http.Handler, method, target, body string, header ...string) *httptest.ResponseRecorder {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// checkJSON fails unless rec has code, Content-Type application/json and
// exactly the body want.
func checkJSON(tb testing.TB, rec *httptest.ResponseRecorder, code int, want string) {
	tb.Helper()
	if rec.Code != code {
		tb.Errorf("status = %d, want %d (body %s)", rec.Code, code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type = %q, want application/json", ct)
	}
	if got := rec.Body.String(); got != want {
		tb.Errorf("body = %s, want %s", got, want)
	}
}

func errorBody(msg string) string {
	return fmt.Sprintf(`{"error":%q}`, msg)
}

func TestHandler_Submit(t *testing.T) {
	for _, path := range []string{"/api/submit/", "/api/submit"} {
		t.Run(path, func(t *testing.T) {
			jobs := newMemJobs()
			h := mustHandler(t, Config{Jobs: jobs})

			rec := serve(h, http.MethodPost, path, specPayload, "Content-Type", "application/json")
			checkJSON(t, rec, http.StatusCreated, `{"job_id":1}`)
			if loc := rec.Header().Get("Location"); loc != "/api/status?jobid=1" {
				t.Errorf("Location = %q", loc)
			}
			want := *specJob
			want.SubmittedAt = testNow.UTC()
			if got := jobs.submitted[1]; !reflect.DeepEqual(got, &want) {
				t.Errorf("submitted %+v, want %+v", got, &want)
			}
			if jobs.lastKey != "" {
				t.Errorf("idempotency key = %q, want none", jobs.lastKey)
			}

			// A second job gets a new id; the Content-Type of the request
			// does not matter.
			rec = serve(h, http.MethodPost, path, body(1, visit("S1", "u")), "Content-Type", "text/plain")
			checkJSON(t, rec, http.StatusCreated, `{"job_id":2}`)
		})
	}
}

func TestHandler_SubmitBadRequest(t *testing.T) {
	h := mustHandler(t, Config{CheckURL: checkScheme, MaxVisits: 2, MaxImages: 3, MaxURLLength: 30, MaxStoreIDLength: 8, MaxVisitTimeLength: 5})
	ok := visit("S1", "http://a/1.jpg")
	tests := []struct {
		name, body, want string
	}{
		{"empty", "", "request body is empty"},
		{"not an object", `[]`, "request body must be a JSON object"},
		{"trailing object", body(1, ok) + body(1, ok), "request body has data after the JSON object"},
		{"trailing garbage", body(1, ok) + "x", "request body has data after the JSON object"},
		{"count missing", `{"visits":[` + ok + `]}`, "count is required"},
		{"count float", `{"count":2.5,"visits":[]}`, "count must be an integer"},
		{"count mismatch", body(3, ok, ok), "count (3) does not match number of visits (2)"},
		{"nothing to process", `{"count":0,"visits":[]}`, "count is 0 and there are no visits: nothing to process"},
		{"negative count", `{"count":-2,"visits":[]}`, "count (-2) must not be negative"},
		{"visits missing", `{"count":1}`, "visits is required"},
		{"store_id missing", body(2, ok, `{"image_url":["http://a"],"visit_time":"t"}`), "visits[1].store_id is required"},
		{"image_url element", body(1, `{"store_id":"S","image_url":["http://a","http://b",1],"visit_time":"t"}`), "visits[0].image_url[2] must be a string"},
		{"checkURL", body(1, visit("S1", "http://a", "file:///etc/passwd")), "visits[0].image_url[1]: scheme must be http or https"},
		{"visit limit", body(3, ok, ok, ok), "job has 3 visits; the limit is 2"},
		{"image limit", body(1, visit("S1", "http://a", "http://b", "http://c", "http://d")), "job has 4 images; the limit is 3"},
		{"url limit", body(1, visit("S1", "http://a/"+strings.Repeat("x", 30))), "visits[0].image_url[0] is 39 bytes long; the limit is 30"},
		{"store_id whitespace", body(1, visit("S1 ", "http://a")), "visits[0].store_id has leading or trailing whitespace"},
		{"store_id limit", body(2, ok, visit("S12345678", "http://a")), "visits[1].store_id is 9 characters long; the limit is 8"},
		{"visit_time limit", body(1, `{"store_id":"S1","image_url":["http://a"],"visit_time":"123456"}`), "visits[0].visit_time is 6 characters long; the limit is 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := serve(h, http.MethodPost, "/api/submit/", tt.body)
			checkJSON(t, rec, http.StatusBadRequest, errorBody(tt.want))
		})
	}
}

func TestHandler_SubmitIdempotencyKey(t *testing.T) {
	jobs := newMemJobs()
	h := mustHandler(t, Config{Jobs: jobs})
	b := body(1, visit("S1", "u"))

	for i, replayed := range []string{"", "true"} {
		rec := serve(h, http.MethodPost, "/api/submit/", b, "Idempotency-Key", "order-42")
		checkJSON(t, rec, http.StatusCreated, `{"job_id":1}`)
		if jobs.lastKey != "order-42" {
			t.Errorf("key = %q, want order-42", jobs.lastKey)
		}
		if got := rec.Header().Get("Idempotent-Replayed"); got != replayed {
			t.Errorf("submit %d: Idempotent-Replayed = %q, want %q", i, got, replayed)
		}
	}
	// The same key with another job is refused and stores nothing.
	rec := serve(h, http.MethodPost, "/api/submit/", body(1, visit("S1", "other")), "Idempotency-Key", "order-42")
	checkJSON(t, rec, http.StatusUnprocessableEntity, errorBody("Idempotency-Key was already used for a different job; send a new key for a new job"))
	rec = serve(h, http.MethodPost, "/api/submit/", b, "Idempotency-Key", "order-43")
	checkJSON(t, rec, http.StatusCreated, `{"job_id":2}`)

	longest := strings.Repeat("k", MaxIdempotencyKeyLength)
	rec = serve(h, http.MethodPost, "/api/submit/", b, "Idempotency-Key", longest)
	checkJSON(t, rec, http.StatusCreated, `{"job_id":3}`)
	if jobs.lastKey != longest {
		t.Errorf("key = %q, want the 128-character key", jobs.lastKey)
	}

	bad := errorBody("Idempotency-Key must be at most 128 printable ASCII characters")
	for name, key := range map[string]string{
		"too long":  longest + "k",
		"non-ascii": "clé",
		"control":   "a\x01b",
	} {
		t.Run(name, func(t *testing.T) {
			rec := serve(h, http.MethodPost, "/api/submit/", b, "Idempotency-Key", key)
			checkJSON(t, rec, http.StatusBadRequest, bad)
		})
	}
}

// With API tokens, idempotency keys are scoped per token: two clients
// using the same key get two jobs.
func TestHandler_IdempotencyKeyScopedPerToken(t *testing.T) {
	jobs := newMemJobs()
	h := mustHandler(t, Config{Jobs: jobs, APITokens: []string{"alice-token", "bob-token"}})
	b := body(1, visit("S1", "u"))
	for _, tt := range []struct{ token, want string }{
		{"alice-token", `{"job_id":1}`},
		{"bob-token", `{"job_id":2}`},
		{"alice-token", `{"job_id":1}`},
	} {
		rec := serve(h, http.MethodPost, "/api/submit/", b, "Idempotency-Key", "k", "Authorization", "Bearer "+tt.token)
		checkJSON(t, rec, http.StatusCreated, tt.want)
	}
}

func TestHandler_SubmitTooLarge(t *testing.T) {
	t.Run("default limit", func(t *testing.T) {
		h := mustHandler(t, Config{})
		big := body(1, visit("S1", strings.Repeat("x", DefaultMaxBodyBytes)))
		rec := serve(h, http.MethodPost, "/api/submit/", big)
		checkJSON(t, rec, http.StatusRequestEntityTooLarge, `{"error":"request body exceeds 10485760 bytes"}`)
	})

	fits := body(1, visit("S1", "u"))
	limit := len(fits) + 3
	h := mustHandler(t, Config{MaxBodyBytes: int64(limit)})
	tests := []struct {
		name          string
		body          string
		contentLength bool
		code          int
	}{
		{"at the limit", fits + "   ", true, http.StatusCreated},
		{"over, known length", fits + "    ", true, http.StatusRequestEntityTooLarge},
		{"over, unknown length", fits + "    ", false, http.StatusRequestEntityTooLarge},
		{"over in the object", body(1, visit("S1", strings.Repeat("u", 10))), false, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r io.Reader = strings.NewReader(tt.body)
			if !tt.contentLength {
				r = io.MultiReader(r) // hides the length: ContentLength -1
			}
			req := httptest.NewRequest(http.MethodPost, "/api/submit/", r)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if tt.code == http.StatusCreated {
				checkJSON(t, rec, tt.code, `{"job_id":1}`)
				return
			}
			checkJSON(t, rec, tt.code, errorBody(fmt.Sprintf("request body exceeds %d bytes", limit)))
			if c := rec.Header().Get("Connection"); c != "close" {
				t.Errorf("Connection = %q, want close", c)
			}
		})
	}
}

func TestHandler_SubmitErrors(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		retryAfter time.Duration
		code       int
		body       string
		header     string // Retry-After
	}{
		{"overloaded", events.ErrOverloaded, 0, 503, errorBody("service is at capacity, retry later"), "1"},
		{"overloaded wrapped", fmt.Errorf("submit: %w", events.ErrOverloaded), 0, 503, errorBody("service is at capacity, retry later"), "1"},
		{"storage full", fmt.Errorf("append: %w", events.ErrStorageFull), 0, 503, errorBody("event log is full, retry later"), "1"},
		{"retry after rounds up", events.ErrOverloaded, 1500 * time.Millisecond, 503, errorBody("service is at capacity, retry later"), "2"},
		{"retry after at least 1", events.ErrStorageFull, time.Millisecond, 503, errorBody("event log is full, retry later"), "1"},
		{"retry after whole", events.ErrStorageFull, 30 * time.Second, 503, errorBody("event log is full, retry later"), "30"},
		{"log unavailable", fmt.Errorf("submit: %w: %w", events.ErrUnavailable, context.DeadlineExceeded), 0, 503, errorBody("event log unavailable, retry later"), "1"},
		{"deadline", fmt.Errorf("publish: %w", context.DeadlineExceeded), 0, 503, errorBody("submission did not complete in time, retry later"), "1"},
		{"canceled", context.Canceled, 0, 503, errorBody("submission did not complete in time, retry later"), "1"},
		{"other", errors.New("nats: connection closed"), 0, 500, `{"error":"internal error"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobs := newMemJobs()
			jobs.submitErr = tt.err
			var logs bytes.Buffer
			h := mustHandler(t, Config{Jobs: jobs, RetryAfter: tt.retryAfter, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			rec := serve(h, http.MethodPost, "/api/submit/", specPayload)
			checkJSON(t, rec, tt.code, tt.body)
			if got := rec.Header().Get("Retry-After"); got != tt.header {
				t.Errorf("Retry-After = %q, want %q", got, tt.header)
			}
			if !strings.Contains(logs.String(), tt.err.Error()) {
				t.Errorf("log does not name the error %q: %s", tt.err, logs.String())
			}
		})
	}
}

func TestHandler_Status(t *testing.T) {
	jobs := newMemJobs()
	jobs.setView(events.JobView{ID: 7, Status: events.StatusOngoing, Images: 3, Processed: 1})
	jobs.setView(events.JobView{ID: 8, Status: events.StatusCompleted, Images: 3, Processed: 3})
	jobs.setView(events.JobView{ID: 9, Status: events.StatusFailed, Errors: []events.StoreError{
		{StoreID: "S00339218", Error: "unknown store"},
		{StoreID: "S01408764", Error: "image https://x/1.jpg: http 404"},
	}})
	jobs.setView(events.JobView{ID: 10, Status: events.StatusFailed})
	jobs.setView(events.JobView{ID: 18446744073709551615, Status: events.StatusCompleted})
	h := mustHandler(t, Config{Jobs: jobs})

	tests := []struct {
		target string
		code   int
		body   string
	}{
		{"/api/status?jobid=7", 200, `{"status":"ongoing","job_id":"7"}`},
		{"/api/status/?jobid=7", 200, `{"status":"ongoing","job_id":"7"}`},
		{"/api/status?jobid=8", 200, `{"status":"completed","job_id":"8"}`},
		{"/api/status?jobid=9", 200, `{"status":"failed","job_id":"9","error":[{"store_id":"S00339218","error":"unknown store"},{"store_id":"S01408764","error":"image https://x/1.jpg: http 404"}]}`},
		{"/api/status?jobid=10", 200, `{"status":"failed","job_id":"10","error":[]}`},
		{"/api/status?other=1&jobid=8", 200, `{"status":"completed","job_id":"8"}`},
		{"/api/status?jobid=18446744073709551615", 200, `{"status":"completed","job_id":"18446744073709551615"}`},

		{"/api/status", 400, `{}`},
		{"/api/status/", 400, `{}`},
		{"/api/status?jobid=", 400, `{}`},
		{"/api/status?jobid=abc", 400, `{}`},
		{"/api/status?jobid=*", 400, `{}`},
		{"/api/status?jobid=%3E", 400, `{}`},
		{"/api/status?jobid=7.*", 400, `{}`},
		{"/api/status?jobid=0", 400, `{}`},
		{"/api/status?jobid=-1", 400, `{}`},
		{"/api/status?jobid=+7", 400, `{}`},
		{"/api/status?jobid=7.0", 400, `{}`},
		{"/api/status?jobid=%207", 400, `{}`},
		{"/api/status?jobid=0x7", 400, `{}`},
		{"/api/status?jobid=18446744073709551616", 400, `{}`},
		{"/api/status?jobid=999", 400, `{}`},
		{"/api/status?jobid=7&jobid=8", 400, `{}`},
		{"/api/status?JobID=7", 400, `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			rec := serve(h, http.MethodGet, tt.target, "")
			checkJSON(t, rec, tt.code, tt.body)
			if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", cc)
			}
		})
	}

	t.Run("HEAD", func(t *testing.T) {
		rec := serve(h, http.MethodHead, "/api/status?jobid=7", "")
		if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("HEAD: %d %q", rec.Code, rec.Header().Get("Content-Type"))
		}
	})
}

func TestHandler_StatusErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code int
		body string
	}{
		{"not found wrapped", fmt.Errorf("load job 5: %w", events.ErrJobNotFound), 400, `{}`},
		{"deadline", context.DeadlineExceeded, 503, errorBody("status lookup did not complete in time, retry later")},
		{"log unavailable", fmt.Errorf("load job 5: %w: no leader", events.ErrUnavailable), 503, errorBody("event log unavailable, retry later")},
		{"read model behind", fmt.Errorf("%w: applied 3 of 9", events.ErrStale), 503, errorBody("read model is catching up with the event log, retry later")},
		{"other", errors.New("projection stopped"), 500, `{"error":"internal error"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobs := newMemJobs()
			jobs.statusErr = tt.err
			rec := serve(mustHandler(t, Config{Jobs: jobs}), http.MethodGet, "/api/status?jobid=5", "")
			checkJSON(t, rec, tt.code, tt.body)
			if tt.code == 503 && rec.Header().Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		})
	}
}

func TestHandler_MethodNotAllowed(t *testing.T) {
	h := mustHandler(t, Config{MetricsHandler: http.NotFoundHandler()})
	tests := []struct {
		method, target, allow string
	}{
		{http.MethodGet, "/api/submit/", "POST"},
		{http.MethodGet, "/api/submit", "POST"},
		{http.MethodPut, "/api/submit/", "POST"},
		{http.MethodDelete, "/api/submit", "POST"},
		{http.MethodPost, "/api/status?jobid=1", "GET, HEAD"},
		{http.MethodPut, "/api/status/?jobid=1", "GET, HEAD"},
		{http.MethodPost, "/healthz", "GET, HEAD"},
		{http.MethodDelete, "/readyz", "GET, HEAD"},
		{http.MethodPost, "/metrics", "GET, HEAD"},
		{http.MethodOptions, "/api/submit/", "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			rec := serve(h, tt.method, tt.target, "")
			checkJSON(t, rec, http.StatusMethodNotAllowed, errorBody("method "+tt.method+" not allowed; use "+tt.allow))
			if got := rec.Header().Get("Allow"); got != tt.allow {
				t.Errorf("Allow = %q, want %q", got, tt.allow)
			}
		})
	}
}

func TestHandler_NotFound(t *testing.T) {
	h := mustHandler(t, Config{})
	for _, target := range []string{"/", "/api", "/api/", "/api/jobs", "/api/submit/x", "/api/status/7", "/submit", "/metrics", "/healthz/"} {
		t.Run(target, func(t *testing.T) {
			checkJSON(t, serve(h, http.MethodGet, target, ""), http.StatusNotFound, `{"error":"not found"}`)
		})
	}
}

func TestHandler_Health(t *testing.T) {
	ready := true
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		io.WriteString(w, "retailpulse_up 1\n")
	})
	h := mustHandler(t, Config{Ready: func() bool { return ready }, MetricsHandler: metrics})

	checkJSON(t, serve(h, http.MethodGet, "/healthz", ""), 200, `{"status":"ok"}`)
	checkJSON(t, serve(h, http.MethodGet, "/readyz", ""), 200, `{"status":"ready"}`)
	ready = false
	checkJSON(t, serve(h, http.MethodGet, "/readyz", ""), 503, `{"status":"not ready"}`)
	checkJSON(t, serve(h, http.MethodGet, "/healthz", ""), 200, `{"status":"ok"}`)

	rec := serve(h, http.MethodGet, "/metrics", "")
	if rec.Code != 200 || rec.Body.String() != "retailpulse_up 1\n" {
		t.Errorf("/metrics: %d %q", rec.Code, rec.Body)
	}
}

func TestHandler_Auth(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "m 1\n") })
	h := mustHandler(t, Config{APITokens: []string{"s3cret", "rotated-token"}, MetricsHandler: metrics})
	missing := errorBody("missing bearer token")
	invalid := errorBody("invalid bearer token")

	tests := []struct {
		name, method, target, auth string
		code                       int
		body                       string
	}{
		{"submit without token", "POST", "/api/submit/", "", 401, missing},
		{"submit wrong token", "POST", "/api/submit/", "Bearer s3cre", 401, invalid},
		{"submit longer token", "POST", "/api/submit/", "Bearer s3crets", 401, invalid},
		{"submit basic auth", "POST", "/api/submit/", "Basic czNjcmV0", 401, missing},
		{"submit bare token", "POST", "/api/submit/", "s3cret", 401, missing},
		{"submit empty bearer", "POST", "/api/submit/", "Bearer ", 401, missing},
		{"submit first token", "POST", "/api/submit/", "Bearer s3cret", 201, `{"job_id":1}`},
		{"submit second token", "POST", "/api/submit", "Bearer rotated-token", 201, `{"job_id":2}`},
		{"scheme is case-insensitive", "POST", "/api/submit", "bearer s3cret", 201, `{"job_id":3}`},
		{"status without token", "GET", "/api/status?jobid=1", "", 401, missing},
		{"status wrong token", "GET", "/api/status?jobid=1", "Bearer nope", 401, invalid},
		{"status with token", "GET", "/api/status?jobid=1", "Bearer s3cret", 200, `{"status":"ongoing","job_id":"1"}`},
		{"wrong method without token", "GET", "/api/submit", "", 401, missing},
		{"unknown api path without token", "GET", "/api/jobs", "", 401, missing},
		{"unknown api path with token", "GET", "/api/jobs", "Bearer s3cret", 404, `{"error":"not found"}`},
		{"unknown path outside api", "GET", "/nope", "", 404, `{"error":"not found"}`},
		{"healthz is open", "GET", "/healthz", "", 200, `{"status":"ok"}`},
		{"readyz is open", "GET", "/readyz", "", 200, `{"status":"ready"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr []string
			if tt.auth != "" {
				hdr = []string{"Authorization", tt.auth}
			}
			rec := serve(h, tt.method, tt.target, body(1, visit("S1", "u")), hdr...)
			checkJSON(t, rec, tt.code, tt.body)
			www := rec.Header().Get("WWW-Authenticate")
			if tt.code == 401 && !strings.HasPrefix(www, "Bearer") {
				t.Errorf("WWW-Authenticate = %q, want Bearer challenge", www)
			}
			if tt.code != 401 && www != "" {
				t.Errorf("WWW-Authenticate = %q on %d", www, tt.code)
			}
		})
	}

	t.Run("metrics is open", func(t *testing.T) {
		rec := serve(h, "GET", "/metrics", "")
		if rec.Code != 200 || rec.Body.String() != "m 1\n" {
			t.Errorf("/metrics: %d %q", rec.Code, rec.Body)
		}
	})

	t.Run("off", func(t *testing.T) {
		h := mustHandler(t, Config{})
		checkJSON(t, serve(h, "POST", "/api/submit/", specPayload), 201, `{"job_id":1}`)
		checkJSON(t, serve(h, "GET", "/api/status?jobid=1", "", "Authorization", "Bearer anything"), 200, `{"status":"ongoing","job_id":"1"}`)
	})
}

func TestHandler_Instrument(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	instrument := func(route string, next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen[route]++
			mu.Unlock()
			next.ServeHTTP(w, r)
		})
	}
	h := mustHandler(t, Config{Instrument: instrument, MetricsHandler: http.NotFoundHandler()})
	for _, target := range []string{"/api/status?jobid=1", "/api/status/?jobid=1", "/healthz", "/readyz", "/metrics", "/unknown"} {
		serve(h, http.MethodGet, target, "")
	}
	serve(h, http.MethodPost, "/api/submit", specPayload)
	serve(h, http.MethodPost, "/api/submit/", specPayload)

	want := map[string]int{"/api/submit": 2, "/api/status": 2, "/healthz": 1, "/readyz": 1, "/metrics": 1}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("instrumented routes %v, want %v", seen, want)
	}
}

func TestHandler_RecoversPanic(t *testing.T) {
	jobs := newMemJobs()
	jobs.panicMsg = "boom"
	var logs bytes.Buffer
	h := mustHandler(t, Config{Jobs: jobs, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	rec := serve(h, http.MethodPost, "/api/submit/", specPayload)
	checkJSON(t, rec, http.StatusInternalServerError, `{"error":"internal error"}`)
	if !strings.Contains(logs.String(), "boom") {
		t.Errorf("panic not logged: %s", logs.String())
	}

	t.Run("instrument panics", func(t *testing.T) {
		h := mustHandler(t, Config{Instrument: func(string, http.Handler) http.Handler {
			return http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("instrument") })
		}})
		checkJSON(t, serve(h, http.MethodGet, "/healthz", ""), http.StatusInternalServerError, `{"error":"internal error"}`)
	})

	t.Run("abort handler is passed on", func(t *testing.T) {
		h := mustHandler(t, Config{Instrument: func(string, http.Handler) http.Handler {
			return http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
		}})
		defer func() {
			if v := recover(); v != http.ErrAbortHandler {
				t.Errorf("recovered %v, want http.ErrAbortHandler", v)
			}
		}()
		serve(h, http.MethodGet, "/healthz", "")
	})
}

func TestNewHandler_Validates(t *testing.T) {
	jobs := newMemJobs()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no jobs", Config{}},
		{"negative body", Config{Jobs: jobs, MaxBodyBytes: -1}},
		{"negative visits", Config{Jobs: jobs, MaxVisits: -1}},
		{"negative images", Config{Jobs: jobs, MaxImages: -1}},
		{"negative url", Config{Jobs: jobs, MaxURLLength: -1}},
		{"negative store_id length", Config{Jobs: jobs, MaxStoreIDLength: -1}},
		{"negative visit_time length", Config{Jobs: jobs, MaxVisitTimeLength: -1}},
		{"negative retry", Config{Jobs: jobs, RetryAfter: -time.Second}},
		{"empty token", Config{Jobs: jobs, APITokens: []string{"a", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if h, err := NewHandler(tt.cfg); err == nil {
				t.Fatalf("NewHandler accepted %+v: %v", tt.cfg, h)
			}
		})
	}
}

func TestNewServer(t *testing.T) {
	h := http.NotFoundHandler()
	s := NewServer(":8080", h)
	if s.Addr != ":8080" || s.Handler == nil ||
		s.ReadHeaderTimeout != 5*time.Second || s.ReadTimeout != 30*time.Second ||
		s.WriteTimeout != 30*time.Second || s.IdleTimeout != 120*time.Second ||
		s.MaxHeaderBytes != 64<<10 {
		t.Fatalf("NewServer = %+v", s)
	}
}

// TestHandler_OverHTTP runs the handler behind a real server: no redirect
// between the two submit spellings, and a body over the cap is refused.
func TestHandler_OverHTTP(t *testing.T) {
	srv := httptest.NewServer(mustHandler(t, Config{MaxBodyBytes: 1 << 10}))
	defer srv.Close()
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	for i, path := range []string{"/api/submit/", "/api/submit"} {
		resp, err := client.Post(srv.URL+path, "application/json", strings.NewReader(specPayload))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf(`{"job_id":%d}`, i+1); resp.StatusCode != 201 || string(b) != want {
			t.Errorf("POST %s: %d %s, want 201 %s", path, resp.StatusCode, b, want)
		}
	}

	resp, err := client.Post(srv.URL+"/api/submit/", "application/json",
		strings.NewReader(body(1, visit("S1", strings.Repeat("u", 4<<10)))))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || string(b) != `{"error":"request body exceeds 1024 bytes"}` {
		t.Errorf("large body: %d %s", resp.StatusCode, b)
	}

	resp, err = client.Get(srv.URL + "/api/status?jobid=2")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != `{"status":"ongoing","job_id":"2"}` {
		t.Errorf("status: %d %s", resp.StatusCode, b)
	}
}

func TestHandler_SubmitRejections(t *testing.T) {
	jobs := newMemJobs()
	var rejected []string
	h := mustHandler(t, Config{Jobs: jobs, APITokens: []string{"tok"}, MaxBodyBytes: 64 << 10,
		OnReject: func(reason string) { rejected = append(rejected, reason) }})
	auth := func(req *http.Request) { req.Header.Set("Authorization", "Bearer tok") }

	// A job the log cannot hold in one message is 413, not 500.
	jobs.submitErr = fmt.Errorf("submit: %w: 9000000 bytes", events.ErrJobTooLarge)
	req := httptest.NewRequest(http.MethodPost, "/api/submit/", strings.NewReader(specPayload))
	auth(req)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "job too large") {
		t.Fatalf("too large job: %d %s", rec.Code, rec.Body)
	}
	jobs.submitErr = nil

	for _, body := range []string{`{}`, strings.Repeat("x", 65<<10)} {
		req := httptest.NewRequest(http.MethodPost, "/api/submit/", strings.NewReader(body))
		auth(req)
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/api/submit/", strings.NewReader(specPayload)))
	if fmt.Sprint(rejected) != "[invalid too_large unauthorized]" {
		t.Fatalf("rejections reported: %v", rejected)
	}
}

// blockingJobs holds every Submit and Results call until release closes.
type blockingJobs struct {
	*memJobs
	entered chan struct{}
	release chan struct{}
}

func (b *blockingJobs) Submit(ctx context.Context, job *events.JobSubmitted, key string) (uint64, bool, error) {
	b.entered <- struct{}{}
	<-b.release
	return b.memJobs.Submit(ctx, job, key)
}

func (b *blockingJobs) Results(context.Context, uint64, int, string) (events.ResultPage, error) {
	b.entered <- struct{}{}
	<-b.release
	return events.ResultPage{Status: events.StatusCompleted}, nil
}

var _ Results = (*blockingJobs)(nil)

// Past MaxPendingSubmits a submit is refused before its body is read (an
// invalid body gets 503, not 400); past MaxPendingResults likewise.
func TestHandler_PendingLimitsTakenFirst(t *testing.T) {
	jobs := &blockingJobs{memJobs: newMemJobs(), entered: make(chan struct{}, 4), release: make(chan struct{})}
	jobs.setView(events.JobView{ID: 1, Status: events.StatusCompleted})
	var rejected []string
	var mu sync.Mutex
	h := mustHandler(t, Config{Jobs: jobs, MaxPendingSubmits: 1, MaxPendingResults: 1,
		OnReject: func(r string) { mu.Lock(); rejected = append(rejected, r); mu.Unlock() }})
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(h, http.MethodPost, "/api/submit/", specPayload)
		serve(h, http.MethodGet, "/api/results?jobid=1", "")
	}()
	<-jobs.entered // the first submit holds the only slot
	rec := serve(h, http.MethodPost, "/api/submit/", "{not json")
	checkJSON(t, rec, http.StatusServiceUnavailable, errorBody("service is at capacity, retry later"))
	jobs.release <- struct{}{}
	<-jobs.entered // the first results request holds the only slot
	rec = serve(h, http.MethodGet, "/api/results?jobid=1", "")
	checkJSON(t, rec, http.StatusServiceUnavailable, errorBody("too many results requests in progress, retry later"))
	close(jobs.release)
	<-done
	rec = serve(h, http.MethodPost, "/api/submit/", "{not json")
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("after the slots freed: %d, want 400", rec.Code)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(rejected) != "[overloaded invalid]" {
		t.Fatalf("rejections %v", rejected)
	}
}

func TestOpsHandler_ServesHealthReadinessAndMetricsOnly(t *testing.T) {
	ready := false
	var instrumented []string
	h := NewOpsHandler(OpsConfig{
		Ready: func() bool { return ready },
		Instrument: func(route string, next http.Handler) http.Handler {
			instrumented = append(instrumented, route)
			return next
		},
		MetricsHandler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "m 1\n") }),
	})
	tests := []struct {
		method, path string
		ready        bool
		want         int
		body         string
	}{
		{http.MethodGet, "/healthz", false, 200, `{"status":"ok"}`},
		{http.MethodGet, "/readyz", false, 503, `{"status":"not ready"}`},
		{http.MethodGet, "/readyz", true, 200, `{"status":"ready"}`},
		{http.MethodGet, "/metrics", true, 200, "m 1\n"},
		{http.MethodPost, "/healthz", true, 405, `{"error":"method POST not allowed; use GET, HEAD"}`},
		{http.MethodGet, "/api/status?jobid=1", true, 404, `{"error":"not found"}`},
		{http.MethodPost, "/api/submit/", true, 404, `{"error":"not found"}`},
		{http.MethodGet, "/", true, 404, `{"error":"not found"}`},
	}
	for _, tt := range tests {
		ready = tt.ready
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		if rec.Code != tt.want || rec.Body.String() != tt.body {
			t.Errorf("%s %s (ready %v): %d %q, want %d %q", tt.method, tt.path, tt.ready, rec.Code, rec.Body.String(), tt.want, tt.body)
		}
	}
	if want := []string{"/healthz", "/readyz", "/metrics"}; !reflect.DeepEqual(instrumented, want) {
		t.Errorf("instrumented routes %v, want %v", instrumented, want)
	}
}
