package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/retailpulse/retailpulse/storemaster"
)

// `retailpulse bench` is a load generator for the service's two API
// endpoints. It serves its own images on loopback, submits a workload,
// polls every job until it is terminal, optionally hammers the status
// endpoint at a fixed rate, checks that every job ended as its inputs imply,
// and reports throughput, latencies and the service's resource use.

// benchConfig is everything `retailpulse bench` takes.
type benchConfig struct {
	URL               string // target service; "" = start one in process
	Jobs              int
	Visits            int // per job
	Images            int // per visit
	FailRate          float64
	ImageBytes        int
	ImageHosts        int
	StoreIDs          string // comma-separated; "" = every id of the sample store master
	SubmitConcurrency int
	StatusRPS         int
	PollInterval      time.Duration
	Timeout           time.Duration
	Seed              uint64
	JSON              bool
	CPUProfile        string
	KeepData          bool

	stores    []string // StoreIDs, parsed
	serveArgs []string // service flags given on the command line, passed through
}

// benchServeFlags are the flags bench passes to the in-process service.
var benchServeFlags = []struct{ name, usage string }{
	{"gpu-pause", "service: pause per image, MIN-MAX, a duration or 0 (default: the service's, 100ms-400ms)"},
	{"fsync", "service: always, or an interval such as 1s (default: the service's, always)"},
	{"job-slots", "service: jobs processed at once (default: the service's)"},
	{"image-slots", "service: images processed at once (default: the service's)"},
	{"store-concurrency", "service: images processed at once per store of a job (default: the service's)"},
	{"append-linger", "service: how long a job waits for more outcomes before appending (default: the service's)"},
}

// benchSampleStores are the store ids of the built-in sample store master.
// Only the first two are also in the customer's full store master: against
// a service loaded with it, pass --store-ids S00339218,S01408764.
var benchSampleStores = []string{
	"S00339218", "S01408764", "S00000001", "S00000002", "S00000003", "S00000004", "S00000005",
	"S00000006", "S00000007", "S00000008", "S00000009", "S00000010", "S00000011", "S00000012",
	"S00000013", "S00000014", "S00000015", "S00000016", "S00000017", "S00000018",
}

const benchMaxImages = 10_000_000

func (cfg *benchConfig) flagSet(stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("retailpulse bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.URL, "url", "", "target an already-running service at this base URL; empty = start one in process")
	fs.IntVar(&cfg.Jobs, "jobs", 20, "jobs to submit")
	fs.IntVar(&cfg.Visits, "visits", 10, "visits per job")
	fs.IntVar(&cfg.Images, "images", 50, "images per visit")
	fs.Float64Var(&cfg.FailRate, "fail-rate", 0, "fraction of images that point at a 404")
	fs.IntVar(&cfg.ImageBytes, "image-bytes", 100_000, "size of each served image (a 640x480 JPEG padded after its end marker)")
	fs.IntVar(&cfg.ImageHosts, "image-hosts", 1, "loopback ports the images are spread over (the service limits downloads per host)")
	fs.StringVar(&cfg.StoreIDs, "store-ids", "", "store ids the visits cycle through, comma-separated; empty = the 20 ids of the sample store master")
	fs.IntVar(&cfg.SubmitConcurrency, "submit-concurrency", 4, "submits in flight at once")
	fs.IntVar(&cfg.StatusRPS, "status-rps", 0, "status requests per second issued against random jobs while they run (0 = none)")
	fs.DurationVar(&cfg.PollInterval, "poll-interval", 50*time.Millisecond, "interval between status polls of the jobs still ongoing")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "bound on submitting and waiting for every job")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed choosing which images fail")
	fs.BoolVar(&cfg.JSON, "json", false, "print one JSON object instead of a table")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the run to this file (in-process service only)")
	fs.BoolVar(&cfg.KeepData, "keep-data", false, "keep the in-process service's data directory")
	for _, f := range benchServeFlags {
		fs.String(f.name, "", f.usage)
	}
	return fs
}

