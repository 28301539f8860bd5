package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2 // bad flags or configuration
)

// serveConfig is everything `retailpulse serve` takes. Each flag has an
// environment fallback RETAILPULSE_<FLAG_IN_UPPER_SNAKE>.
type serveConfig struct {
	Addr                 string
	DataDir              string
	Stores               string
	AllowPrivateNetworks bool
	GPUPause             string
	pauseMin, pauseMax   time.Duration
	NATSURL              string
	NATSConnectTimeout   time.Duration
	UpdateStream         bool
	SubmitTimeout        time.Duration
	Replicas             int
	Fsync                string
	syncAlways           bool
	syncInterval         time.Duration
	MaxStreamBytes       int64
	AckWait              time.Duration
	JobSlots             int
	WorkerOnly           bool
	ImageSlots           int
	MinImageSlots        int
	SchedLatencyTarget   time.Duration
	StoreConcurrency     int
	MaxAttempts          int
	ShutdownTimeout      time.Duration
	MaxBodyBytes         int64
	GCFloor              int64
	MaxVisits            int
	MaxImages            int
	MaxURLLength         int
	MaxStoreIDLength     int
	MaxVisitTimeLength   int
	MaxPendingSubmits    int
	MaxPendingResults    int
	MaxQueuedJobs        int
	ImageTimeout         time.Duration
	PerHostConcurrency   int
	AppendLinger         time.Duration
	AppendRate           int
	APIToken             string
	LogLevel             string
	DebugListen          string
	LogFormat            string

	// Event-stream subscribers (subscribers.go).
	MaxStreams         int
	NATSListen         string
	natsHost           string
	natsPort           int
	SubscriberPassword string
	NATSPassword       string
	HandOffStreams     string
	TakeStreams        string
}

