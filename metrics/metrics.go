// Package metrics defines the service's Prometheus metrics.
//
// Metrics are registered on a Registerer the caller supplies, never on the
// global registry, so several instances can run in one process (tests do).
// Every label takes its value from a small fixed set: values outside the set
// are counted under "other", so no input can grow the number of series.
//
// All methods are safe for concurrent use, and all are no-ops on a nil
// *Metrics, so code under test can run without metrics.
package metrics

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "retailpulse"

// Job statuses, the values of the status label of jobs_finished_total.
const (
	StatusCompleted = "completed"
	StatusFailed    = "failed"
)

// Image failure reasons, the values of the reason label of
// images_failed_total. ImageFailed maps any reason onto this set.
const (
	ReasonUnknownStore     = "unknown store"
	ReasonBlockedAddress   = "blocked address"
	ReasonTimeout          = "timeout"
	ReasonConnectionFailed = "connection failed"
	ReasonHTTP4xx          = "http 4xx"
	ReasonHTTP404          = "http 404"
	ReasonHTTP5xx          = "http 5xx"
	ReasonHTTP429          = "http 429"
	ReasonNotAnImage       = "not an image"
	ReasonTooLarge         = "too large"
	ReasonInvalidURL       = "invalid url"
	ReasonOther            = "other"
)

// Event append kinds, the values of the kind label of event_append_seconds.
const (
	AppendSubmitted = "submitted"
	AppendStarted   = "started"
	AppendImages    = "images"
	AppendCompleted = "completed"
)

// Submit rejection reasons, the values of the reason label of
// submit_rejected_total.
const (
	RejectInvalid      = "invalid"
	RejectTooLarge     = "too_large"
	RejectOverloaded   = "overloaded"
	RejectStorageFull  = "storage_full"
	RejectUnauthorized = "unauthorized"
	RejectUnavailable  = "unavailable"
	RejectOther        = "other"
)

// Image fetch modes, the values of the mode label of images_fetched_total:
// byte ranges, or the whole body (a host that ignores Range, or ranged
// answers the fetcher refused).
const (
	FetchRanged = "ranged"
	FetchWhole  = "whole"
)

const labelOther = "other"

var (
	jobStatuses   = []string{StatusCompleted, StatusFailed}
	imageReasons  = []string{ReasonUnknownStore, ReasonBlockedAddress, ReasonTimeout, ReasonConnectionFailed, ReasonHTTP4xx, ReasonHTTP404, ReasonHTTP5xx, ReasonHTTP429, ReasonNotAnImage, ReasonTooLarge, ReasonInvalidURL, ReasonOther}
	appendKinds   = []string{AppendSubmitted, AppendStarted, AppendImages, AppendCompleted}
	rejectReasons = []string{RejectInvalid, RejectTooLarge, RejectOverloaded, RejectStorageFull, RejectUnauthorized, RejectUnavailable, RejectOther}
	fetchModes    = []string{FetchRanged, FetchWhole}
)

// Histogram buckets, in seconds unless named otherwise.
var (
	// Download, header decode and the simulated 0.1–0.4 s processing pause.
	imageBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, 1, 2.5, 5, 10, 20, 30}
	// One image download, headers to the bytes DecodeConfig needs.
	downloadBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30}
	// One fenced append to the event log: sub-millisecond in process,
	// milliseconds to a cluster.
	appendBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	// Events per appended message (a count, not seconds).
	batchBuckets = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}
	// Body bytes read for one image: a header in the first 64 KiB range
	// reads 64 KiB; the fetcher gives up at 16 MiB.
	bytesReadBuckets = []float64{1 << 10, 4 << 10, 16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20, 32 << 20}
	// One HTTP request.
	httpBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
)