// parseBenchConfig parses and validates bench's arguments.
func parseBenchConfig(args []string, stderr io.Writer) (*benchConfig, error) {
	cfg := &benchConfig{}
	fs := cfg.flagSet(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, flagHelp
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) {
		for _, sf := range benchServeFlags {
			if sf.name == f.Name {
				cfg.serveArgs = append(cfg.serveArgs, "--"+f.Name, f.Value.String())
			}
		}
	})
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (cfg *benchConfig) validate() error {
	checks := []struct {
		ok   bool
		what string
	}{
		{cfg.Jobs > 0 && cfg.Visits > 0 && cfg.Images > 0, "--jobs, --visits and --images must be positive"},
		{cfg.Jobs <= benchMaxImages && cfg.Visits <= benchMaxImages && cfg.Images <= benchMaxImages &&
			int64(cfg.Jobs)*int64(cfg.Visits)*int64(cfg.Images) <= benchMaxImages,
			fmt.Sprintf("at most %d images in all", benchMaxImages)},
		{cfg.FailRate >= 0 && cfg.FailRate <= 1, "--fail-rate must be between 0 and 1"},
		{cfg.ImageBytes >= 0, "--image-bytes must not be negative"},
		{cfg.ImageHosts > 0 && cfg.ImageHosts <= 64, "--image-hosts must be between 1 and 64"},
		{cfg.SubmitConcurrency > 0, "--submit-concurrency must be positive"},
		{cfg.StatusRPS >= 0 && cfg.StatusRPS <= 100_000, "--status-rps must be between 0 and 100000"},
		{cfg.PollInterval > 0, "--poll-interval must be positive"},
		{cfg.Timeout > 0, "--timeout must be positive"},
	}
	for _, c := range checks {
		if !c.ok {
			return errors.New(c.what)
		}
	}
	if err := cfg.parseStores(); err != nil {
		return err
	}
	if cfg.URL != "" {
		return cfg.validateURLMode()
	}
	_, err := cfg.serveConfig("bench-data")
	return err
}

func (cfg *benchConfig) parseStores() error {
	cfg.stores = nil
	for _, id := range strings.Split(cfg.StoreIDs, ",") {
		if id = strings.TrimSpace(id); id != "" {
			cfg.stores = append(cfg.stores, id)
		}
	}
	if len(cfg.stores) == 0 {
		cfg.stores = benchSampleStores
	}
	if cfg.URL != "" {
		return nil // the target's store master is not ours to check
	}
	sample := storemaster.Sample()
	for _, id := range cfg.stores {
		if _, ok := sample.Lookup(id); !ok {
			return fmt.Errorf("--store-ids: %s is not in the sample store master the in-process service uses", id)
		}
	}
	return nil
}

func (cfg *benchConfig) validateURLMode() error {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url: want http(s)://host[:port], got %q", cfg.URL)
	}
	switch {
	case len(cfg.serveArgs) > 0:
		return fmt.Errorf("%s configures the in-process service; it cannot be used with --url", cfg.serveArgs[0])
	case cfg.CPUProfile != "":
		return errors.New("--cpuprofile profiles the in-process service; it cannot be used with --url")
	case cfg.KeepData:
		return errors.New("--keep-data applies to the in-process service; it cannot be used with --url")
	}
	return nil
}

// serveConfig builds the in-process service's configuration the way
// `retailpulse serve` would from flags. The environment is ignored, so the
// command line describes the whole run.
func (cfg *benchConfig) serveConfig(dataDir string) (serveConfig, error) {
	var sc serveConfig
	fs := sc.flagSet("retailpulse bench (service)", io.Discard)
	args := append([]string{"--addr", "127.0.0.1:0", "--data-dir", dataDir, "--allow-private-networks", "--log-level", "warn"}, cfg.serveArgs...)
	if err := sc.parse(fs, args, func(string) string { return "" }); err != nil {
		return sc, fmt.Errorf("service flags: %w", err)
	}
	return sc, nil
}

// bench runs `retailpulse bench`: 0 when every job ended as expected, 1 on
// a mismatch, a timeout or an error, 2 on bad flags.
func (m *Main) bench(ctx context.Context, args []string) int {
	cfg, err := parseBenchConfig(args, m.Stderr)
	if errors.Is(err, flagHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(m.Stderr, "retailpulse bench: %v\n", err)
		return exitUsage
	}
	res, err := runBench(ctx, cfg, m.Stderr)
	if err != nil {
		fmt.Fprintf(m.Stderr, "retailpulse bench: %v\n", err)
		return exitError
	}
	if cfg.JSON {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(res)
	} else {
		err = res.writeTable(m.Stdout)
	}
	if err != nil {
		fmt.Fprintf(m.Stderr, "retailpulse bench: %v\n", err)
		return exitError
	}
	if !res.Pass {
		return exitError
	}
	return exitOK
}

// runBench sets up the image server and the target, runs the workload and
// measures it. An error means the run could not be made; a run whose jobs
// ended wrongly returns a result with Pass false.
func runBench(ctx context.Context, cfg *benchConfig, stderr io.Writer) (*benchResult, error) {
	imgs, err := startBenchImages(cfg.ImageBytes, cfg.ImageHosts)
	if err != nil {
		return nil, err
	}
	defer imgs.close()

	res := newBenchResult(cfg)
	target := cfg.URL
	if target == "" {
		svc, err := startBenchService(ctx, cfg, stderr)
		if err != nil {
			return nil, err
		}
		defer svc.stop()
		target = svc.url
		res.GPUPause = svc.gpuPause
	}
	res.Target = target

	client := newBenchClient(target)
	defer client.close()
	meter := startBenchMeter(ctx, cfg.URL == "", client)
	before, _ := client.scrape(ctx)
	stopProfile, err := startBenchProfile(cfg.CPUProfile)
	if err != nil {
		meter.finish()
		return nil, err
	}

	r := &benchRun{cfg: cfg, client: client, res: res, progress: stderr,
		work: benchWorkload{images: imgs.urls, stores: cfg.stores, visits: cfg.Visits, perVisit: cfg.Images, failRate: cfg.FailRate, seed: cfg.Seed}}
	r.run(ctx)

	if err := stopProfile(); err != nil {
		fmt.Fprintf(stderr, "retailpulse bench: cpu profile: %v\n", err)
	}
	res.setResources(meter.finish())
	after, ok := client.scrape(ctx)
	res.setEvents(before, after, ok)
	res.ImageRequests = imgs.requests.Load()
	return res, nil
}