// flagSet registers cfg's flags on a new FlagSet named name.
func (cfg *serveConfig) flagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s [flags]\n\nRuns the service.\n%s\nFlags:\n", name, envHelp)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Addr, "addr", ":8080", "HTTP listen address")
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "directory for the read model database (readmodel.db) and, without --nats-url, the embedded NATS server's data")
	fs.StringVar(&cfg.Stores, "stores", "", "store master CSV (AreaCode,StoreName,StoreID); empty = built-in sample")
	fs.BoolVar(&cfg.AllowPrivateNetworks, "allow-private-networks", false, "permit image URLs on loopback and private addresses (tests, local demos)")
	fs.StringVar(&cfg.GPUPause, "gpu-pause", "100ms-400ms", "pause per image imitating GPU work: MIN-MAX, a single duration, or 0")
	fs.StringVar(&cfg.NATSURL, "nats-url", "", "external NATS server(s), comma-separated; empty = embedded single node")
	fs.DurationVar(&cfg.NATSConnectTimeout, "nats-connect-timeout", 60*time.Second, "how long to keep retrying to reach NATS and open the stream at start before giving up")
	fs.BoolVar(&cfg.UpdateStream, "update-stream", false, "with --nats-url: apply this instance's stream and consumer settings to the shared ones instead of refusing to start when they differ")
	fs.DurationVar(&cfg.SubmitTimeout, "submit-timeout", 5*time.Second, "bound on a request's wait for the event log (a submit, or a read of a job not yet projected); 503 after it")
	fs.IntVar(&cfg.Replicas, "replicas", 1, "stream replicas (3 on an external cluster)")
	fs.StringVar(&cfg.Fsync, "fsync", "always", "embedded server fsync: always, or an interval such as 1s (data-loss window on power loss)")
	cfg.MaxStreamBytes = 10 << 30
	fs.Var((*byteSize)(&cfg.MaxStreamBytes), "max-stream-bytes", "event log byte limit, a `size` such as 10GiB, 512MiB or 1GB; submits answer 503 when it is reached")
	fs.DurationVar(&cfg.AckWait, "ack-wait", 60*time.Second, "time a silent job owner keeps a job before it is redelivered")
	fs.DurationVar(&cfg.ImageTimeout, "image-timeout", 2*time.Minute, "bound on one image's download, all retries included")
	fs.IntVar(&cfg.PerHostConcurrency, "per-host-concurrency", 32, "concurrent downloads from one image host")
	fs.DurationVar(&cfg.AppendLinger, "append-linger", 20*time.Millisecond, "how long a job waits for more image outcomes before appending them (fewer, larger fsyncs)")
	fs.IntVar(&cfg.AppendRate, "append-rate", 100, "appends per second this instance's jobs aim to stay under together: with many jobs at once each waits longer than --append-linger (up to 1s) so they make fewer, larger appends; 0 = no bound")
	fs.IntVar(&cfg.JobSlots, "job-slots", 64, "jobs processed at once by this instance; 0 = API only (submits, reads and streams; other instances on the same log process the jobs)")
	fs.BoolVar(&cfg.WorkerOnly, "worker-only", false, "take jobs only: no API, read model or event streams (serves /healthz, /readyz and /metrics on --addr, uses no --data-dir); needs --nats-url. The adaptive image slots are then off unless --sched-latency-target is given: no API shares the process")
	fs.IntVar(&cfg.ImageSlots, "image-slots", 4096, "images processed at once by this instance: the most the adaptive governor allows, or the fixed number with --sched-latency-target 0")
	fs.IntVar(&cfg.MinImageSlots, "min-image-slots", 128, "the fewest image slots the adaptive governor goes down to (at most --image-slots)")
	fs.DurationVar(&cfg.SchedLatencyTarget, "sched-latency-target", 5*time.Millisecond, "adaptive image slots: lower them while the Go scheduler's latency p99 exceeds this, raise them while it does not and images wait; 0 = fixed --image-slots")
	fs.IntVar(&cfg.StoreConcurrency, "store-concurrency", 64, "images processed at once per store of a job")
	fs.IntVar(&cfg.MaxAttempts, "max-attempts", 5, "deliveries of a job before it is completed as failed")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight images may finish on shutdown")
	cfg.GCFloor = 160 << 20
	fs.Var((*byteSize)(&cfg.GCFloor), "gc-floor", "heap `size` garbage collection lets build up while live data is small (fewer collections, a steadier API under load); Go's own pace above it; 0 = Go's default pace; at most half the container's memory limit or GOMEMLIMIT. GOGC in the environment takes precedence")
	cfg.MaxBodyBytes = 10 << 20
	fs.Var((*byteSize)(&cfg.MaxBodyBytes), "max-body-bytes", "largest submit body (413 above), a `size` such as 10MiB, 64KiB or 1048576")
	fs.IntVar(&cfg.MaxVisits, "max-visits", 10_000, "visits per job")
	fs.IntVar(&cfg.MaxImages, "max-images", 100_000, "images per job")
	fs.IntVar(&cfg.MaxURLLength, "max-url-length", 2048, "characters per image URL")
	fs.IntVar(&cfg.MaxStoreIDLength, "max-store-id-length", 128, "characters per store_id")
	fs.IntVar(&cfg.MaxVisitTimeLength, "max-visit-time-length", 64, "characters per visit_time")
	fs.IntVar(&cfg.MaxPendingSubmits, "max-pending-submits", 256, "submits in progress at once, counted before the body is read (503 above)")
	fs.IntVar(&cfg.MaxPendingResults, "max-pending-results", 16, "/api/results requests in progress at once, each reading a whole job from the log (503 above)")
	fs.IntVar(&cfg.MaxQueuedJobs, "max-queued-jobs", 10_000, "jobs waiting for an owner before submits answer 503 (0 = unbounded)")
	fs.StringVar(&cfg.APIToken, "api-token", "", "require Authorization: Bearer <token> on /api/* (comma-separated for several)")
	cfg.subscriberFlags(fs)
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&cfg.DebugListen, "debug-listen", "", "serve Go's profiles and execution traces (/debug/pprof/) on `HOST:PORT`, apart from the API; empty = off. Keep it on loopback or a private network")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "text or json")
	return fs
}