// Metrics holds the service's metrics. Create it with New. A nil *Metrics is
// valid: every method is then a no-op.
type Metrics struct {
	reg           prometheus.Registerer
	jobsSubmitted prometheus.Counter
	jobsReplayed  prometheus.Counter
	jobsFinished  *prometheus.CounterVec
	jobsActive    prometheus.Gauge

	imagesProcessed prometheus.Counter
	imagesFailed    *prometheus.CounterVec
	imagesInflight  prometheus.Gauge
	imageSlots      prometheus.Gauge
	schedP99        prometheus.Gauge
	imageSeconds    prometheus.Histogram
	downloadSeconds prometheus.Histogram
	imagesFetched   *prometheus.CounterVec
	imageBytesRead  prometheus.Histogram

	appendSeconds *prometheus.HistogramVec
	batchEvents   prometheus.Histogram

	projectionSequence   prometheus.Gauge
	projectionApplied    prometheus.Counter
	projectionDuplicates prometheus.Counter
	projectionLag        prometheus.Gauge

	submitRejected *prometheus.CounterVec
	logWritable    prometheus.Gauge
	refreshErrors  prometheus.Counter

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
}

// New creates the service's metrics and registers them, together with the Go
// runtime and process collectors, on reg. It panics if registration fails,
// as when reg already holds metrics of the same names (one Metrics per
// registry). A nil reg returns a nil *Metrics, which records nothing.
func New(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		return nil
	}
	m := &Metrics{
		reg: reg,
		jobsReplayed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "jobs_submit_replays_total",
			Help: "Submits answered with an existing job's id because they repeated its Idempotency-Key and content.",
		}),
		jobsSubmitted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "jobs_submitted_total",
			Help: "Jobs accepted by this instance's submit endpoint.",
		}),
		jobsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "jobs_finished_total",
			Help: "Jobs this instance finished, by final status (completed, failed).",
		}, []string{"status"}),
		jobsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "jobs_active",
			Help: "Jobs currently owned by this instance.",
		}),

		imagesProcessed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "images_processed_total",
			Help: "Images whose perimeter this instance computed and recorded.",
		}),
		imagesFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "images_failed_total",
			Help: "Images this instance recorded as failed, by coarse reason.",
		}, []string{"reason"}),
		imagesInflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "images_inflight",
			Help: "Images being downloaded or processed by this instance.",
		}),
		imageSlots: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "image_slots",
			Help: "Images this instance may process at once now: fixed, or set by the adaptive governor.",
		}),
		schedP99: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "scheduler_latency_p99_seconds",
			Help: "Go scheduler latency p99 over the governor's last interval (0 with fixed image slots).",
		}),
		imageSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "image_processing_seconds",
			Help:    "Time to settle one image: download, header decode and processing pause.",
			Buckets: imageBuckets,
		}),
		downloadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "image_download_seconds",
			Help:    "Time to download one image far enough to read its dimensions.",
			Buckets: downloadBuckets,
		}),
		imagesFetched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "images_fetched_total",
			Help: "Images whose body was read, by how it was requested (ranged: byte ranges; whole: the whole body).",
		}, []string{"mode"}),
		imageBytesRead: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "image_bytes_read",
			Help:    "Body bytes read for one image, over all its requests and attempts, drained bytes included.",
			Buckets: bytesReadBuckets,
		}),

		appendSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "event_append_seconds",
			Help:    "Time to append one message to the event log, by kind.",
			Buckets: appendBuckets,
		}, []string{"kind"}),
		batchEvents: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "event_batch_events",
			Help:    "Events carried by one appended message.",
			Buckets: batchBuckets,
		}),

		projectionSequence: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "projection_last_sequence",
			Help: "Stream sequence of the last message this instance's projection applied.",
		}),
		projectionApplied: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "projection_events_applied_total",
			Help: "Events folded into this instance's read model.",
		}),
		projectionDuplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "projection_duplicates_total",
			Help: "Events the projection ignored because their outcome was already recorded.",
		}),
		projectionLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "projection_lag_seconds",
			Help: "Age of the last message the projection applied, when it was committed to the read model.",
		}),

		submitRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "submit_rejected_total",
			Help: "Submissions refused, by reason.",
		}, []string{"reason"}),

		refreshErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "admission_refresh_errors_total",
			Help: "Failed reads of the stream and queue state that admission control decides from (it then uses the last good state).",
		}),
		logWritable: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "event_log_writable",
			Help: "1 while this instance's last probe found the event log able to take writes (a stream leader with quorum), else 0.",
		}),

		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_requests_total",
			Help: "HTTP requests served, by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "http_request_duration_seconds",
			Help:    "Time to serve one HTTP request, by route template.",
			Buckets: httpBuckets,
		}, []string{"route"}),
	}

	// Create every labelled series up front so that each one is exported
	// from the first scrape and rate() sees its first increment.
	for _, v := range jobStatuses {
		m.jobsFinished.WithLabelValues(v)
	}
	for _, v := range imageReasons {
		m.imagesFailed.WithLabelValues(v)
	}
	for _, v := range appendKinds {
		m.appendSeconds.WithLabelValues(v)
	}
	for _, v := range rejectReasons {
		m.submitRejected.WithLabelValues(v)
	}
	for _, v := range fetchModes {
		m.imagesFetched.WithLabelValues(v)
	}

	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.jobsSubmitted, m.jobsReplayed, m.jobsFinished, m.jobsActive,
		m.imagesProcessed, m.imagesFailed, m.imagesInflight, m.imageSlots, m.schedP99, m.imageSeconds, m.downloadSeconds,
		m.imagesFetched, m.imageBytesRead,
		m.appendSeconds, m.batchEvents,
		m.projectionSequence, m.projectionApplied, m.projectionDuplicates, m.projectionLag,
		m.submitRejected, m.logWritable, m.refreshErrors,
		m.httpRequests, m.httpDuration,
	)
	return m
}

