package loadgen

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Result is everything a run measured. Its JSON keys are stable.
// Pointers are null when the target does not expose the number.
type Result struct {
	Mode           string  `json:"mode"` // "in-process" or "url"
	Target         string  `json:"target"`
	GPUPause       string  `json:"gpu_pause"` // the in-process service's; "unknown" with --url
	Jobs           int     `json:"jobs"`
	VisitsPerJob   int     `json:"visits_per_job"`
	ImagesPerVisit int     `json:"images_per_visit"`
	Images         int     `json:"images"`
	FailingImages  int     `json:"failing_images"`
	FailRate       float64 `json:"fail_rate"`
	ImageBytes     int     `json:"image_bytes"` // size of the served image as built
	ImageHosts     int     `json:"image_hosts"`
	Photo          bool    `json:"photo"`
	HeaderOffsetKB int     `json:"header_offset_kb"`
	HostRange      bool    `json:"host_honours_range"`
	HostProcess    string  `json:"image_host_process"` // "own" (--image-host) or "bench" (served by the generator's process)
	Stores         int     `json:"stores"`

	WallSeconds     float64 `json:"wall_seconds"` // first submit to last job seen terminal
	ImagesPerSecond float64 `json:"images_per_second"`

	JobsSubmitted int     `json:"jobs_submitted"`
	SubmitSeconds float64 `json:"submit_seconds"`
	SubmitRetries int     `json:"submit_retries"`
	SubmitP50Ms   float64 `json:"submit_p50_ms"`
	SubmitP99Ms   float64 `json:"submit_p99_ms"`
	SubmitMaxMs   float64 `json:"submit_max_ms"`

	StatusRPSTarget   int     `json:"status_rps_target"`
	StatusRPSAchieved float64 `json:"status_rps_achieved"`
	StatusRequests    int64   `json:"status_requests"`
	StatusErrors      int64   `json:"status_errors"`
	StatusDropped     int64   `json:"status_dropped"`
	StatusP50Ms       float64 `json:"status_p50_ms"`
	StatusP99Ms       float64 `json:"status_p99_ms"`
	StatusMaxMs       float64 `json:"status_max_ms"`
	PollErrors        int     `json:"poll_errors"`

	// Event streams (--sse-streams): opened, most open at once, ended
	// with job_completed, events received, closed for overflow.
	SSEStreams   int   `json:"sse_streams"`
	SSEOpened    int64 `json:"sse_opened"`
	SSEPeakOpen  int64 `json:"sse_peak_open"`
	SSECompleted int64 `json:"sse_completed"`
	SSEEvents    int64 `json:"sse_events"`
	SSEOverflows int64 `json:"sse_overflows"`

	JobsCompleted int `json:"jobs_completed"`
	JobsFailed    int `json:"jobs_failed"`

	EventsAppended  *float64 `json:"events_appended"` // events in messages the engine appended
	EventMessages   *float64 `json:"event_messages"`  // messages the engine appended
	ImagesProcessed *float64 `json:"images_processed"`
	ImagesFailed    *float64 `json:"images_failed"`
	ImageRequests   int64    `json:"image_requests"` // served by the bench's image server
	// Body bytes the image server wrote (to 404s too), in all and per
	// image that exists (not counting the failing ones).
	ImageBytesServed         int64   `json:"image_bytes_served"`
	ImageBytesServedPerImage float64 `json:"image_bytes_served_per_image"`
	// From the target's /metrics: images fetched by byte ranges or whole
	// bodies, and the body bytes its fetcher read per image.
	ImagesFetchedRanged *float64 `json:"images_fetched_ranged"`
	ImagesFetchedWhole  *float64 `json:"images_fetched_whole"`
	BytesReadPerImage   *float64 `json:"bytes_read_per_image"`

	// The target's largest retailpulse_projection_lag_seconds, read every
	// 250ms during the run: how far its read model fell behind the log.
	ProjectionLagMaxSeconds *float64 `json:"projection_lag_max_seconds"`

	CPUSeconds     *float64 `json:"cpu_seconds"`
	PeakRSSBytes   *float64 `json:"peak_rss_bytes"`
	ResourcesScope string   `json:"resources_scope"`
	// In process only: how long runnable goroutines waited for a CPU
	// (bucket upper bounds of the runtime's histogram), and GC cycles.
	SchedLatencyP50Ms *float64 `json:"sched_latency_p50_ms"`
	SchedLatencyP99Ms *float64 `json:"sched_latency_p99_ms"`
	GCCycles          *float64 `json:"gc_cycles"`

	// The whole machine over the run (Linux, /proc/stat), every process
	// on it together: CPU-seconds its CPUs were busy, and CPU-seconds a
	// hypervisor gave to other machines while this one wanted them. Runs
	// of a virtual machine are only comparable when their steal is alike.
	// MachineSeconds is the interval they cover: from just before the
	// first submit to the last answer.
	MachineCPUs         int      `json:"machine_cpus"`
	MachineSeconds      *float64 `json:"machine_seconds"`
	MachineBusySeconds  *float64 `json:"machine_busy_seconds"`
	MachineStealSeconds *float64 `json:"machine_steal_seconds"`

	Pass            bool     `json:"pass"`
	Failures        []string `json:"failures"`
	FailuresOmitted int      `json:"failures_omitted"`
}

