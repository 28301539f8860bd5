package metrics_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/retailpulse/retailpulse/metrics"
)

// MustNew returns Metrics registered on a fresh private registry.
func MustNew(tb testing.TB) (*metrics.Metrics, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	return metrics.New(reg), reg
}

// value returns the value of the counter or gauge series name{labels} in
// reg, failing the test if it is absent.
func value(tb testing.TB, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, mt := range mf.GetMetric() {
			got := make(map[string]string)
			for _, lp := range mt.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if len(got) != len(labels) {
				continue
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			switch {
			case mt.Counter != nil:
				return mt.GetCounter().GetValue()
			case mt.Gauge != nil:
				return mt.GetGauge().GetValue()
			case mt.Histogram != nil:
				return float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	tb.Fatalf("series %s%v not found", name, labels)
	return 0
}

// assertValue fails unless the series name{labels} has value want.
func assertValue(tb testing.TB, reg prometheus.Gatherer, name string, labels map[string]string, want float64) {
	tb.Helper()
	if got := value(tb, reg, name, labels); got != want {
		tb.Fatalf("%s%v = %v, want %v", name, labels, got, want)
	}
}

func TestFailureReason(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"unknown store", "unknown store"},
		{"blocked address", "blocked address"},
		{"blocked", "blocked address"},
		{"timeout", "timeout"},
		{"connection failed", "connection failed"},
		{"not an image", "not an image"},
		{"too large", "too large"},
		{"invalid url", "invalid url"},
		{"http 404", "http 404"},
		{"http 429", "http 429"},
		{"http 400", "http 4xx"},
		{"http 403", "http 4xx"},
		{"http 410", "http 4xx"},
		{"http 4xx", "http 4xx"},
		{"http 500", "http 5xx"},
		{"http 503", "http 5xx"},
		{"http 5xx", "http 5xx"},
		{"HTTP 404", "http 404"},
		{"  Timeout ", "timeout"},
		{"http 3xx", "other"},
		{"too many redirects", "other"},
		{"canceled", "other"},
		{"dial tcp 10.0.0.1:22: connection refused", "other"},
		{"https://example.com/a.jpg", "other"},
		{"", "other"},
		{"other", "other"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := metrics.FailureReason(tt.in); got != tt.want {
				t.Fatalf("FailureReason(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestMetrics_Jobs(t *testing.T) {
	m, reg := MustNew(t)
	m.JobSubmitted()
	m.JobSubmitted()
	m.JobActive(1)
	m.JobActive(1)
	m.JobActive(-1)
	m.JobFinished("completed")
	m.JobFinished("failed")
	m.JobFinished("failed")
	m.JobFinished("bogus")

	assertValue(t, reg, "retailpulse_jobs_submitted_total", nil, 2)
	assertValue(t, reg, "retailpulse_jobs_active", nil, 1)
	assertValue(t, reg, "retailpulse_jobs_finished_total", map[string]string{"status": "completed"}, 1)
	assertValue(t, reg, "retailpulse_jobs_finished_total", map[string]string{"status": "failed"}, 2)
	assertValue(t, reg, "retailpulse_jobs_finished_total", map[string]string{"status": "other"}, 1)
}

func TestMetrics_Images(t *testing.T) {
	m, reg := MustNew(t)
	m.ImageInflight(3)
	m.ImageInflight(-1)
	m.ImageProcessed(250 * time.Millisecond)
	m.ImageProcessed(300 * time.Millisecond)
	m.ImageFailed("http 503", time.Second)
	m.ImageFailed("http 502", time.Second)
	m.ImageFailed("unknown store", 0)
	m.ImageFailed("dial tcp 127.0.0.1:6379: connection refused", time.Second)
	m.Download(20 * time.Millisecond)

	assertValue(t, reg, "retailpulse_images_inflight", nil, 2)
	assertValue(t, reg, "retailpulse_images_processed_total", nil, 2)
	assertValue(t, reg, "retailpulse_images_failed_total", map[string]string{"reason": "http 5xx"}, 2)
	assertValue(t, reg, "retailpulse_images_failed_total", map[string]string{"reason": "unknown store"}, 1)
	assertValue(t, reg, "retailpulse_images_failed_total", map[string]string{"reason": "other"}, 1)
	assertValue(t, reg, "retailpulse_images_failed_total", map[string]string{"reason": "timeout"}, 0)
	// Two processed and three downloaded failures; the unknown store was
	// never downloaded and is not timed.
	assertValue(t, reg, "retailpulse_image_processing_seconds", nil, 5)
	assertValue(t, reg, "retailpulse_image_download_seconds", nil, 1)

	// Every reason series exists from the start, and no other.
	if got, want := testutil.CollectAndCount(reg, "retailpulse_images_failed_total"), 12; got != want {
		t.Fatalf("images_failed_total series = %d, want %d", got, want)
	}
}

func TestMetrics_ImageFetched(t *testing.T) {
	m, reg := MustNew(t)
	m.ImageFetched("ranged", 65536)
	m.ImageFetched("ranged", 262144)
	m.ImageFetched("whole", 3<<20)
	m.ImageFetched("https://example.com/a.jpg", -1)

	assertValue(t, reg, "retailpulse_images_fetched_total", map[string]string{"mode": "ranged"}, 2)
	assertValue(t, reg, "retailpulse_images_fetched_total", map[string]string{"mode": "whole"}, 1)
	assertValue(t, reg, "retailpulse_images_fetched_total", map[string]string{"mode": "other"}, 1)
	if got, want := testutil.CollectAndCount(reg, "retailpulse_images_fetched_total"), 3; got != want {
		t.Fatalf("images_fetched_total series = %d, want %d", got, want)
	}

	const want = `
# HELP retailpulse_image_bytes_read Body bytes read for one image, over all its requests and attempts, drained bytes included.
# TYPE retailpulse_image_bytes_read histogram
retailpulse_image_bytes_read_bucket{le="1024"} 1
retailpulse_image_bytes_read_bucket{le="4096"} 1
retailpulse_image_bytes_read_bucket{le="16384"} 1
retailpulse_image_bytes_read_bucket{le="32768"} 1
retailpulse_image_bytes_read_bucket{le="65536"} 2
retailpulse_image_bytes_read_bucket{le="131072"} 2
retailpulse_image_bytes_read_bucket{le="262144"} 3
retailpulse_image_bytes_read_bucket{le="524288"} 3
retailpulse_image_bytes_read_bucket{le="1.048576e+06"} 3
retailpulse_image_bytes_read_bucket{le="2.097152e+06"} 3
retailpulse_image_bytes_read_bucket{le="4.194304e+06"} 4
retailpulse_image_bytes_read_bucket{le="8.388608e+06"} 4
retailpulse_image_bytes_read_bucket{le="1.6777216e+07"} 4
retailpulse_image_bytes_read_bucket{le="3.3554432e+07"} 4
retailpulse_image_bytes_read_bucket{le="+Inf"} 4
retailpulse_image_bytes_read_sum 3.473408e+06
retailpulse_image_bytes_read_count 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "retailpulse_image_bytes_read"); err != nil {
		t.Fatal(err)
	}
}

func TestMetrics_Append(t *testing.T) {
	m, reg := MustNew(t)
	m.Append("images", 20, 300*time.Microsecond)
	m.Append("images", 1, time.Millisecond)
	m.Append("completed", 1, time.Millisecond)
	m.Append("rp.job.1.images", 1, time.Millisecond)
	m.Append("started", 0, time.Millisecond)

	assertValue(t, reg, "retailpulse_event_append_seconds", map[string]string{"kind": "images"}, 2)
	assertValue(t, reg, "retailpulse_event_append_seconds", map[string]string{"kind": "completed"}, 1)
	assertValue(t, reg, "retailpulse_event_append_seconds", map[string]string{"kind": "started"}, 1)
	assertValue(t, reg, "retailpulse_event_append_seconds", map[string]string{"kind": "submitted"}, 0)
	assertValue(t, reg, "retailpulse_event_append_seconds", map[string]string{"kind": "other"}, 1)
	// The append with no events is timed but not counted as a batch.
	assertValue(t, reg, "retailpulse_event_batch_events", nil, 4)

	const want = `
# HELP retailpulse_event_batch_events Events carried by one appended message.
# TYPE retailpulse_event_batch_events histogram
retailpulse_event_batch_events_bucket{le="1"} 3
retailpulse_event_batch_events_bucket{le="2"} 3
retailpulse_event_batch_events_bucket{le="5"} 3
retailpulse_event_batch_events_bucket{le="10"} 3
retailpulse_event_batch_events_bucket{le="20"} 4
retailpulse_event_batch_events_bucket{le="50"} 4
retailpulse_event_batch_events_bucket{le="100"} 4
retailpulse_event_batch_events_bucket{le="200"} 4
retailpulse_event_batch_events_bucket{le="500"} 4
retailpulse_event_batch_events_bucket{le="1000"} 4
retailpulse_event_batch_events_bucket{le="+Inf"} 4
retailpulse_event_batch_events_sum 23
retailpulse_event_batch_events_count 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "retailpulse_event_batch_events"); err != nil {
		t.Fatal(err)
	}
}

func TestMetrics_Projection(t *testing.T) {
	m, reg := MustNew(t)
	m.ProjectionApplied(10, 4, 0, time.Second)
	m.ProjectionApplied(12, 2, 1, 250*time.Millisecond)
	m.ProjectionApplied(13, -1, -1, -time.Second) // ignored counts and lag

	assertValue(t, reg, "retailpulse_projection_last_sequence", nil, 13)
	assertValue(t, reg, "retailpulse_projection_lag_seconds", nil, 0.25)
	assertValue(t, reg, "retailpulse_projection_events_applied_total", nil, 6)
	assertValue(t, reg, "retailpulse_projection_duplicates_total", nil, 1)
}

func TestMetrics_SubmitRejected(t *testing.T) {
	m, reg := MustNew(t)
	for _, r := range []string{"invalid", "invalid", "too_large", "overloaded", "storage_full", "unauthorized", "unavailable", "other", "disk on fire"} {
		m.SubmitRejected(r)
	}
	for reason, want := range map[string]float64{
		"invalid": 2, "too_large": 1, "overloaded": 1, "storage_full": 1, "unauthorized": 1, "unavailable": 1, "other": 2,
	} {
		assertValue(t, reg, "retailpulse_submit_rejected_total", map[string]string{"reason": reason}, want)
	}
	if got, want := testutil.CollectAndCount(reg, "retailpulse_submit_rejected_total"), 7; got != want {
		t.Fatalf("submit_rejected_total series = %d, want %d", got, want)
	}
}

func TestMetrics_JobReplayed(t *testing.T) {
	m, reg := MustNew(t)
	m.JobSubmitted()
	m.JobReplayed()
	m.JobReplayed()
	assertValue(t, reg, "retailpulse_jobs_submitted_total", nil, 1)
	assertValue(t, reg, "retailpulse_jobs_submit_replays_total", nil, 2)
}

func TestMetrics_ObserveMailboxes(t *testing.T) {
	m, reg := MustNew(t)
	n := 3
	m.ObserveMailboxes(func() int { return n })
	assertValue(t, reg, "retailpulse_job_mailbox_messages", nil, 3)
	n = 5
	assertValue(t, reg, "retailpulse_job_mailbox_messages", nil, 5)
}

func TestMetrics_LogWritable(t *testing.T) {
	m, reg := MustNew(t)
	m.AdmissionRefreshFailed()
	assertValue(t, reg, "retailpulse_admission_refresh_errors_total", nil, 1)
	assertValue(t, reg, "retailpulse_event_log_writable", nil, 0)
	m.LogWritable(true)
	assertValue(t, reg, "retailpulse_event_log_writable", nil, 1)
	m.LogWritable(false)
	assertValue(t, reg, "retailpulse_event_log_writable", nil, 0)
}

func TestMetrics_Instrument(t *testing.T) {
	m, reg := MustNew(t)
	h := m.Instrument("/api/status", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("jobid") == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "{}") // implicit 200
	}))
	for _, target := range []string{"/api/status?jobid=1", "/api/status?jobid=2", "/api/status"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, target, nil))
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("BREW", "/api/status?jobid=3", nil))

	assertValue(t, reg, "retailpulse_http_requests_total", map[string]string{"route": "/api/status", "method": "get", "code": "200"}, 2)
	assertValue(t, reg, "retailpulse_http_requests_total", map[string]string{"route": "/api/status", "method": "get", "code": "400"}, 1)
	assertValue(t, reg, "retailpulse_http_requests_total", map[string]string{"route": "/api/status", "method": "unknown", "code": "200"}, 1)
	assertValue(t, reg, "retailpulse_http_request_duration_seconds", map[string]string{"route": "/api/status"}, 4)
	if got, want := testutil.CollectAndCount(reg, "retailpulse_http_request_duration_seconds"), 1; got != want {
		t.Fatalf("http_request_duration_seconds series = %d, want %d (route only)", got, want)
	}
}

