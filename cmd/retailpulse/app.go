package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/retailpulse/retailpulse/actors"
	"github.com/retailpulse/retailpulse/actors/imagefetch"
	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/httpapi"
	"github.com/retailpulse/retailpulse/metrics"
	"github.com/retailpulse/retailpulse/storemaster"
)

// Main is the command. Run is testable: it takes its arguments, output and
// environment instead of the process's.
type Main struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// Run runs a subcommand and returns the process exit code.
func (m *Main) Run(ctx context.Context, args []string) int {
	if m.Getenv == nil {
		m.Getenv = func(string) string { return "" }
	}
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return m.serve(ctx, args)
	case "replay":
		return m.replay(ctx, args)
	case "verify":
		return m.verify(ctx, args)
	case "bench":
		return m.bench(ctx, args)
	case "help":
		fmt.Fprintln(m.Stdout, usage)
		return exitOK
	}
	fmt.Fprintf(m.Stderr, "retailpulse: unknown command %q\n%s\n", cmd, usage)
	return exitUsage
}

const usage = `usage: retailpulse [serve] [flags]   run the service (default)
       retailpulse replay [flags]      rebuild job states from the event log and print them
       retailpulse verify [flags]      rebuild from scratch and compare with the live projection
       retailpulse bench [flags]       load-generate against an in-process service or --url
       retailpulse help                show this help
Run "retailpulse serve -h" for the flags.`

func (m *Main) serve(ctx context.Context, args []string) int {
	var cfg serveConfig
	fs := cfg.flagSet("retailpulse serve", m.Stderr)
	if err := cfg.parse(fs, args, m.Getenv); err != nil {
		if errors.Is(err, flagHelp) {
			return exitOK
		}
		fmt.Fprintf(m.Stderr, "retailpulse: %v\n", err)
		return exitUsage
	}
	log := newLogger(m.Stderr, cfg.LogLevel, cfg.LogFormat)
	app, err := NewApp(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(m.Stderr, "retailpulse: %v\n", err)
		if errors.Is(err, errConfig) {
			return exitUsage
		}
		return exitError
	}
	if err := app.Run(ctx); err != nil {
		log.Error("service stopped", "err", err)
		return exitError
	}
	return exitOK
}

var errConfig = errors.New("configuration")