// benchService is an in-process service started for one run.
type benchService struct {
	app      *App
	url      string
	gpuPause string
	dataDir  string
	keep     bool
	stderr   io.Writer
	cancel   context.CancelFunc
	done     chan error
}

// startBenchService starts the real service on a temporary data directory
// and waits until it is ready. Its logs go to stderr at warn and above.
func startBenchService(ctx context.Context, cfg *benchConfig, stderr io.Writer) (*benchService, error) {
	dir, err := os.MkdirTemp("", "retailpulse-bench-")
	if err != nil {
		return nil, err
	}
	sc, err := cfg.serveConfig(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	app, err := NewApp(ctx, sc, newLogger(stderr, sc.LogLevel, "text"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start service: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &benchService{app: app, url: "http://" + app.Addr(), gpuPause: sc.GPUPause, dataDir: dir,
		keep: cfg.KeepData, stderr: stderr, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- app.Run(runCtx) }()
	if err := s.waitReady(ctx, time.Minute); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *benchService) waitReady(ctx context.Context, total time.Duration) error {
	deadline := time.Now().Add(total)
	for !s.app.Ready() {
		if time.Now().After(deadline) {
			return fmt.Errorf("service not ready after %s", total)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("service stopped during start-up: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// stop shuts the service down gracefully and removes its data unless kept.
func (s *benchService) stop() {
	s.cancel()
	if err := <-s.done; err != nil {
		fmt.Fprintf(s.stderr, "retailpulse bench: service: %v\n", err)
	}
	if s.keep {
		fmt.Fprintf(s.stderr, "retailpulse bench: service data kept in %s\n", s.dataDir)
		return
	}
	os.RemoveAll(s.dataDir)
}

// benchImages serves one JPEG at /img/<n>.jpg for every n and answers 404
// at /missing/<n>.jpg, on one or more loopback ports (each a distinct host
// to the service's per-host download limit).
type benchImages struct {
	urls     []string
	body     []byte
	srv      *http.Server
	requests atomic.Int64
}

func startBenchImages(size, hosts int) (*benchImages, error) {
	body, err := benchJPEG(640, 480, size)
	if err != nil {
		return nil, err
	}
	b := &benchImages{body: body}
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serve), ReadHeaderTimeout: 10 * time.Second}
	for range hosts {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.close()
			return nil, fmt.Errorf("image server: %w", err)
		}
		b.urls = append(b.urls, "http://"+l.Addr().String())
		go b.srv.Serve(l)
	}
	return b, nil
}

func (b *benchImages) serve(w http.ResponseWriter, r *http.Request) {
	b.requests.Add(1)
	if !strings.HasPrefix(r.URL.Path, "/img/") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	w.Header().Set("Content-Length", strconv.Itoa(len(b.body)))
	w.Write(b.body)
}

func (b *benchImages) close() { b.srv.Close() }

// benchJPEG encodes a w x h JPEG and pads it to size bytes after its end
// marker, so a header reader stops long before the padding.
func benchJPEG(w, h, size int) ([]byte, error) {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
		return nil, fmt.Errorf("encode image: %w", err)
	}
	if pad := size - buf.Len(); pad > 0 {
		buf.Write(make([]byte, pad))
	}
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(buf.Bytes()))
	if err != nil || cfg.Width != w || cfg.Height != h {
		return nil, fmt.Errorf("generated image does not decode: %v", err)
	}
	return buf.Bytes(), nil
}

// benchWorkload builds the jobs. Job j's visit v goes to store
// stores[(j*visits+v) % len(stores)]; each image fails (points at a 404)
// with probability failRate, drawn from a generator seeded by (seed, j), so
// a job is the same on every run. Every image URL is unique; image n is
// served by images[n % len(images)].
type benchWorkload struct {
	images   []string // image server base URLs
	stores   []string
	visits   int
	perVisit int
	failRate float64
	seed     uint64
}

type benchVisit struct {
	StoreID   string   `json:"store_id"`
	ImageURL  []string `json:"image_url"`
	VisitTime string   `json:"visit_time"`
}

type benchSubmitBody struct {
	Count  int          `json:"count"`
	Visits []benchVisit `json:"visits"`
}

// benchJob is what the run keeps of one job: its id and what it must end as.
type benchJob struct {
	id         uint64 // 0 until submitted
	failing    int    // images pointing at a 404
	wantFailed []string
	done       bool
}

// build returns job j's submit body and its expected outcome.
func (w benchWorkload) build(j int) ([]byte, benchJob) {
	rng := rand.New(rand.NewPCG(w.seed, uint64(j)))
	body := benchSubmitBody{Count: w.visits, Visits: make([]benchVisit, w.visits)}
	var job benchJob
	failedStores := map[string]bool{}
	visitTime := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	for v := range w.visits {
		store := w.stores[(j*w.visits+v)%len(w.stores)]
		urls := make([]string, w.perVisit)
		for i := range urls {
			n := (j*w.visits+v)*w.perVisit + i
			host := w.images[n%len(w.images)]
			if rng.Float64() < w.failRate {
				urls[i] = host + "/missing/" + strconv.Itoa(n) + ".jpg"
				job.failing++
				failedStores[store] = true
				continue
			}
			urls[i] = host + "/img/" + strconv.Itoa(n) + ".jpg"
		}
		body.Visits[v] = benchVisit{StoreID: store, ImageURL: urls, VisitTime: visitTime.Add(time.Duration(v) * time.Minute).Format(time.RFC3339)}
	}
	for s := range failedStores {
		job.wantFailed = append(job.wantFailed, s)
	}
	slices.Sort(job.wantFailed)
	b, _ := json.Marshal(body) // strings and ints only: cannot fail
	return b, job
}

// benchClient talks to the target service.
type benchClient struct {
	base string
	http *http.Client
}

func newBenchClient(base string) *benchClient {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
	}
	return &benchClient{base: strings.TrimRight(base, "/"), http: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}
}

func (c *benchClient) close() { c.http.CloseIdleConnections() }

func (c *benchClient) do(ctx context.Context, method, path string, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, resp.Header, b, err
}

// submit posts a job, retrying 503s (the service's back-pressure) after
// their Retry-After, capped at one second, up to 20 times.
func (c *benchClient) submit(ctx context.Context, body []byte) (id uint64, retries int, err error) {
	for ; ; retries++ {
		code, hdr, resp, err := c.do(ctx, http.MethodPost, "/api/submit/", body)
		if err != nil {
			return 0, retries, err
		}
		if code == http.StatusServiceUnavailable && retries < 20 {
			if err := benchSleep(ctx, retryAfter(hdr)); err != nil {
				return 0, retries, err
			}
			continue
		}
		if code != http.StatusCreated {
			return 0, retries, fmt.Errorf("submit: %d %s", code, benchSnippet(resp))
		}
		var out struct {
			JobID *uint64 `json:"job_id"`
		}
		if err := json.Unmarshal(resp, &out); err != nil || out.JobID == nil {
			return 0, retries, fmt.Errorf("submit: answer %s: no job_id", benchSnippet(resp))
		}
		return *out.JobID, retries, nil
	}
}

func retryAfter(h http.Header) time.Duration {
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s >= 0 {
		return min(time.Duration(s)*time.Second, time.Second)
	}
	return 100 * time.Millisecond
}

// benchStatus is a status answer. job_id is a string in the spec; a number
// is accepted too.
type benchStatus struct {
	Status string            `json:"status"`
	JobID  json.RawMessage   `json:"job_id"`
	Error  []benchStoreError `json:"error"`
}

type benchStoreError struct {
	StoreID string `json:"store_id"`
	Error   string `json:"error"`
}

func (c *benchClient) status(ctx context.Context, id uint64) (int, benchStatus, error) {
	code, _, body, err := c.do(ctx, http.MethodGet, "/api/status?jobid="+strconv.FormatUint(id, 10), nil)
	var st benchStatus
	if err == nil && code == http.StatusOK {
		if err = json.Unmarshal(body, &st); err != nil {
			err = fmt.Errorf("status of job %d: %s: %v", id, benchSnippet(body), err)
		}
	}
	return code, st, err
}

// statusCode issues one status request and discards the answer.
func (c *benchClient) statusCode(ctx context.Context, id uint64) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/api/status?jobid="+strconv.FormatUint(id, 10), nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// promSample is a scrape of /metrics: each metric name (labels dropped) to
// the sum of its series.
type promSample map[string]float64

// scrape reads the target's /metrics; false if it exposes none.
func (c *benchClient) scrape(ctx context.Context) (promSample, bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	code, _, body, err := c.do(ctx, http.MethodGet, "/metrics", nil)
	if err != nil || code != http.StatusOK {
		return nil, false
	}
	return parsePromText(body), true
}

// parsePromText parses the Prometheus text exposition format, summing the
// series of each name. Lines it does not understand are skipped.
func parsePromText(body []byte) promSample {
	out := promSample{}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ \t"); i >= 0 {
			name = line[:i]
		}
		rest := line[len(name):]
		if strings.HasPrefix(rest, "{") {
			i := strings.LastIndexByte(rest, '}')
			if i < 0 {
				continue
			}
			rest = rest[i+1:]
		}
		fields := strings.Fields(rest) // value [timestamp]
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			out[name] += v
		}
	}
	return out
}