func TestHandler_Scrape(t *testing.T) {
	m, reg := MustNew(t)
	m.JobSubmitted()
	m.ImageProcessed(time.Second)
	m.ImageFailed("http 404", time.Second)
	m.Append("submitted", 1, time.Millisecond)
	m.ProjectionApplied(1, 1, 0, 0)
	m.SubmitRejected("overloaded")
	m.Download(time.Millisecond)
	m.ImageFetched("ranged", 65536)
	m.Instrument("/metrics", metrics.Handler(reg)).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/metrics", nil))

	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200; body:\n%s", resp.StatusCode, body)
	}
	text := string(body)
	for _, want := range []string{
		"retailpulse_jobs_submitted_total 1",
		`retailpulse_jobs_finished_total{status="completed"} 0`,
		"retailpulse_jobs_active 0",
		"retailpulse_images_processed_total 1",
		`retailpulse_images_failed_total{reason="http 404"} 1`,
		"retailpulse_images_inflight 0",
		"retailpulse_image_processing_seconds_bucket",
		"retailpulse_image_download_seconds_bucket",
		`retailpulse_images_fetched_total{mode="ranged"} 1`,
		`retailpulse_images_fetched_total{mode="whole"} 0`,
		"retailpulse_image_bytes_read_bucket",
		`retailpulse_event_append_seconds_bucket{kind="submitted",le="0.0001"}`,
		"retailpulse_event_batch_events_bucket",
		"retailpulse_projection_last_sequence 1",
		"retailpulse_projection_events_applied_total 1",
		"retailpulse_projection_duplicates_total 0",
		"retailpulse_projection_lag_seconds",
		`retailpulse_submit_rejected_total{reason="overloaded"} 1`,
		`retailpulse_http_requests_total{code="200",method="get",route="/metrics"} 1`,
		`retailpulse_http_request_duration_seconds_bucket{route="/metrics"`,
		"go_goroutines",
		"process_",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil {
		t.Fatal(err)
	} else {
		for _, p := range problems {
			if strings.HasPrefix(p.Metric, "retailpulse_") {
				t.Errorf("lint %s: %s", p.Metric, p.Text)
			}
		}
	}
}