func newLogger(w io.Writer, level, format string) *slog.Logger {
	l, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// App is one running instance: NATS (embedded or external), the event
// store, the projection, the engine and the HTTP server.
type App struct {
	cfg        serveConfig
	log        *slog.Logger
	lock       *os.File       // data dir lock; nil with an external NATS
	ns         *server.Server // nil with an external NATS
	nc         *nats.Conn
	store      *jsstore.Store
	projection *jsstore.Projection
	engine     *actors.Engine
	fetcher    *imagefetch.Fetcher
	metrics    *metrics.Metrics
	registry   *prometheus.Registry
	httpServer *http.Server
	listener   net.Listener
	stopping   atomic.Bool
	submits    chan struct{}
	admission  *jsstore.Admission

	// Pause overrides the configured GPU pause (tests); set before Run.
	Pause func(context.Context) error
}

// NewApp starts NATS, opens the store and binds the HTTP listener. Nothing
// processes jobs until Run. On error everything started is stopped.
func NewApp(ctx context.Context, cfg serveConfig, log *slog.Logger) (_ *App, err error) {
	a := &App{cfg: cfg, log: log, submits: make(chan struct{}, cfg.MaxPendingSubmits)}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	log.Info("starting retailpulse", cfg.redacted()...)

	stores := storemaster.Sample()
	if cfg.Stores != "" {
		if stores, err = storemaster.LoadFile(cfg.Stores); err != nil {
			return nil, fmt.Errorf("%w: --stores: %v", errConfig, err)
		}
	}
	log.Info("store master loaded", "source", stores.Source(), "stores", stores.Len())

	if cfg.NATSURL == "" {
		if a.lock, err = lockDataDir(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("%w: --data-dir: %v", errConfig, err)
		}
		dir := filepath.Join(cfg.DataDir, "nats")
		a.ns, err = jsstore.StartServer(jsstore.ServerConfig{
			Name: "retailpulse", StoreDir: dir, SyncAlways: cfg.syncAlways, SyncInterval: cfg.syncInterval, Logger: log,
		})
		if err != nil {
			return nil, err
		}
		if a.nc, err = jsstore.ConnectInProcess(a.ns, "retailpulse"); err != nil {
			return nil, fmt.Errorf("connect nats: %w", err)
		}
	} else if a.nc, err = jsstore.Connect(cfg.NATSURL, "retailpulse", log); err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", cfg.NATSURL, err)
	}
	openCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	a.store, err = jsstore.Open(openCtx, a.nc, jsstore.Config{Replicas: cfg.Replicas, MaxBytes: cfg.MaxStreamBytes, AckWait: cfg.AckWait})
	if err != nil {
		return nil, err
	}

	if a.ns != nil {
		// We hold the data dir: jobs delivered and not acked belong to a
		// previous process that is gone. Take them back now rather than after
		// the ack wait.
		if err := a.store.ReclaimJobs(openCtx); err != nil {
			return nil, fmt.Errorf("reclaim jobs: %w", err)
		}
	}
	a.admission = jsstore.NewAdmission(a.store, cfg.MaxQueuedJobs)
	if err := a.admission.Refresh(openCtx); err != nil {
		return nil, err
	}

	a.registry = prometheus.NewRegistry()
	a.metrics = metrics.New(a.registry)
	snapshots, err := a.store.Snapshots(openCtx)
	if err != nil {
		return nil, err
	}
	a.projection = jsstore.NewProjection(a.store, restoreModel(openCtx, snapshots, log), log, func(seq uint64, res events.ApplyResult) {
		a.metrics.ProjectionApplied(seq, res.Applied, res.Duplicates)
	})
	a.projection.EnableSnapshots(snapshots, cfg.SnapshotEvery)

	a.fetcher = imagefetch.New(imagefetch.Config{AllowPrivateNetworks: cfg.AllowPrivateNetworks, UserAgent: "retailpulse/1", TotalTimeout: cfg.ImageTimeout, PerHostConcurrency: cfg.PerHostConcurrency})
	pause := actors.RandomPause(cfg.pauseMin, cfg.pauseMax)
	a.engine, err = actors.NewEngine(actors.Config{
		Log:              a.store,
		Queue:            queue{a.store},
		Fetcher:          a.fetcher,
		KnownStore:       func(id string) bool { _, ok := stores.Lookup(id); return ok },
		Reason:           imagefetch.Reason,
		Pause:            func(ctx context.Context) error { return a.pause(ctx, pause) },
		JobSlots:         cfg.JobSlots,
		ImageSlots:       cfg.ImageSlots,
		StoreConcurrency: cfg.StoreConcurrency,
		MaxAttempts:      cfg.MaxAttempts,
		BatchLinger:      cfg.AppendLinger,
		Heartbeat:        cfg.AckWait / 3,
		DrainTimeout:     cfg.ShutdownTimeout,
		Observer:         a.metrics,
		Logger:           log,
	})
	if err != nil {
		return nil, err
	}

	var tokens []string
	for _, t := range strings.Split(cfg.APIToken, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tokens = append(tokens, t)
		}
	}
	h, err := httpapi.NewHandler(httpapi.Config{
		Jobs:           a,
		CheckURL:       func(raw string) error { return imagefetch.CheckURL(raw, cfg.MaxURLLength) },
		MaxBodyBytes:   cfg.MaxBodyBytes,
		MaxVisits:      cfg.MaxVisits,
		MaxImages:      cfg.MaxImages,
		MaxURLLength:   cfg.MaxURLLength,
		APITokens:      tokens,
		Ready:          a.Ready,
		Instrument:     a.metrics.Instrument,
		MetricsHandler: metrics.Handler(a.registry),
		Logger:         log,
		OnReject:       a.metrics.SubmitRejected,

		MaxStoreIDLength:   cfg.MaxStoreIDLength,
		MaxVisitTimeLength: cfg.MaxVisitTimeLength,
	})
	if err != nil {
		return nil, err
	}
	a.httpServer = httpapi.NewServer(cfg.Addr, h)
	if a.listener, err = net.Listen("tcp", cfg.Addr); err != nil {
		return nil, fmt.Errorf("%w: --addr: %v", errConfig, err)
	}
	return a, nil
}

// restoreModel starts the read model from the latest usable snapshot, or
// empty (full replay) when there is none or it is unusable.
func restoreModel(ctx context.Context, sn *jsstore.Snapshots, log *slog.Logger) *events.ReadModel {
	start := time.Now()
	model, err := sn.Load(ctx)
	switch {
	case err == nil:
		log.Info("read model restored from snapshot", "seq", model.LastSeq(), "took", time.Since(start).Round(time.Millisecond))
		return model
	case errors.Is(err, jsstore.ErrNoSnapshot):
	default:
		log.Warn("ignoring snapshot; replaying the whole log", "err", err)
	}
	return events.NewReadModel()
}

func (a *App) pause(ctx context.Context, def func(context.Context) error) error {
	if a.Pause != nil {
		return a.Pause(ctx)
	}
	if def != nil {
		return def(ctx)
	}
	return nil
}