// Handler serves the metrics gathered from g in the Prometheus exposition
// format. A collector that fails is reported in the response and the rest
// are still served.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// JobSubmitted counts one job accepted by the submit endpoint.
func (m *Metrics) JobSubmitted() {
	if m == nil {
		return
	}
	m.jobsSubmitted.Inc()
}

// ObserveMailboxes exports fn's value, read at each scrape, as
// retailpulse_job_mailbox_messages: outcomes waiting in job actors'
// mailboxes. Call once.
func (m *Metrics) ObserveMailboxes(fn func() int) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "job_mailbox_messages",
		Help: "Messages waiting in the mailboxes of this instance's job actors (image outcomes not yet appended).",
	}, func() float64 { return float64(fn()) }))
}

// JobReplayed counts one submit answered as a replay of an earlier one.
func (m *Metrics) JobReplayed() {
	if m == nil {
		return
	}
	m.jobsReplayed.Inc()
}

// JobFinished counts one job finished with status "completed" or "failed";
// any other status is counted as "other".
func (m *Metrics) JobFinished(status string) {
	if m == nil {
		return
	}
	m.jobsFinished.WithLabelValues(oneOf(status, jobStatuses)).Inc()
}

// JobActive adds delta (+1 when the instance takes a job, -1 when it lets
// go) to the number of jobs this instance owns.
func (m *Metrics) JobActive(delta int) {
	if m == nil {
		return
	}
	m.jobsActive.Add(float64(delta))
}

// ImageProcessed counts one image processed successfully in total (download,
// decode and pause).
func (m *Metrics) ImageProcessed(total time.Duration) {
	if m == nil {
		return
	}
	m.imagesProcessed.Inc()
	m.imageSeconds.Observe(seconds(total))
}

// ImageFailed counts one image that failed for reason after total. The
// reason is mapped onto the fixed set by FailureReason. A zero total (an
// image failed without being downloaded, such as one of an unknown store) is
// counted but not observed in the processing-time histogram.
func (m *Metrics) ImageFailed(reason string, total time.Duration) {
	if m == nil {
		return
	}
	m.imagesFailed.WithLabelValues(FailureReason(reason)).Inc()
	if total > 0 {
		m.imageSeconds.Observe(seconds(total))
	}
}

// ImageInflight adds delta to the number of images being processed.
func (m *Metrics) ImageInflight(delta int) {
	if m == nil {
		return
	}
	m.imagesInflight.Add(float64(delta))
}

// ImageSlots sets the image slots allowed now and the scheduler latency
// p99 the adaptive governor acted on.
func (m *Metrics) ImageSlots(limit int, schedP99 time.Duration) {
	if m == nil {
		return
	}
	m.imageSlots.Set(float64(limit))
	m.schedP99.Set(seconds(schedP99))
}

// Download observes the duration of one image download.
func (m *Metrics) Download(d time.Duration) {
	if m == nil {
		return
	}
	m.downloadSeconds.Observe(seconds(d))
}

