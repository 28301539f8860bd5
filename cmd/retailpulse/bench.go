package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/retailpulse/retailpulse/cmd/retailpulse/internal/loadgen"
	"github.com/retailpulse/retailpulse/storemaster"
)

// `retailpulse bench` runs the load generator (package loadgen) against an
// in-process service or --url. This file is the command: its flags, their
// checks, and the in-process service it starts when there is no --url.

// benchConfig is everything `retailpulse bench` takes.
type benchConfig struct {
	loadgen.Config
	StoreIDs string // comma-separated; "" = every id of the sample store master
	// ServeImages: run only the image host, on these comma-separated
	// addresses; ImageHost: use such a host, at these base URLs.
	ServeImages string
	ImageHost   string
	JSON        bool
	KeepData    bool
	// SSEReader: where the event streams are read, "process" or "inline";
	// ReadStreams: run only a reader of event streams on this service.
	SSEReader   string
	ReadStreams string

	serveArgs []string // service flags given on the command line, passed through
}

// benchServeFlags are the flags bench passes to the in-process service.
var benchServeFlags = []struct{ name, usage string }{
	{"gpu-pause", "service: pause per image, MIN-MAX, a duration or 0 (default: the service's, 100ms-400ms)"},
	{"fsync", "service: always, or an interval such as 1s (default: the service's, always)"},
	{"job-slots", "service: jobs processed at once (default: the service's)"},
	{"image-slots", "service: images processed at once (default: the service's)"},
	{"min-image-slots", "service: the adaptive governor's floor (default: the service's)"},
	{"sched-latency-target", "service: adaptive image slots' scheduler latency target, 0 = fixed (default: the service's)"},
	{"store-concurrency", "service: images processed at once per store of a job (default: the service's)"},
	{"append-linger", "service: how long a job waits for more outcomes before appending (default: the service's)"},
	{"append-rate", "service: appends per second the jobs aim to stay under together, 0 = no bound (default: the service's)"},
	{"gc-floor", "service: heap size garbage collection lets build up while live data is small, 0 = Go's default pace (default: the service's)"},
}

// benchPhotoBytes is the size of a --photo image unless --image-bytes says
// otherwise: a 12-megapixel camera JPEG.
const benchPhotoBytes = 2_500_000

// benchSampleStores are the store ids of the built-in sample store master.
// Only the first two are also in the customer's full store master: against
// a service loaded with it, pass --store-ids S00339218,S01408764.
var benchSampleStores = []string{
	"S00339218", "S01408764", "S00000001", "S00000002", "S00000003", "S00000004", "S00000005",
	"S00000006", "S00000007", "S00000008", "S00000009", "S00000010", "S00000011", "S00000012",
	"S00000013", "S00000014", "S00000015", "S00000016", "S00000017", "S00000018",
}