// queue adapts the store's work consumer to actors.Queue.
type queue struct{ s *jsstore.Store }

func (q queue) NextJob(ctx context.Context) (actors.Delivery, error) { return q.s.NextJob(ctx) }

// Addr returns the HTTP listener's address.
func (a *App) Addr() string { return a.listener.Addr().String() }

// Ready reports whether the instance should receive traffic: the
// projection has caught up with the log and shutdown has not begun.
func (a *App) Ready() bool { return !a.stopping.Load() && a.projection.CaughtUp() }

// Submit implements httpapi.Jobs. It answers events.ErrOverloaded at once
// when MaxPendingSubmits are being stored or MaxQueuedJobs wait for an
// owner, and events.ErrStorageFull when the log is nearly full (the rest is
// kept for running jobs); nothing is stored then.
func (a *App) Submit(ctx context.Context, job *events.JobSubmitted, key string) (uint64, error) {
	select {
	case a.submits <- struct{}{}:
		defer func() { <-a.submits }()
	default:
		a.metrics.SubmitRejected("overloaded")
		return 0, events.ErrOverloaded
	}
	id, err := uint64(0), a.admission.Check()
	if err == nil {
		id, err = a.store.Submit(ctx, job, key)
	}
	if err != nil {
		switch {
		case errors.Is(err, events.ErrStorageFull):
			a.metrics.SubmitRejected("storage_full")
		case errors.Is(err, events.ErrJobTooLarge):
			a.metrics.SubmitRejected("too_large")
		case errors.Is(err, events.ErrOverloaded):
			a.metrics.SubmitRejected("overloaded")
		default:
			a.metrics.SubmitRejected("other")
		}
		return 0, err
	}
	a.admission.Admitted()
	a.metrics.JobSubmitted()
	a.log.Info("job submitted", "job_id", id, "visits", len(job.Visits), "images", job.Images())
	return id, nil
}

// Results implements httpapi.Results: per-image results, read from the
// job's events in the log.
func (a *App) Results(ctx context.Context, id uint64) ([]events.ImageResult, error) {
	h, err := a.store.LoadJob(ctx, id)
	if err != nil {
		return nil, err
	}
	return events.ResultsOf(h), nil
}

// Status implements httpapi.Jobs.
func (a *App) Status(ctx context.Context, id uint64) (events.JobView, error) {
	return a.projection.Status(ctx, id)
}

// Run serves until ctx ends, then shuts down in order: readiness off; the
// engine stops taking jobs and lets in-flight images finish for up to
// --shutdown-timeout, appends what finished and hands unfinished jobs back;
// the HTTP server stops (in-flight requests get 10s); the projection stops;
// the NATS connection drains; the embedded server stops last. The App
// cannot be reused.
func (a *App) Run(ctx context.Context) error {
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(4)
	go func() {
		defer wg.Done()
		a.admission.Run(runCtx)
	}()
	go func() {
		defer wg.Done()
		if err := a.projection.Run(runCtx); err != nil {
			errc <- fmt.Errorf("projection: %w", err)
		}
	}()
	engineDone := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(engineDone)
		if err := a.engine.Run(ctx); err != nil {
			errc <- fmt.Errorf("engine: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := a.httpServer.Serve(a.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	}()
	a.log.Info("serving", "addr", a.Addr())

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		a.log.Error("component failed; shutting down", "err", runErr)
	}
	a.stopping.Store(true)
	a.log.Info("shutdown: readiness off, stopping job intake")
	<-engineDone // the engine watches ctx; on a component failure it runs on until ctx ends
	a.log.Info("shutdown: jobs drained")
	shCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.httpServer.Shutdown(shCtx); err != nil {
		a.log.Warn("http shutdown", "err", err)
	}
	cancelRun()
	wg.Wait()
	if a.projection.CaughtUp() {
		snapCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := a.projection.SaveSnapshot(snapCtx); err != nil {
			a.log.Warn("snapshot at shutdown not saved", "err", err)
		}
		cancel()
	}
	a.close()
	a.log.Info("shutdown complete")
	return runErr
}

// close drains the NATS connection and stops the embedded server last.
func (a *App) close() {
	if a.fetcher != nil {
		a.fetcher.Close()
	}
	if a.listener != nil {
		_ = a.listener.Close()
	}
	if a.nc != nil {
		if err := a.nc.Drain(); err != nil {
			a.nc.Close()
		}
		for i := 0; i < 100 && !a.nc.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if a.ns != nil {
		a.ns.Shutdown()
		a.ns.WaitForShutdown()
	}
	if a.lock != nil {
		a.lock.Close()
	}
}