func newResult(cfg *Config) *Result {
	mode, pause := "in-process", ""
	if cfg.URL != "" {
		mode, pause = "url", "unknown"
	}
	return &Result{
		Mode: mode, GPUPause: pause, Jobs: cfg.Jobs, VisitsPerJob: cfg.Visits, ImagesPerVisit: cfg.Images,
		Images: cfg.Jobs * cfg.Visits * cfg.Images, FailRate: cfg.FailRate, // the image and its host: setHostSpec
		Stores: len(cfg.Stores), StatusRPSTarget: cfg.StatusRPS, SSEStreams: cfg.SSEStreams, Failures: []string{},
	}
}

// fail records a mismatch; the first 20 are kept.
func (r *Result) fail(msg string) {
	if len(r.Failures) >= 20 {
		r.FailuresOmitted++
		return
	}
	r.Failures = append(r.Failures, msg)
}

func (r *Result) setSubmit(lat []time.Duration) {
	r.SubmitP50Ms, r.SubmitP99Ms, r.SubmitMaxMs = latencyMs(lat)
}

func (r *Result) setHammer(s hammerStats) {
	r.StatusRequests = int64(len(s.lat))
	r.StatusErrors = s.errors
	r.StatusDropped = s.dropped
	if s.elapsed > 0 {
		r.StatusRPSAchieved = float64(len(s.lat)) / s.elapsed.Seconds()
	}
	r.StatusP50Ms, r.StatusP99Ms, r.StatusMaxMs = latencyMs(s.lat)
}

func (r *Result) setStreams(s streamStats) {
	r.SSEOpened, r.SSEPeakOpen, r.SSECompleted, r.SSEEvents, r.SSEOverflows = s.opened, s.peak, s.completed, s.events, s.overflows
	for _, f := range s.failures {
		r.fail(f)
	}
	if s.completed != int64(r.SSEStreams) && len(s.failures) == 0 {
		r.fail(fmt.Sprintf("event streams: %d of %d ended with job_completed", s.completed, r.SSEStreams))
	}
}

// setMachine records the machine's CPU over the run (see MachineCPUs);
// nothing when it could not be read.
func (r *Result) setMachine(u machineUse, ok bool) {
	if !ok {
		return
	}
	r.MachineCPUs = u.cpus
	r.MachineSeconds, r.MachineBusySeconds, r.MachineStealSeconds = &u.seconds, &u.busy, &u.steal
}

func (r *Result) setResources(res resources) {
	r.CPUSeconds, r.PeakRSSBytes, r.ResourcesScope = res.cpuSeconds, res.peakRSS, res.scope
	r.SchedLatencyP50Ms, r.SchedLatencyP99Ms, r.GCCycles = res.schedP50, res.schedP99, res.gcCycles
}

// setEvents fills the event and image counters from the difference of two
// scrapes of the target's /metrics, when it exposes them.
func (r *Result) setEvents(before, after promSample, ok bool) {
	if !ok {
		return
	}
	delta := func(name string) *float64 {
		a, has := after[name]
		if !has {
			return nil
		}
		d := a - before[name]
		return &d
	}
	r.EventsAppended = delta("retailpulse_event_batch_events_sum")
	r.EventMessages = delta("retailpulse_event_batch_events_count")
	r.ImagesProcessed = delta("retailpulse_images_processed_total")
	r.ImagesFailed = delta("retailpulse_images_failed_total")
	r.ImagesFetchedRanged = delta(`retailpulse_images_fetched_total{mode="ranged"}`)
	r.ImagesFetchedWhole = delta(`retailpulse_images_fetched_total{mode="whole"}`)
	if sum, n := delta("retailpulse_image_bytes_read_sum"), delta("retailpulse_image_bytes_read_count"); sum != nil && n != nil && *n > 0 {
		per := *sum / *n
		r.BytesReadPerImage = &per
	}
}

// setHostSpec records the image the host serves, as it reports it, and
// how many ports it serves on.
func (r *Result) setHostSpec(st hostStats, hosts int, own bool) {
	r.ImageBytes, r.Photo, r.HeaderOffsetKB, r.HostRange, r.ImageHosts = st.ImageBytes, st.Photo, st.HeaderOffsetKB, st.HonoursRange, hosts
	r.HostProcess = "bench"
	if own {
		r.HostProcess = "own"
	}
}