// parse reads args, then fills every flag not given from its environment
// variable, then validates.
func (cfg *serveConfig) parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flagHelp
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set, given := map[string]bool{}, map[string]bool{} // on the command line; there or in the environment
	fs.Visit(func(f *flag.Flag) { set[f.Name], given[f.Name] = true, true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := envName(f.Name)
		if v := getenv(env); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q (--%s): %v", env, v, f.Name, err))
			}
			given[f.Name] = true
		}
	})
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// A worker serves no API: the adaptive slots, which protect the API's
	// latency, would only hold its throughput back (and, run at a lower CPU
	// priority than an API instance, it sees the scheduler latency the
	// kernel gives it, not the API's). The operator's value stands.
	if cfg.WorkerOnly && !given["sched-latency-target"] {
		cfg.SchedLatencyTarget = 0
	}
	return cfg.validate()
}

// envHelp states the environment fallback rule for serve's flags.
const envHelp = `Every flag of serve falls back to the environment variable RETAILPULSE_<FLAG>: the flag's
name in upper case with "-" as "_", e.g. RETAILPULSE_DATA_DIR for --data-dir. A flag given on
the command line wins over the environment.
`

func envName(flagName string) string {
	return "RETAILPULSE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (cfg *serveConfig) validate() error {
	var err error
	if cfg.pauseMin, cfg.pauseMax, err = parsePause(cfg.GPUPause); err != nil {
		return fmt.Errorf("--gpu-pause: %w", err)
	}
	switch cfg.Fsync {
	case "always":
		cfg.syncAlways = true
	default:
		d, err := time.ParseDuration(cfg.Fsync)
		if err != nil || d <= 0 {
			return fmt.Errorf("--fsync: want \"always\" or a positive duration, got %q", cfg.Fsync)
		}
		cfg.syncInterval = d
	}
	checks := []struct {
		ok   bool
		what string
	}{
		{cfg.Addr != "", "--addr is required"},
		{cfg.DataDir != "", "--data-dir is required (it holds the read model database)"},
		{cfg.Replicas == 1 || cfg.Replicas == 3 || cfg.Replicas == 5, "--replicas must be 1, 3 or 5"},
		{cfg.NATSURL != "" || cfg.Replicas == 1, "--replicas above 1 needs --nats-url (a cluster)"},
		{cfg.MaxStreamBytes >= 1<<20, "--max-stream-bytes must be at least 1 MiB"},
		{cfg.AckWait >= time.Second, "--ack-wait must be at least 1s"},
		{cfg.NATSConnectTimeout > 0, "--nats-connect-timeout must be positive"},
		{cfg.SubmitTimeout >= 100*time.Millisecond, "--submit-timeout must be at least 100ms"},
		{cfg.NATSURL != "" || !cfg.UpdateStream, "--update-stream needs --nats-url (the embedded node always applies its settings)"},
		{cfg.ImageTimeout > 0, "--image-timeout must be positive"},
		{cfg.PerHostConcurrency > 0, "--per-host-concurrency must be positive"},
		{cfg.AppendLinger >= 0 && cfg.AppendLinger <= time.Second, "--append-linger must be between 0 and 1s"},
		{cfg.AppendRate >= 0, "--append-rate must not be negative"},
		{cfg.JobSlots >= 0, "--job-slots must not be negative (0 = API only: take no jobs)"},
		{!cfg.WorkerOnly || cfg.NATSURL != "", "--worker-only needs --nats-url (the log an API instance shares: its --nats-listen or an external NATS)"},
		{!cfg.WorkerOnly || cfg.JobSlots > 0, "--worker-only with --job-slots 0 would do nothing"},
		{cfg.ImageSlots > 0, "--image-slots must be positive"},
		{cfg.MinImageSlots > 0, "--min-image-slots must be positive"},
		{cfg.SchedLatencyTarget >= 0, "--sched-latency-target must not be negative"},
		{cfg.StoreConcurrency > 0, "--store-concurrency must be positive"},
		{cfg.MaxAttempts > 0, "--max-attempts must be positive"},
		{cfg.ShutdownTimeout > 0, "--shutdown-timeout must be positive"},
		{cfg.MaxBodyBytes > 0, "--max-body-bytes must be positive"},
		{cfg.MaxVisits > 0 && cfg.MaxImages > 0 && cfg.MaxURLLength > 0, "--max-visits, --max-images and --max-url-length must be positive"},
		{cfg.MaxStoreIDLength > 0, "--max-store-id-length must be positive"},
		{cfg.MaxVisitTimeLength > 0, "--max-visit-time-length must be positive"},
		{cfg.MaxPendingSubmits > 0, "--max-pending-submits must be positive"},
		{cfg.MaxPendingResults > 0, "--max-pending-results must be positive"},
		{cfg.MaxQueuedJobs >= 0, "--max-queued-jobs must not be negative"},
		{cfg.LogFormat == "text" || cfg.LogFormat == "json", "--log-format must be text or json"},
	}
	for _, c := range checks {
		if !c.ok {
			return errors.New(c.what)
		}
	}
	if _, err := parseLevel(cfg.LogLevel); err != nil {
		return err
	}
	return cfg.validateSubscribers()
}