// benchRun is one run of the workload against a target.
type benchRun struct {
	cfg      *benchConfig
	client   *benchClient
	work     benchWorkload
	res      *benchResult
	progress io.Writer

	jobs        []benchJob
	submitLat   []time.Duration
	firstSubmit time.Time // when the first submit request was sent
}

// run submits every job, hammers the status endpoint if asked, and polls
// until every job is terminal or the timeout passes, filling r.res.
func (r *benchRun) run(ctx context.Context) {
	runCtx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	start := time.Now()
	r.submitAll(runCtx)
	r.res.SubmitSeconds = time.Since(start).Seconds()
	r.res.setSubmit(r.submitLat)
	fmt.Fprintf(r.progress, "bench: submitted %d jobs in %.2fs; waiting for them\n", r.res.JobsSubmitted, r.res.SubmitSeconds)

	var h *benchHammer
	if ids := r.submittedIDs(); r.cfg.StatusRPS > 0 && len(ids) > 0 {
		h = startBenchHammer(ctx, r.client, ids, r.cfg.StatusRPS, int64(r.cfg.StatusRPS)*int64(r.cfg.Timeout/time.Second+1))
	}
	last, ok := r.pollAll(runCtx)
	if h != nil {
		r.res.setHammer(h.finish())
	}
	if ok && r.res.JobsSubmitted == r.cfg.Jobs {
		wall := last.Sub(r.firstSubmit)
		r.res.WallSeconds = wall.Seconds()
		r.res.ImagesPerSecond = float64(r.res.Images) / wall.Seconds()
	}
	r.res.Pass = len(r.res.Failures) == 0 && r.res.FailuresOmitted == 0
}