// ImageFetched counts one image whose body was read, by mode (ranged or
// whole; anything else is "other"), and observes the body bytes read for
// it. Negative byte counts are observed as zero.
func (m *Metrics) ImageFetched(mode string, bytesRead int64) {
	if m == nil {
		return
	}
	m.imagesFetched.WithLabelValues(oneOf(mode, fetchModes)).Inc()
	m.imageBytesRead.Observe(float64(max(bytesRead, 0)))
}

// Append observes one message appended to the event log: its kind
// (submitted, started, images, completed; anything else is "other"), the
// number of events it carried and how long the append took.
func (m *Metrics) Append(kind string, events int, d time.Duration) {
	if m == nil {
		return
	}
	m.appendSeconds.WithLabelValues(oneOf(kind, appendKinds)).Observe(seconds(d))
	if events > 0 {
		m.batchEvents.Observe(float64(events))
	}
}

// ProjectionApplied records that the projection applied messages up to
// stream sequence seq, folding events events and ignoring duplicates
// duplicates, the last of them lag after the log stored it. Negative
// counts and lags are ignored.
func (m *Metrics) ProjectionApplied(seq uint64, events int, duplicates int, lag time.Duration) {
	if m == nil {
		return
	}
	m.projectionSequence.Set(float64(seq))
	if lag >= 0 {
		m.projectionLag.Set(lag.Seconds())
	}
	if events > 0 {
		m.projectionApplied.Add(float64(events))
	}
	if duplicates > 0 {
		m.projectionDuplicates.Add(float64(duplicates))
	}
}

// AdmissionRefreshFailed counts one failed admission-control refresh.
func (m *Metrics) AdmissionRefreshFailed() {
	if m == nil {
		return
	}
	m.refreshErrors.Inc()
}

// LogWritable records the outcome of the latest event-log probe.
func (m *Metrics) LogWritable(ok bool) {
	if m == nil {
		return
	}
	v := 0.0
	if ok {
		v = 1
	}
	m.logWritable.Set(v)
}

// SubmitRejected counts one refused submission. Reason is one of invalid,
// too_large, overloaded, storage_full, unauthorized, unavailable; anything
// else is counted as "other".
func (m *Metrics) SubmitRejected(reason string) {
	if m == nil {
		return
	}
	m.submitRejected.WithLabelValues(oneOf(reason, rejectReasons)).Inc()
}

// Instrument wraps h to count its requests by method and status code and to
// observe their duration. Route is the route's template as registered on the
// router (e.g. "/api/status"), never the request's raw path, so the number of
// series stays bounded. Methods outside the standard set are labelled
// "unknown". On a nil *Metrics, Instrument returns h unchanged.
func (m *Metrics) Instrument(route string, h http.Handler) http.Handler {
	if m == nil {
		return h
	}
	if route == "" {
		route = labelOther
	}
	labels := prometheus.Labels{"route": route}
	h = promhttp.InstrumentHandlerCounter(m.httpRequests.MustCurryWith(labels), h)
	return promhttp.InstrumentHandlerDuration(m.httpDuration.MustCurryWith(labels), h)
}

// FailureReason maps an image failure reason onto the fixed set used as the
// reason label: "http 404" and "http 429" keep their own value, any other
// "http 4.." is "http 4xx", any "http 5.." is "http 5xx", "blocked" is
// "blocked address", and a reason outside the set is "other". Matching
// ignores case and surrounding spaces.
func FailureReason(reason string) string {
	r := strings.ToLower(strings.TrimSpace(reason))
	switch {
	case r == "blocked":
		return ReasonBlockedAddress
	case r == ReasonHTTP404 || r == ReasonHTTP429:
		return r
	case strings.HasPrefix(r, "http 4"):
		return ReasonHTTP4xx
	case strings.HasPrefix(r, "http 5"):
		return ReasonHTTP5xx
	}
	return oneOf(r, imageReasons)
}

// oneOf returns v if it is in set, else "other".
func oneOf(v string, set []string) string {
	for _, s := range set {
		if v == s {
			return v
		}
	}
	return labelOther
}

// seconds converts d to seconds, treating a negative d as zero.
func seconds(d time.Duration) float64 {
	if d < 0 {
		return 0
	}
	return d.Seconds()
}