// parsePause parses "MIN-MAX", a single duration, or "0".
func parsePause(s string) (lo, hi time.Duration, err error) {
	s = strings.TrimSpace(s)
	if s == "0" || s == "" {
		return 0, 0, nil
	}
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = time.ParseDuration(a); err != nil {
		return 0, 0, fmt.Errorf("want MIN-MAX (e.g. 100ms-400ms) or 0: %v", err)
	}
	hi = lo
	if isRange {
		if hi, err = time.ParseDuration(b); err != nil {
			return 0, 0, fmt.Errorf("want MIN-MAX (e.g. 100ms-400ms) or 0: %v", err)
		}
	}
	if lo < 0 || hi < lo {
		return 0, 0, fmt.Errorf("want 0 <= MIN <= MAX, got %q", s)
	}
	return lo, hi, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level: %v", err)
	}
	return l, nil
}

// redacted returns the configuration as log attributes, secrets hidden.
func (cfg *serveConfig) redacted() []any {
	token := ""
	if cfg.APIToken != "" {
		token = "(set)"
	}
	natsURL := cfg.NATSURL
	if natsURL == "" {
		natsURL = "(embedded)"
	}
	return []any{
		"addr", cfg.Addr, "data_dir", cfg.DataDir, "stores", orDefault(cfg.Stores, "(sample)"),
		"allow_private_networks", cfg.AllowPrivateNetworks, "gpu_pause", cfg.GPUPause, "nats_url", natsURL,
		"nats_connect_timeout", cfg.NATSConnectTimeout, "update_stream", cfg.UpdateStream, "submit_timeout", cfg.SubmitTimeout,
		"replicas", cfg.Replicas, "fsync", cfg.Fsync, "max_stream_bytes", cfg.MaxStreamBytes,
		"ack_wait", cfg.AckWait, "image_timeout", cfg.ImageTimeout, "per_host_concurrency", cfg.PerHostConcurrency, "append_linger", cfg.AppendLinger, "append_rate", cfg.AppendRate, "job_slots", cfg.JobSlots, "worker_only", cfg.WorkerOnly, "image_slots", cfg.ImageSlots, "min_image_slots", cfg.MinImageSlots, "sched_latency_target", cfg.SchedLatencyTarget,
		"store_concurrency", cfg.StoreConcurrency, "max_attempts", cfg.MaxAttempts,
		"shutdown_timeout", cfg.ShutdownTimeout, "gc_floor", cfg.GCFloor, "max_body_bytes", cfg.MaxBodyBytes,
		"max_visits", cfg.MaxVisits, "max_images", cfg.MaxImages, "max_url_length", cfg.MaxURLLength,
		"max_store_id_length", cfg.MaxStoreIDLength, "max_visit_time_length", cfg.MaxVisitTimeLength,
		"max_pending_submits", cfg.MaxPendingSubmits, "max_pending_results", cfg.MaxPendingResults, "max_queued_jobs", cfg.MaxQueuedJobs, "api_token", token,
		"max_streams", cfg.MaxStreams, "nats_listen", orDefault(cfg.NATSListen, "(off)"),
		"hand_off_streams", orDefault(cfg.HandOffStreams, "(off)"), "take_streams", orDefault(cfg.TakeStreams, "(off)"),
		"subscriber_password", secret(cfg.SubscriberPassword), "nats_password", secret(cfg.NATSPassword),
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// flagHelp: -h was given; usage is printed, exit 0.
var flagHelp = flag.ErrHelp