// submitAll submits the jobs with SubmitConcurrency workers, recording each
// submit's latency (retries included).
func (r *benchRun) submitAll(ctx context.Context) {
	r.jobs = make([]benchJob, r.cfg.Jobs)
	next := make(chan int)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(r.cfg.SubmitConcurrency, r.cfg.Jobs) {
		wg.Go(func() {
			for j := range next {
				body, job := r.work.build(j)
				t := time.Now()
				id, retries, err := r.client.submit(ctx, body)
				lat := time.Since(t)
				mu.Lock()
				if r.firstSubmit.IsZero() || t.Before(r.firstSubmit) {
					r.firstSubmit = t
				}
				r.res.SubmitRetries += retries
				r.res.FailingImages += job.failing
				if err != nil {
					r.res.fail(fmt.Sprintf("job #%d: %v", j, err))
				} else {
					job.id = id
					r.jobs[j] = job
					r.submitLat = append(r.submitLat, lat)
					r.res.JobsSubmitted++
				}
				mu.Unlock()
			}
		})
	}
	for j := range r.cfg.Jobs {
		if ctx.Err() != nil {
			mu.Lock()
			r.res.fail(fmt.Sprintf("submitting: %v after %d of %d jobs", ctx.Err(), j, r.cfg.Jobs))
			mu.Unlock()
			break
		}
		next <- j
	}
	close(next)
	wg.Wait()
}

func (r *benchRun) submittedIDs() []uint64 {
	var ids []uint64
	for _, j := range r.jobs {
		if j.id != 0 {
			ids = append(ids, j.id)
		}
	}
	return ids
}

// pollAll polls every submitted job that is not yet terminal, one round per
// PollInterval, and checks each as it ends. It returns when the last job
// was seen terminal (ok) or when ctx ends (not ok).
func (r *benchRun) pollAll(ctx context.Context) (last time.Time, ok bool) {
	pending := 0
	for _, j := range r.jobs {
		if j.id != 0 {
			pending++
		}
	}
	tick := time.NewTicker(r.cfg.PollInterval)
	defer tick.Stop()
	report := time.Now()
	for pending > 0 {
		select {
		case <-ctx.Done():
			r.res.fail(fmt.Sprintf("timeout: %d of %d jobs not terminal after %s", pending, r.res.JobsSubmitted, r.cfg.Timeout))
			return last, false
		case <-tick.C:
		}
		for i := range r.jobs {
			if j := &r.jobs[i]; j.id != 0 && !j.done && r.poll(ctx, j) {
				last = time.Now()
				pending--
			}
		}
		if time.Since(report) >= 10*time.Second {
			report = time.Now()
			fmt.Fprintf(r.progress, "bench: %d of %d jobs terminal\n", r.res.JobsSubmitted-pending, r.res.JobsSubmitted)
		}
	}
	return last, true
}

// poll asks for one job's status; true once the job is terminal.
func (r *benchRun) poll(ctx context.Context, j *benchJob) bool {
	code, st, err := r.client.status(ctx, j.id)
	if err != nil || code != http.StatusOK {
		if ctx.Err() == nil {
			r.res.PollErrors++
		}
		return false
	}
	switch st.Status {
	case "ongoing":
		return false
	case "completed":
		r.res.JobsCompleted++
	case "failed":
		r.res.JobsFailed++
	}
	j.done = true
	if err := j.check(st); err != nil {
		r.res.fail(err.Error())
	}
	return true
}