func (cfg *benchConfig) flagSet(stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("retailpulse bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.URL, "url", "", "target an already-running service at this base URL; empty = start one in process")
	fs.IntVar(&cfg.Jobs, "jobs", 20, "jobs to submit")
	fs.IntVar(&cfg.Visits, "visits", 10, "visits per job")
	fs.IntVar(&cfg.Images, "images", 50, "images per visit")
	fs.Float64Var(&cfg.FailRate, "fail-rate", 0, "fraction of images that point at a 404")
	fs.IntVar(&cfg.ImageBytes, "image-bytes", 100_000, "size of each served image (a 640x480 JPEG padded after its end marker); 2500000 with --photo")
	fs.BoolVar(&cfg.Photo, "photo", false, "serve a camera-like photo: a 4032x3024 JPEG with a high-entropy body")
	fs.IntVar(&cfg.HeaderOffsetKB, "header-offset", 0, "KiB of metadata (APP1/EXIF-like segments) before the JPEG frame header")
	fs.BoolVar(&cfg.HostIgnoresRange, "host-ignores-range", false, "the image host ignores Range and always serves the whole body (by default it honours Range as S3 and nginx do)")
	fs.IntVar(&cfg.ImageHosts, "image-hosts", 1, "loopback ports the images are spread over (the service limits downloads per host)")
	fs.StringVar(&cfg.ServeImages, "serve-images", "", "run only the image host, on these comma-separated `HOST:PORT`s, until interrupted (with --photo, --header-offset, --image-bytes, --host-ignores-range); for a run whose image host is a process of its own")
	fs.StringVar(&cfg.ImageHost, "image-host", "", "take images from a `URL`s (comma-separated) of a `retailpulse bench --serve-images` process instead of serving them in this one")
	fs.StringVar(&cfg.StoreIDs, "store-ids", "", "store ids the visits cycle through, comma-separated; empty = the 20 ids of the sample store master")
	fs.IntVar(&cfg.SubmitConcurrency, "submit-concurrency", 4, "submits in flight at once")
	fs.IntVar(&cfg.StatusRPS, "status-rps", 0, "status requests per second issued against random jobs while they run (0 = none)")
	fs.IntVar(&cfg.SSEStreams, "sse-streams", 0, "event streams (GET /api/jobs/{id}/events) held open on the jobs while they run, spread evenly over them, each read to its job_completed (0 = none)")
	fs.StringVar(&cfg.SSEReader, "sse-reader", "process", "where the event streams are read: process (a `retailpulse bench --read-streams` process of their own, as subscribers are other programs than the one polling status) or inline (in this process)")
	fs.StringVar(&cfg.ReadStreams, "read-streams", "", "run only a reader of event streams on the service at this `URL`, for a bench process: it opens K streams on job JOB for each \"JOB K\" line of standard input and prints its report as JSON when the input ends and the streams have ended (bounded by --timeout)")
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
	imageBytesSet := false
	var hostFlags []string // flags describing the images, set explicitly
	fs.Visit(func(f *flag.Flag) {
		imageBytesSet = imageBytesSet || f.Name == "image-bytes"
		switch f.Name {
		case "image-bytes", "photo", "header-offset", "host-ignores-range", "image-hosts":
			hostFlags = append(hostFlags, "--"+f.Name)
		}
		for _, sf := range benchServeFlags {
			if sf.name == f.Name {
				cfg.serveArgs = append(cfg.serveArgs, "--"+f.Name, f.Value.String())
			}
		}
	})
	if cfg.Photo && !imageBytesSet {
		cfg.ImageBytes = benchPhotoBytes
	}
	if cfg.ImageHost != "" {
		if len(hostFlags) > 0 {
			return nil, fmt.Errorf("%s describes the images bench serves; with --image-host the host's own flags do (give them to --serve-images)", hostFlags[0])
		}
		for _, u := range strings.Split(cfg.ImageHost, ",") {
			pu, err := url.Parse(strings.TrimSpace(u))
			if err != nil || pu.Scheme != "http" || pu.Host == "" || (pu.Path != "" && pu.Path != "/") {
				return nil, fmt.Errorf("--image-host: want http://host:port[,…] of a --serve-images process, got %q", u)
			}
			cfg.ImageHostURLs = append(cfg.ImageHostURLs, strings.TrimSuffix(pu.String(), "/"))
		}
	}
	if cfg.ReadStreams != "" {
		only := true
		fs.Visit(func(f *flag.Flag) { only = only && (f.Name == "read-streams" || f.Name == "timeout") })
		if !only {
			return nil, errors.New("--read-streams runs only a reader of event streams: it takes only --timeout")
		}
		if u, err := url.Parse(cfg.ReadStreams); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("--read-streams: want http(s)://host[:port], got %q", cfg.ReadStreams)
		}
		if cfg.Timeout <= 0 {
			return nil, errors.New("--timeout must be positive")
		}
		return cfg, nil
	}
	if cfg.SSEReader != "process" && cfg.SSEReader != "inline" {
		return nil, fmt.Errorf("--sse-reader: want process or inline, got %q", cfg.SSEReader)
	}
	if cfg.ServeImages != "" {
		if cfg.ImageHost != "" || cfg.URL != "" || len(cfg.serveArgs) > 0 {
			return nil, errors.New("--serve-images runs only an image host: it takes none of --url, --image-host or the service's flags")
		}
		return cfg, cfg.Config.ValidateImages()
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (cfg *benchConfig) validate() error {
	cfg.Stores = nil
	for _, id := range strings.Split(cfg.StoreIDs, ",") {
		if id = strings.TrimSpace(id); id != "" {
			cfg.Stores = append(cfg.Stores, id)
		}
	}
	if len(cfg.Stores) == 0 {
		cfg.Stores = benchSampleStores
	}
	if err := cfg.Config.Validate(); err != nil {
		return err
	}
	if cfg.URL != "" {
		// The target's store master is not ours to check.
		return cfg.validateURLMode()
	}
	sample := storemaster.Sample()
	for _, id := range cfg.Stores {
		if _, ok := sample.Lookup(id); !ok {
			return fmt.Errorf("--store-ids: %s is not in the sample store master the in-process service uses", id)
		}
	}
	_, err := cfg.serveConfig("bench-data")
	return err
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
	start := func(ctx context.Context) (loadgen.Service, error) {
		svc, err := startBenchService(ctx, cfg, m.Stderr)
		if err != nil {
			return nil, err // not a nil *benchService in a non-nil interface
		}
		return svc, nil
	}
	if cfg.ReadStreams != "" {
		in := m.Stdin
		if in == nil {
			in = strings.NewReader("")
		}
		if err := loadgen.ReadStreams(ctx, cfg.ReadStreams, cfg.Timeout, in, m.Stdout); err != nil {
			fmt.Fprintf(m.Stderr, "retailpulse bench: %v\n", err)
			return exitError
		}
		return exitOK
	}
	if cfg.SSEStreams > 0 && cfg.SSEReader == "process" {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintf(m.Stderr, "retailpulse bench: --sse-reader process: %v\n", err)
			return exitError
		}
		cfg.StreamsCommand = []string{exe, "bench", "--timeout", cfg.Timeout.String(), "--read-streams"}
	}
	if cfg.ServeImages != "" {
		var addrs []string
		for _, a := range strings.Split(cfg.ServeImages, ",") {
			addrs = append(addrs, strings.TrimSpace(a))
		}
		hc := loadgen.HostConfig{ImageBytes: cfg.ImageBytes, Photo: cfg.Photo, HeaderOffsetKB: cfg.HeaderOffsetKB, IgnoresRange: cfg.HostIgnoresRange}
		if err := loadgen.ServeImages(ctx, hc, addrs, m.Stdout); err != nil {
			fmt.Fprintf(m.Stderr, "retailpulse bench: %v\n", err)
			return exitError
		}
		return exitOK
	}
	res, err := loadgen.Run(ctx, &cfg.Config, start, m.Stderr)
	if err != nil {
		fmt.Fprintf(m.Stderr, "retailpulse bench: %v\n", err)
		return exitError
	}
	if cfg.JSON {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(res)
	} else {
		err = res.WriteTable(m.Stdout)
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

// benchService is an in-process service started for one run: the
// loadgen.Service of `retailpulse bench` without --url.
type benchService struct {
	app      *App
	url      string
	gpuPause string
	dataDir  string
	keep     bool
	stderr   io.Writer
	stopGC   func() // the garbage collector's pacing (gctune.go)
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
	log := newLogger(stderr, sc.LogLevel, "text")
	app, err := NewApp(ctx, sc, log)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start service: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &benchService{app: app, url: "http://" + app.Addr(), gpuPause: sc.GPUPause, dataDir: dir,
		keep: cfg.KeepData, stderr: stderr, stopGC: startGCTuner(runCtx, sc.GCFloor, os.Getenv, log), cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- app.Run(runCtx) }()
	if err := s.waitReady(ctx, time.Minute); err != nil {
		s.Stop()
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

// URL implements loadgen.Service.
func (s *benchService) URL() string { return s.url }

// GPUPause implements loadgen.Service.
func (s *benchService) GPUPause() string { return s.gpuPause }

// Stop shuts the service down gracefully and removes its data unless kept.
func (s *benchService) Stop() {
	s.cancel()
	if err := <-s.done; err != nil {
		fmt.Fprintf(s.stderr, "retailpulse bench: service: %v\n", err)
	}
	s.stopGC()
	if s.keep {
		fmt.Fprintf(s.stderr, "retailpulse bench: service data kept in %s\n", s.dataDir)
		return
	}
	os.RemoveAll(s.dataDir)
}