func TestNew_TwoRegistries(t *testing.T) {
	a, regA := MustNew(t)
	b, regB := MustNew(t)
	a.JobSubmitted()
	a.JobSubmitted()
	b.JobSubmitted()
	assertValue(t, regA, "retailpulse_jobs_submitted_total", nil, 2)
	assertValue(t, regB, "retailpulse_jobs_submitted_total", nil, 1)
}

func TestNew_SameRegistryPanics(t *testing.T) {
	_, reg := MustNew(t)
	defer func() {
		if recover() == nil {
			t.Fatal("second New on the same registry did not panic")
		}
	}()
	metrics.New(reg)
}

func TestMetrics_Nil(t *testing.T) {
	for _, m := range []*metrics.Metrics{nil, metrics.New(nil)} {
		if m != nil {
			t.Fatal("New(nil) returned a non-nil *Metrics")
		}
		m.JobSubmitted()
		m.JobFinished("completed")
		m.JobActive(1)
		m.ImageProcessed(time.Second)
		m.ImageFailed("timeout", time.Second)
		m.ImageInflight(1)
		m.Download(time.Second)
		m.ImageFetched("ranged", 1)
		m.Append("images", 10, time.Millisecond)
		m.ProjectionApplied(1, 1, 1, 0)
		m.SubmitRejected("invalid")

		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
		rec := httptest.NewRecorder()
		m.Instrument("/x", h).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil))
		if rec.Code != http.StatusTeapot {
			t.Fatalf("code = %d, want %d", rec.Code, http.StatusTeapot)
		}
	}
}

func TestMetrics_Concurrent(t *testing.T) {
	m, reg := MustNew(t)
	h := m.Instrument("/api/submit", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	const workers, each = 8, 200
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				m.JobSubmitted()
				m.ImageInflight(1)
				m.ImageFailed("http 418", time.Millisecond)
				m.ImageInflight(-1)
				m.Append("images", 5, time.Millisecond)
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/api/submit", nil))
			}
		})
	}
	wg.Wait()
	assertValue(t, reg, "retailpulse_jobs_submitted_total", nil, workers*each)
	assertValue(t, reg, "retailpulse_images_inflight", nil, 0)
	assertValue(t, reg, "retailpulse_images_failed_total", map[string]string{"reason": "http 4xx"}, workers*each)
	assertValue(t, reg, "retailpulse_http_requests_total", map[string]string{"route": "/api/submit", "method": "post", "code": "200"}, workers*each)
}