// check compares a terminal status with what the job's inputs imply:
// completed without failing images, else failed listing exactly the stores
// with a failing image, each once.
func (j *benchJob) check(st benchStatus) error {
	if got := strings.Trim(string(st.JobID), `"`); got != strconv.FormatUint(j.id, 10) {
		return fmt.Errorf("job %d: answer names job_id %s", j.id, st.JobID)
	}
	if len(j.wantFailed) == 0 {
		if st.Status != "completed" || len(st.Error) > 0 {
			return fmt.Errorf("job %d: status %q with %d errors, want completed", j.id, st.Status, len(st.Error))
		}
		return nil
	}
	if st.Status != "failed" {
		return fmt.Errorf("job %d: status %q, want failed (stores %v)", j.id, st.Status, j.wantFailed)
	}
	var got []string
	for _, e := range st.Error {
		got = append(got, e.StoreID)
	}
	slices.Sort(got)
	if !slices.Equal(got, j.wantFailed) {
		return fmt.Errorf("job %d: failed stores %v, want %v (each once)", j.id, got, j.wantFailed)
	}
	return nil
}

// benchHammer issues status requests at a fixed rate, open loop: a
// dispatcher enqueues requests on schedule whatever the answers do, and a
// pool of workers sends them. Latency runs from enqueueing to the end of
// the answer, so time spent waiting for a free worker counts. A request
// that finds the queue full is dropped and counted.
type benchHammer struct {
	client *benchClient
	ids    []uint64
	rps    int
	limit  int64 // requests in all
	start  time.Time
	queue  chan time.Time
	stop   chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	lat     []time.Duration
	errors  atomic.Int64
	sent    int64 // dispatcher only until finish
	dropped int64 // dispatcher only until finish
	end     time.Time
}

type benchHammerStats struct {
	lat           []time.Duration
	sent, dropped int64
	errors        int64
	elapsed       time.Duration
}

func startBenchHammer(ctx context.Context, c *benchClient, ids []uint64, rps int, limit int64) *benchHammer {
	h := &benchHammer{client: c, ids: ids, rps: rps, limit: limit, start: time.Now(),
		queue: make(chan time.Time, 4096), stop: make(chan struct{})}
	workers := min(max(rps/20, 4), 256)
	for range workers {
		h.wg.Go(func() { h.work(ctx) })
	}
	h.wg.Go(h.dispatch)
	return h
}

func (h *benchHammer) dispatch() {
	defer close(h.queue)
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for h.sent < h.limit {
		select {
		case <-h.stop:
			return
		case now := <-t.C:
			due := min(int64(now.Sub(h.start).Seconds()*float64(h.rps)), h.limit)
			for ; h.sent < due; h.sent++ {
				select {
				case h.queue <- time.Now():
				default:
					h.dropped++
				}
			}
		}
	}
}

func (h *benchHammer) work(ctx context.Context) {
	var lat []time.Duration
	defer func() {
		h.mu.Lock()
		h.lat = append(h.lat, lat...)
		h.mu.Unlock()
	}()
	for t := range h.queue {
		select {
		case <-h.stop:
			continue // the run is over: drop what is still queued
		default:
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		code, err := h.client.statusCode(rctx, h.ids[rand.N(len(h.ids))])
		cancel()
		lat = append(lat, time.Since(t))
		if err != nil || code != http.StatusOK {
			h.errors.Add(1)
		}
	}
}

// finish stops the hammer, waits for requests in flight, and returns what
// it measured.
func (h *benchHammer) finish() benchHammerStats {
	end := time.Now()
	close(h.stop)
	h.wg.Wait()
	return benchHammerStats{lat: h.lat, sent: h.sent, dropped: h.dropped, errors: h.errors.Load(), elapsed: end.Sub(h.start)}
}

// benchResources is the service's CPU time and peak memory over a run,
// and for an in-process service how long runnable goroutines waited for a
// CPU (the Go scheduler's latency) and how many GC cycles ran.
type benchResources struct {
	cpuSeconds *float64
	peakRSS    *float64
	scope      string
	schedP50   *float64 // milliseconds
	schedP99   *float64 // milliseconds
	gcCycles   *float64
}

// benchMeter measures the service's resources: of this process for an
// in-process service, else from the target's /metrics, sampled every
// second for the peak.
type benchMeter struct {
	self    bool
	cpu0    time.Duration
	rt0     []rtmetrics.Sample
	client  *benchClient
	cancel  context.CancelFunc
	done    chan struct{}
	samples int
	first   promSample
	last    promSample
	peak    float64
}

func startBenchMeter(ctx context.Context, self bool, client *benchClient) *benchMeter {
	m := &benchMeter{self: self, client: client, done: make(chan struct{})}
	if self {
		resetPeakRSS()
		m.cpu0 = processCPU()
		m.rt0 = readRuntimeMetrics()
		close(m.done)
		return m
	}
	ctx, m.cancel = context.WithCancel(ctx)
	m.sample(ctx)
	go m.loop(ctx)
	return m
}

func (m *benchMeter) loop(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.sample(ctx)
		}
	}
}