// setImageHost records what the image server served during the run:
// requests and body bytes written.
func (r *Result) setImageHost(requests, written int64) {
	r.ImageRequests = requests
	r.ImageBytesServed = written
	if n := r.Images - r.FailingImages; n > 0 {
		r.ImageBytesServedPerImage = float64(written) / float64(n)
	}
}

// WriteTable prints the result for people.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	row("target", "%s (%s)", r.Target, r.Mode)
	row("workload", "%d jobs x %d visits x %d images = %d images, %d stores, %d failing (rate %g)",
		r.Jobs, r.VisitsPerJob, r.ImagesPerVisit, r.Images, r.Stores, r.FailingImages, r.FailRate)
	kind := "640x480 JPEG"
	if r.Photo {
		kind = "4032x3024 photo"
	}
	ranges := "honours Range"
	if !r.HostRange {
		ranges = "ignores Range"
	}
	row("images", "%s of %d bytes, header after %d KiB of metadata, from %d host(s) in the %s process that %s; gpu pause %s",
		kind, r.ImageBytes, r.HeaderOffsetKB, r.ImageHosts, r.HostProcess, ranges, r.GPUPause)
	row("throughput", "%.0f images/s (wall %.2fs, first submit to last job terminal)", r.ImagesPerSecond, r.WallSeconds)
	row("jobs", "%d submitted, %d completed, %d failed", r.JobsSubmitted, r.JobsCompleted, r.JobsFailed)
	row("submit latency", "p50 %.1fms  p99 %.1fms  max %.1fms  (%d submits in %.2fs, %d retried on 503)",
		r.SubmitP50Ms, r.SubmitP99Ms, r.SubmitMaxMs, r.JobsSubmitted, r.SubmitSeconds, r.SubmitRetries)
	if r.StatusRPSTarget > 0 {
		row("status latency", "p50 %.2fms  p99 %.2fms  max %.2fms  (%d requests at %.0f/s of %d/s; %d errors, %d dropped)",
			r.StatusP50Ms, r.StatusP99Ms, r.StatusMaxMs, r.StatusRequests, r.StatusRPSAchieved, r.StatusRPSTarget, r.StatusErrors, r.StatusDropped)
	} else {
		row("status latency", "n/a (no --status-rps)")
	}
	if r.SSEStreams > 0 {
		row("event streams", "%d opened (%d open at most), %d ended with job_completed, %d events received, %d overflows",
			r.SSEOpened, r.SSEPeakOpen, r.SSECompleted, r.SSEEvents, r.SSEOverflows)
	}
	row("poll errors", "%d", r.PollErrors)
	row("events appended", "%s in %s messages", optNum(r.EventsAppended, "%.0f"), optNum(r.EventMessages, "%.0f"))
	row("images (service)", "%s processed, %s failed; fetched %s ranged, %s whole; %s bytes read per image",
		optNum(r.ImagesProcessed, "%.0f"), optNum(r.ImagesFailed, "%.0f"), optNum(r.ImagesFetchedRanged, "%.0f"),
		optNum(r.ImagesFetchedWhole, "%.0f"), optNum(r.BytesReadPerImage, "%.0f"))
	row("image host", "%d requests, %d bytes served (%.0f per image)", r.ImageRequests, r.ImageBytesServed, r.ImageBytesServedPerImage)
	row("read model lag", "max %s s (sampled every 250ms)", optNum(r.ProjectionLagMaxSeconds, "%.3f"))
	row("cpu", "%s s", optNum(r.CPUSeconds, "%.2f"))
	row("peak rss", "%s MiB", optNum(mib(r.PeakRSSBytes), "%.1f"))
	row("measured on", "%s", r.ResourcesScope)
	if r.MachineBusySeconds != nil {
		row("machine", "%.2f of %.2f CPU-seconds busy (%d CPUs x %.2fs, every process), %.2f stolen by the hypervisor",
			*r.MachineBusySeconds, float64(r.MachineCPUs)**r.MachineSeconds, r.MachineCPUs, *r.MachineSeconds, *r.MachineStealSeconds)
	}
	if r.SchedLatencyP99Ms != nil {
		row("go scheduler", "runnable-to-running p50 %s ms, p99 %s ms; %s GC cycles",
			optNum(r.SchedLatencyP50Ms, "%.3f"), optNum(r.SchedLatencyP99Ms, "%.3f"), optNum(r.GCCycles, "%.0f"))
	}
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL"
	}
	row("result", "%s", verdict)
	for _, f := range r.Failures {
		row("", "%s", f)
	}
	if r.FailuresOmitted > 0 {
		row("", "... and %d more", r.FailuresOmitted)
	}
	return tw.Flush()
}

func optNum(v *float64, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

func mib(v *float64) *float64 {
	if v == nil {
		return nil
	}
	m := *v / (1 << 20)
	return &m
}
