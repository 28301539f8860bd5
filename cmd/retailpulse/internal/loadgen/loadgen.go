// Package loadgen is the load generator behind `retailpulse bench` for the
// service's two API endpoints. It serves its own images on loopback,
// submits a workload, polls every job until it is terminal, optionally
// hammers the status endpoint at a fixed rate, checks that every job ended
// as its inputs imply, and reports throughput, latencies and the service's
// resource use.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Config is one run. Its checks name the bench command's flags.
type Config struct {
	URL              string // target service; "" = an in-process service, started by Run's start
	Jobs             int
	Visits           int // per job
	Images           int // per visit
	FailRate         float64
	ImageBytes       int
	ImageHosts       int
	Photo            bool // serve a camera-like 4032x3024 JPEG with a high-entropy body
	HeaderOffsetKB   int  // KiB of metadata before the JPEG frame header
	HostIgnoresRange bool // the image host answers every request with the whole body
	// ImageHostURLs, when set, are the base URLs of an image host running
	// in another process (ServeImages; ports of one process): Run starts
	// none, and takes the image's description and the bytes served from
	// the host's counters. ImageBytes, Photo, HeaderOffsetKB,
	// HostIgnoresRange and ImageHosts then do not apply.
	ImageHostURLs     []string
	Stores            []string // store ids the visits cycle through; not empty
	SubmitConcurrency int
	StatusRPS         int
	SSEStreams        int // event streams held open on the jobs while they run, spread evenly
	// StreamsCommand, when set, reads the event streams in a process of
	// their own: the command (with the service's URL appended) runs
	// ReadStreams. Empty: they are read in this process.
	StreamsCommand []string
	PollInterval   time.Duration
	Timeout        time.Duration
	Seed           uint64
	CPUProfile     string // CPU profile file; "" = none
}

// MaxImages bounds the images of a run.
const MaxImages = 10_000_000

// MaxImageBytes bounds the served image and its metadata: the image host
// holds one copy in memory.
const MaxImageBytes = 256 << 20

// Validate checks the workload's numbers and its stores.
func (cfg *Config) Validate() error {
	checks := []struct {
		ok   bool
		what string
	}{
		{cfg.Jobs > 0 && cfg.Visits > 0 && cfg.Images > 0, "--jobs, --visits and --images must be positive"},
		{cfg.Jobs <= MaxImages && cfg.Visits <= MaxImages && cfg.Images <= MaxImages &&
			int64(cfg.Jobs)*int64(cfg.Visits)*int64(cfg.Images) <= MaxImages,
			fmt.Sprintf("at most %d images in all", MaxImages)},
		{cfg.FailRate >= 0 && cfg.FailRate <= 1, "--fail-rate must be between 0 and 1"},
		{cfg.ImageHosts > 0 && cfg.ImageHosts <= 64, "--image-hosts must be between 1 and 64"},
		{cfg.SubmitConcurrency > 0, "--submit-concurrency must be positive"},
		{cfg.StatusRPS >= 0 && cfg.StatusRPS <= 100_000, "--status-rps must be between 0 and 100000"},
		{cfg.SSEStreams >= 0 && cfg.SSEStreams <= 100_000, "--sse-streams must be between 0 and 100000"},
		{cfg.PollInterval > 0, "--poll-interval must be positive"},
		{cfg.Timeout > 0, "--timeout must be positive"},
		{len(cfg.Stores) > 0, "no store ids"},
	}
	for _, c := range checks {
		if !c.ok {
			return errors.New(c.what)
		}
	}
	return cfg.ValidateImages()
}

// ValidateImages checks the numbers describing the served image.
func (cfg *Config) ValidateImages() error {
	switch {
	case cfg.ImageBytes < 0 || cfg.ImageBytes > MaxImageBytes:
		return fmt.Errorf("--image-bytes must be between 0 and %d", MaxImageBytes)
	case cfg.HeaderOffsetKB < 0 || cfg.HeaderOffsetKB > MaxImageBytes>>10:
		return fmt.Errorf("--header-offset must be between 0 and %d (KiB)", MaxImageBytes>>10)
	}
	return nil
}

// Service is an in-process service started for one run.
type Service interface {
	URL() string      // its base URL
	GPUPause() string // its --gpu-pause, reported with the result
	Stop()            // shuts it down; called once, when the run is over
}

// StartFunc starts an in-process service and returns once it is ready.
type StartFunc func(context.Context) (Service, error)

// Run sets up the image server and the target (started with start when
// cfg.URL is empty), runs the workload and measures it, writing progress
// lines to progress. cfg must be valid. An error means the run could not
// be made; a run whose jobs ended wrongly returns a result with Pass false.
func Run(ctx context.Context, cfg *Config, start StartFunc, progress io.Writer) (*Result, error) {
	progress = &syncWriter{w: progress} // a stream reader process writes to it too
	res := newResult(cfg)
	var hostURLs []string
	var hostStatsNow func(context.Context) (hostStats, error)
	if len(cfg.ImageHostURLs) > 0 {
		remote := &remoteHost{urls: cfg.ImageHostURLs, client: &http.Client{}} // each request has its own deadline
		hostURLs, hostStatsNow = remote.urls, remote.stats
	} else {
		hc := HostConfig{ImageBytes: cfg.ImageBytes, Photo: cfg.Photo, HeaderOffsetKB: cfg.HeaderOffsetKB, IgnoresRange: cfg.HostIgnoresRange}
		imgs, err := startImageHost(hc.spec(), cfg.ImageHosts, cfg.HostIgnoresRange)
		if err != nil {
			return nil, err
		}
		defer imgs.close()
		hostURLs = imgs.urls
		hostStatsNow = func(context.Context) (hostStats, error) { return imgs.stats(), nil }
	}
	hostBefore, err := hostStatsNow(ctx)
	if err != nil {
		return nil, err
	}
	res.setHostSpec(hostBefore, len(hostURLs), len(cfg.ImageHostURLs) > 0)

	target := cfg.URL
	if target == "" {
		svc, err := start(ctx)
		if err != nil {
			return nil, err
		}
		defer svc.Stop()
		target = svc.URL()
		res.GPUPause = svc.GPUPause()
	}
	res.Target = target

	client := newAPIClient(target)
	defer client.close()
	m := startMeter(ctx, cfg.URL == "", client)
	machine := startMachineMeter()
	before, _ := client.scrape(ctx)
	lag := startLagSampler(ctx, client)
	stopProfile, err := startProfile(cfg.CPUProfile)
	if err != nil {
		m.finish()
		lag.finish()
		return nil, err
	}

	r := &loadRun{cfg: cfg, client: client, res: res, progress: progress,
		work: workload{images: hostURLs, stores: cfg.Stores, visits: cfg.Visits, perVisit: cfg.Images, failRate: cfg.FailRate, seed: cfg.Seed}}
	r.run(ctx)
	res.setMachine(machine.finish())

	if err := stopProfile(); err != nil {
		fmt.Fprintf(progress, "retailpulse bench: cpu profile: %v\n", err)
	}
	res.ProjectionLagMaxSeconds = lag.finish()
	res.setResources(m.finish())
	after, ok := client.scrape(ctx)
	res.setEvents(before, after, ok)
	hostAfter, err := hostStatsNow(ctx)
	if err != nil {
		return nil, err
	}
	res.setImageHost(hostAfter.Requests-hostBefore.Requests, hostAfter.BytesServed-hostBefore.BytesServed)
	return res, nil
}

// syncWriter serializes writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