func (m *benchMeter) sample(ctx context.Context) {
	s, ok := m.client.scrape(ctx)
	if !ok {
		return
	}
	if _, has := s["process_cpu_seconds_total"]; !has {
		return
	}
	if m.first == nil {
		m.first = s
	}
	m.last = s
	m.peak = math.Max(m.peak, s["process_resident_memory_bytes"])
	m.samples++
}

func (m *benchMeter) finish() benchResources {
	if m.self {
		cpu := (processCPU() - m.cpu0).Seconds()
		res := benchResources{cpuSeconds: &cpu, scope: "this process: service, load generator and image server together"}
		if hwm, ok := peakRSS(); ok {
			res.peakRSS = &hwm
		}
		res.setRuntime(m.rt0, readRuntimeMetrics())
		return res
	}
	m.cancel()
	<-m.done
	m.sample(context.Background())
	if m.samples == 0 {
		return benchResources{scope: "n/a: the target exposes no process metrics"}
	}
	cpu := m.last["process_cpu_seconds_total"] - m.first["process_cpu_seconds_total"]
	peak := m.peak
	return benchResources{cpuSeconds: &cpu, peakRSS: &peak, scope: "the target's /metrics (RSS sampled every second)"}
}

// The runtime metrics an in-process run reports.
const (
	rtSchedLatency = "/sched/latencies:seconds"
	rtGCCycles     = "/gc/cycles/total:gc-cycles"
)

func readRuntimeMetrics() []rtmetrics.Sample {
	s := []rtmetrics.Sample{{Name: rtSchedLatency}, {Name: rtGCCycles}}
	rtmetrics.Read(s)
	return s
}

// setRuntime fills the scheduler latency percentiles and GC cycles from two
// readings of the runtime's metrics.
func (r *benchResources) setRuntime(before, after []rtmetrics.Sample) {
	if after[0].Value.Kind() == rtmetrics.KindFloat64Histogram && before[0].Value.Kind() == rtmetrics.KindFloat64Histogram {
		h0, h1 := before[0].Value.Float64Histogram(), after[0].Value.Float64Histogram()
		r.schedP50, r.schedP99 = histPercentileMs(h0, h1, 50), histPercentileMs(h0, h1, 99)
	}
	if after[1].Value.Kind() == rtmetrics.KindUint64 {
		n := float64(after[1].Value.Uint64() - before[1].Value.Uint64())
		r.gcCycles = &n
	}
}

// histPercentileMs returns the p-th percentile, in milliseconds, of the
// observations a runtime histogram gained between h0 and h1: the upper
// bound of the bucket it falls in. nil when there were none.
func histPercentileMs(h0, h1 *rtmetrics.Float64Histogram, p float64) *float64 {
	if len(h0.Counts) != len(h1.Counts) {
		return nil
	}
	var total uint64
	for i := range h1.Counts {
		total += h1.Counts[i] - h0.Counts[i]
	}
	if total == 0 {
		return nil
	}
	want := uint64(math.Ceil(p / 100 * float64(total)))
	var seen uint64
	for i := range h1.Counts {
		if seen += h1.Counts[i] - h0.Counts[i]; seen >= want {
			upper := h1.Buckets[i+1]
			if math.IsInf(upper, 1) {
				upper = h1.Buckets[i]
			}
			ms := upper * 1000
			return &ms
		}
	}
	return nil
}

// processCPU returns the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// resetPeakRSS resets the kernel's high-water mark of this process's
// resident set (Linux 4.0+), so the peak read later belongs to the run.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS reads VmHWM, the peak resident set, from /proc/self/status.
func peakRSS() (float64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb * 1024, err == nil
		}
	}
	return 0, false
}

// startBenchProfile starts a CPU profile into path ("" = none) and returns
// the function that stops it.
func startBenchProfile(path string) (func() error, error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// benchResult is everything a run measured. Its JSON keys are stable.
// Pointers are null when the target does not expose the number.
type benchResult struct {
	Mode           string  `json:"mode"` // "in-process" or "url"
	Target         string  `json:"target"`
	GPUPause       string  `json:"gpu_pause"` // the in-process service's; "unknown" with --url
	Jobs           int     `json:"jobs"`
	VisitsPerJob   int     `json:"visits_per_job"`
	ImagesPerVisit int     `json:"images_per_visit"`
	Images         int     `json:"images"`
	FailingImages  int     `json:"failing_images"`
	FailRate       float64 `json:"fail_rate"`
	ImageBytes     int     `json:"image_bytes"`
	ImageHosts     int     `json:"image_hosts"`
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

	JobsCompleted int `json:"jobs_completed"`
	JobsFailed    int `json:"jobs_failed"`

	EventsAppended  *float64 `json:"events_appended"` // events in messages the engine appended
	EventMessages   *float64 `json:"event_messages"`  // messages the engine appended
	ImagesProcessed *float64 `json:"images_processed"`
	ImagesFailed    *float64 `json:"images_failed"`
	ImageRequests   int64    `json:"image_requests"` // served by the bench's image server

	CPUSeconds     *float64 `json:"cpu_seconds"`
	PeakRSSBytes   *float64 `json:"peak_rss_bytes"`
	ResourcesScope string   `json:"resources_scope"`
	// In process only: how long runnable goroutines waited for a CPU
	// (bucket upper bounds of the runtime's histogram), and GC cycles.
	SchedLatencyP50Ms *float64 `json:"sched_latency_p50_ms"`
	SchedLatencyP99Ms *float64 `json:"sched_latency_p99_ms"`
	GCCycles          *float64 `json:"gc_cycles"`

	Pass            bool     `json:"pass"`
	Failures        []string `json:"failures"`
	FailuresOmitted int      `json:"failures_omitted"`
}

func newBenchResult(cfg *benchConfig) *benchResult {
	mode, pause := "in-process", ""
	if cfg.URL != "" {
		mode, pause = "url", "unknown"
	}
	return &benchResult{
		Mode: mode, GPUPause: pause, Jobs: cfg.Jobs, VisitsPerJob: cfg.Visits, ImagesPerVisit: cfg.Images,
		Images: cfg.Jobs * cfg.Visits * cfg.Images, FailRate: cfg.FailRate, ImageBytes: cfg.ImageBytes, ImageHosts: cfg.ImageHosts,
		Stores: len(cfg.stores), StatusRPSTarget: cfg.StatusRPS, Failures: []string{},
	}
}

// fail records a mismatch; the first 20 are kept.
func (r *benchResult) fail(msg string) {
	if len(r.Failures) >= 20 {
		r.FailuresOmitted++
		return
	}
	r.Failures = append(r.Failures, msg)
}

func (r *benchResult) setSubmit(lat []time.Duration) {
	r.SubmitP50Ms, r.SubmitP99Ms, r.SubmitMaxMs = latencyMs(lat)
}

func (r *benchResult) setHammer(s benchHammerStats) {
	r.StatusRequests = int64(len(s.lat))
	r.StatusErrors = s.errors
	r.StatusDropped = s.dropped
	if s.elapsed > 0 {
		r.StatusRPSAchieved = float64(len(s.lat)) / s.elapsed.Seconds()
	}
	r.StatusP50Ms, r.StatusP99Ms, r.StatusMaxMs = latencyMs(s.lat)
}

func (r *benchResult) setResources(res benchResources) {
	r.CPUSeconds, r.PeakRSSBytes, r.ResourcesScope = res.cpuSeconds, res.peakRSS, res.scope
	r.SchedLatencyP50Ms, r.SchedLatencyP99Ms, r.GCCycles = res.schedP50, res.schedP99, res.gcCycles
}

// setEvents fills the event and image counters from the difference of two
// scrapes of the target's /metrics, when it exposes them.
func (r *benchResult) setEvents(before, after promSample, ok bool) {
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
}

// latencyMs returns the 50th and 99th percentiles and the maximum, in
// milliseconds. It sorts lat.
func latencyMs(lat []time.Duration) (p50, p99, worst float64) {
	if len(lat) == 0 {
		return 0, 0, 0
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return ms(percentile(lat, 50)), ms(percentile(lat, 99)), ms(lat[len(lat)-1])
}

// percentile returns the nearest-rank p-th percentile of sorted, which must
// not be empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// writeTable prints the result for people.
func (r *benchResult) writeTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	row("target", "%s (%s)", r.Target, r.Mode)
	row("workload", "%d jobs x %d visits x %d images = %d images, %d stores, %d failing (rate %g)",
		r.Jobs, r.VisitsPerJob, r.ImagesPerVisit, r.Images, r.Stores, r.FailingImages, r.FailRate)
	row("images", "%d bytes each from %d host(s); gpu pause %s", r.ImageBytes, r.ImageHosts, r.GPUPause)
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
	row("poll errors", "%d", r.PollErrors)
	row("events appended", "%s in %s messages", optNum(r.EventsAppended, "%.0f"), optNum(r.EventMessages, "%.0f"))
	row("images (service)", "%s processed, %s failed; %d image requests served", optNum(r.ImagesProcessed, "%.0f"), optNum(r.ImagesFailed, "%.0f"), r.ImageRequests)
	row("cpu", "%s s", optNum(r.CPUSeconds, "%.2f"))
	row("peak rss", "%s MiB", optNum(mib(r.PeakRSSBytes), "%.1f"))
	row("measured on", "%s", r.ResourcesScope)
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

func benchSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func benchSnippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
