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
	"github.com/retailpulse/retailpulse/docs"
	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/sqlview"
	"github.com/retailpulse/retailpulse/httpapi"
	"github.com/retailpulse/retailpulse/httpapi/ui"
	"github.com/retailpulse/retailpulse/metrics"
	"github.com/retailpulse/retailpulse/storemaster"
)

// Main is the command. Run is testable: it takes its arguments, output and
// environment instead of the process's.
type Main struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	Stdin          io.Reader // submit's job from "-"; nil: none

	logger atomic.Pointer[slog.Logger] // the running command's logger, once it has one
}

// notice reports a process-level event (a signal) through the running
// command's logger, so it has the configured format; before there is one,
// as a plain line on Stderr. Safe for concurrent use.
func (m *Main) notice(msg string, args ...any) {
	if l := m.logger.Load(); l != nil {
		l.Warn(msg, args...)
		return
	}
	fmt.Fprintln(m.Stderr, append([]any{msg}, args...)...)
}

// Run runs a subcommand and returns the process exit code.
func (m *Main) Run(ctx context.Context, args []string) int {
	if m.Getenv == nil {
		m.Getenv = func(string) string { return "" }
	}
	cmd := "serve"
	switch {
	case len(args) > 0 && isHelpFlag(args[0]):
		cmd, args = "help", args[1:]
	case len(args) > 0 && !strings.HasPrefix(args[0], "-"):
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return m.serve(ctx, args)
	case "replay":
		return m.replay(ctx, args)
	case "verify":
		return m.verify(ctx, args)
	case "requeue":
		return m.requeue(ctx, args)
	case "rebuild":
		return m.rebuild(ctx, args)
	case "bench":
		return m.bench(ctx, args)
	case "submit":
		return m.submit(ctx, args)
	case "watch":
		return m.watch(ctx, args)
	case "help":
		return m.help(ctx, args)
	}
	fmt.Fprintf(m.Stderr, "retailpulse: unknown command %q\n%s\n", cmd, usage)
	return exitUsage
}

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
	m.logger.Store(log)
	stopGCTuner := startGCTuner(ctx, cfg.GCFloor, m.Getenv, log)
	defer stopGCTuner()
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

// newLogger returns the service's logger. Durations are written as text
// ("2ms") in both formats, never as nanosecond integers.
func newLogger(w io.Writer, level, format string) *slog.Logger {
	l, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			return slog.String(a.Key, a.Value.Duration().String())
		}
		return a
	}}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// App is one running instance: NATS (embedded or external), the event
// store, the projection into the read model database, the engine and the
// HTTP server.
type App struct {
	cfg        serveConfig
	log        *slog.Logger
	lock       *os.File       // data dir lock
	ns         *server.Server // nil with an external NATS
	nc         *nats.Conn
	eventLog   *jsstore.EventLog
	view       *sqlview.View // the read model, <data-dir>/readmodel.db
	projection *jsstore.Projection
	engine     *actors.Engine
	fetcher    *imagefetch.Fetcher
	metrics    *metrics.Metrics
	registry   *prometheus.Registry
	httpServer *http.Server
	debugL     net.Listener // --debug-listen; nil when off
	listener   net.Listener
	stopping   atomic.Bool
	admission  *jsstore.Admission
	writable   atomic.Bool // the event log took writes at the last probe
	streams    *httpapi.Streams
	// Event streams handed to another process (--hand-off-streams), or
	// taken from one (--take-streams); nil when not.
	streamMetrics *metrics.StreamMetrics
	handoff       *httpapi.StreamHandoff
	handoffL      *httpapi.HandoffListener
	activity      *activity    // the dashboard's statistics (stats.go)
	accepted      acceptedJobs // jobs accepted here, not yet in the read model

	// Pause overrides the configured GPU pause (tests); set before Run.
	Pause func(context.Context) error
}

// NewApp starts NATS, opens the store and binds the HTTP listener. Nothing
// processes jobs until Run. On error everything started is stopped.
func NewApp(ctx context.Context, cfg serveConfig, log *slog.Logger) (_ *App, err error) {
	a := &App{cfg: cfg, log: log}
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

	// The data dir holds the read model database (and, embedded, the NATS
	// data): one process at a time. A worker keeps neither.
	if !cfg.WorkerOnly {
		if a.lock, err = lockDataDir(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("%w: --data-dir: %v", errConfig, err)
		}
	}
	if cfg.NATSURL == "" {
		dir := filepath.Join(cfg.DataDir, "nats")
		sc := jsstore.ServerConfig{
			Name: "retailpulse", StoreDir: dir, SyncAlways: cfg.syncAlways, SyncInterval: cfg.syncInterval, Logger: log,
		}
		connOpts := cfg.embeddedServer(&sc)
		if a.ns, err = jsstore.StartServer(sc); err != nil {
			return nil, err
		}
		if a.nc, err = jsstore.ConnectInProcess(a.ns, "retailpulse", connOpts...); err != nil {
			return nil, fmt.Errorf("connect nats: %w", err)
		}
	}
	openCtx, cancel := context.WithTimeout(ctx, cfg.NATSConnectTimeout)
	defer cancel()
	if a.nc == nil {
		if a.nc, err = connectWithRetry(openCtx, cfg.NATSURL, log, cfg.externalOptions()...); err != nil {
			return nil, err
		}
	}
	a.eventLog, err = jsstore.Open(openCtx, a.nc, jsstore.Config{
		Replicas: cfg.Replicas, MaxBytes: cfg.MaxStreamBytes, AckWait: cfg.AckWait,
		Shared: cfg.NATSURL != "", UpdateExisting: cfg.UpdateStream,
	})
	if drift, ok := errors.AsType[*jsstore.DriftError](err); ok {
		return nil, fmt.Errorf("%w: %s", errConfig, driftMessage(drift))
	}
	if err != nil {
		return nil, err
	}

	if a.ns != nil && cfg.soleConsumer() {
		// We hold the data dir: jobs delivered and not acked belong to a
		// previous process that is gone. Take them back now rather than after
		// the ack wait.
		n, err := a.eventLog.ReclaimJobs(openCtx)
		if err != nil {
			return nil, fmt.Errorf("reclaim jobs: %w", err)
		}
		if n > 0 {
			log.Info("reclaimed jobs left unacked by the previous process", "jobs", n)
		}
	}
	a.writable.Store(a.eventLog.Probe(openCtx) == nil)
	a.registry = prometheus.NewRegistry()
	a.metrics = metrics.New(a.registry)
	if !cfg.WorkerOnly {
		if err := a.openReadSide(openCtx, stores); err != nil {
			return nil, err
		}
	}
	if err := a.newEngine(stores); err != nil {
		return nil, err
	}
	var h http.Handler
	if cfg.WorkerOnly {
		h = httpapi.NewOpsHandler(httpapi.OpsConfig{
			Ready: a.Ready, Instrument: a.metrics.Instrument, MetricsHandler: metrics.Handler(a.registry), Logger: log,
		})
	} else if h, err = a.apiHandler(); err != nil {
		return nil, err
	}
	a.httpServer = httpapi.NewServer(cfg.Addr, h)
	if a.streams != nil {
		a.wireStreams()
	}
	if a.listener, err = net.Listen("tcp", cfg.Addr); err != nil {
		return nil, fmt.Errorf("%w: --addr: %v", errConfig, err)
	}
	if hs := a.newStreamHandoff(); hs != nil {
		a.listener = hs.Listener(a.listener, a.httpServer.ReadHeaderTimeout)
	}
	if err := a.listenHandoff(); err != nil {
		return nil, err
	}
	if cfg.DebugListen != "" {
		if a.debugL, err = net.Listen("tcp", cfg.DebugListen); err != nil {
			return nil, fmt.Errorf("%w: --debug-listen: %v", errConfig, err)
		}
		log.Info("profiling endpoint", "url", "http://"+a.debugL.Addr().String()+"/debug/pprof/")
	}
	return a, nil
}

// openReadSide sets up what an instance serving the API keeps beside the
// engine: admission control of submits, the read model and its projection.
func (a *App) openReadSide(ctx context.Context, stores *storemaster.Master) (err error) {
	cfg, log := a.cfg, a.log
	a.admission = jsstore.NewAdmission(a.eventLog, cfg.MaxQueuedJobs)
	var refreshFailing atomic.Bool
	a.admission.OnRefresh = func(err error) {
		if err != nil {
			a.metrics.AdmissionRefreshFailed()
			if !refreshFailing.Swap(true) {
				log.Warn("admission control cannot read the log's state; deciding from the last one read", "err", err)
			}
		} else if refreshFailing.Swap(false) {
			log.Info("admission control reads the log's state again")
		}
	}
	if err := a.admission.Refresh(ctx); err != nil {
		return err
	}
	if a.view, err = openView(ctx, a.eventLog, cfg.DataDir, stores, log); err != nil {
		return err
	}
	a.projection = jsstore.NewProjection(a.eventLog, a.view, log, a.applied)
	// Instances sharing a log answer reads only once their projection has
	// reached the log's end as of the read: never older than what another
	// instance already answered. A sole instance needs that only until it
	// has caught up after its start.
	a.projection.Linearizable = cfg.NATSURL != ""
	a.projection.ReadWait = min(cfg.SubmitTimeout, 2*time.Second)
	return nil
}

// newEngine creates the image fetcher and the engine (Run runs it).
func (a *App) newEngine(stores *storemaster.Master) (err error) {
	cfg, log := a.cfg, a.log

	a.fetcher = imagefetch.New(imagefetch.Config{AllowPrivateNetworks: cfg.AllowPrivateNetworks, UserAgent: "retailpulse/1", TotalTimeout: cfg.ImageTimeout, PerHostConcurrency: cfg.PerHostConcurrency, Observer: a.metrics})
	pause := actors.RandomPause(cfg.pauseMin, cfg.pauseMax)
	a.engine, err = actors.NewEngine(actors.Config{
		Log:                a.eventLog,
		Queue:              queue{a.eventLog},
		Fetcher:            a.fetcher,
		KnownStore:         func(id string) bool { _, ok := stores.Lookup(id); return ok },
		Reason:             imagefetch.Reason,
		Pause:              func(ctx context.Context) error { return a.pause(ctx, pause) },
		JobSlots:           cfg.JobSlots,
		ImageSlots:         cfg.ImageSlots,
		MinImageSlots:      cfg.MinImageSlots,
		SchedLatencyTarget: cfg.SchedLatencyTarget,
		StoreConcurrency:   cfg.StoreConcurrency,
		MaxAttempts:        cfg.MaxAttempts,
		BatchLinger:        cfg.AppendLinger,
		AppendRate:         cfg.AppendRate,
		Heartbeat:          cfg.AckWait / 3,
		DrainTimeout:       cfg.ShutdownTimeout,
		Observer:           a.metrics,
		Logger:             log,
	})
	if err != nil {
		return err
	}
	a.metrics.ObserveMailboxes(a.engine.MailboxBacklog)
	return nil
}

// apiHandler sets up the event streams and the dashboard's statistics and
// returns the API's handler.
func (a *App) apiHandler() (http.Handler, error) {
	cfg, log := a.cfg, a.log
	var err error
	a.activity = newActivity(statsInterval, statsSamples, time.Now)
	if a.streams, err = a.setUpStreams(); err != nil {
		return nil, err
	}
	var tokens []string
	for _, t := range strings.Split(cfg.APIToken, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tokens = append(tokens, t)
		}
	}
	return httpapi.NewHandler(httpapi.Config{
		Jobs:              a,
		CheckURL:          func(raw string) error { return imagefetch.CheckURL(raw, cfg.MaxURLLength) },
		MaxBodyBytes:      cfg.MaxBodyBytes,
		MaxVisits:         cfg.MaxVisits,
		MaxImages:         cfg.MaxImages,
		MaxURLLength:      cfg.MaxURLLength,
		APITokens:         tokens,
		Ready:             a.Ready,
		Instrument:        a.metrics.Instrument,
		MetricsHandler:    metrics.Handler(a.registry),
		Logger:            log,
		OnReject:          a.metrics.SubmitRejected,
		MaxPendingSubmits: cfg.MaxPendingSubmits,
		MaxPendingResults: cfg.MaxPendingResults,
		Streams:           a.streams,
		OpenAPI:           docs.OpenAPI,
		UI:                ui.Handler(),

		MaxStoreIDLength:   cfg.MaxStoreIDLength,
		MaxVisitTimeLength: cfg.MaxVisitTimeLength,
	})
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
type queue struct{ s *jsstore.EventLog }

func (q queue) NextJob(ctx context.Context) (actors.Delivery, error) { return q.s.NextJob(ctx) }

// Addr returns the HTTP listener's address.
func (a *App) Addr() string { return a.listener.Addr().String() }

// Ready reports whether the instance should receive traffic: the
// projection (a worker has none) has caught up with the log, the log took
// writes at the last probe, and shutdown has not begun.
func (a *App) Ready() bool {
	return !a.stopping.Load() && (a.projection == nil || a.projection.CaughtUp()) && a.writable.Load()
}

// probeInterval is how often the event log's ability to take writes is
// checked; readiness follows it within about two intervals.
const probeInterval = time.Second

// watchLog probes the event log until ctx ends, keeping a.writable, the
// metric and the log up to date.
func (a *App) watchLog(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	a.metrics.LogWritable(a.writable.Load())
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 2*probeInterval)
		err := a.eventLog.Probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		ok := err == nil
		if was := a.writable.Swap(ok); was != ok {
			if ok {
				a.log.Info("event log writable again; ready")
			} else {
				a.log.Warn("event log cannot take writes; not ready", "err", err)
			}
		}
		a.metrics.LogWritable(ok)
	}
}

// connectWithRetry connects to the NATS servers at urls with opts,
// retrying with backoff until ctx ends.
func connectWithRetry(ctx context.Context, urls string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	backoff := 100 * time.Millisecond
	for {
		nc, err := jsstore.Connect(urls, "retailpulse", log, opts...)
		if err == nil {
			return nc, nil
		}
		deadline, _ := ctx.Deadline()
		log.Warn("nats not reachable; retrying", "url", urls, "err", err, "retry_in", backoff, "gives_up_in", time.Until(deadline).Round(time.Second))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect nats %s: %w (gave up after --nats-connect-timeout)", urls, err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// driftFlags names the flag behind each shared setting.
var driftFlags = map[string]string{
	"replicas": "--replicas", "consumer_replicas": "--replicas", "max_bytes": "--max-stream-bytes",
	"ack_wait": "--ack-wait",
}

// driftMessage explains a refused start, a line per differing setting.
func driftMessage(e *jsstore.DriftError) string {
	var b strings.Builder
	b.WriteString("this instance's settings differ from the shared stream and work consumer; start it with the same settings as the others, or with --update-stream to change them for all:")
	named := map[string]bool{}
	for _, d := range e.Diffs {
		name := driftFlags[d.Setting]
		if name != "" && named[name] {
			continue // the consumer's replicas follow the stream's
		}
		named[name] = true
		if name == "" {
			name = d.Setting + " (set by another version of retailpulse)"
		}
		fmt.Fprintf(&b, "\n  %s: the stream has %s, this instance %s", name, d.Have, d.Want)
	}
	return b.String()
}

// Submit implements httpapi.Jobs. It answers events.ErrOverloaded at once
// when MaxQueuedJobs wait for an owner, events.ErrStorageFull when the log
// is nearly full (the rest is kept for running jobs), and
// events.ErrUnavailable when the log cannot take writes (at once when the
// last probe said so, else after --submit-timeout); nothing is stored
// then. (--max-pending-submits is enforced by the HTTP layer, before the
// body is read.)
func (a *App) Submit(ctx context.Context, job *events.JobSubmitted, key string) (uint64, bool, error) {
	id, replayed, err := uint64(0), false, a.admission.Check()
	if err == nil && !a.writable.Load() {
		err = fmt.Errorf("%w: the last probe found no stream leader with quorum", events.ErrUnavailable)
	}
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, a.cfg.SubmitTimeout)
		id, replayed, err = a.eventLog.Submit(sctx, job, key)
		cancel()
	}
	if err != nil {
		switch {
		case errors.Is(err, events.ErrUnavailable):
			a.metrics.SubmitRejected(metrics.RejectUnavailable)
		case errors.Is(err, events.ErrStorageFull):
			a.metrics.SubmitRejected("storage_full")
		case errors.Is(err, events.ErrIdempotencyConflict):
			a.metrics.SubmitRejected("invalid")
		case errors.Is(err, events.ErrJobTooLarge):
			a.metrics.SubmitRejected("too_large")
		case errors.Is(err, events.ErrOverloaded):
			a.metrics.SubmitRejected("overloaded")
		default:
			a.metrics.SubmitRejected("other")
		}
		return 0, false, err
	}
	if replayed {
		a.metrics.JobReplayed()
		a.log.Info("job submission replayed", "job_id", id)
		return id, true, nil
	}
	if !a.projection.Linearizable {
		a.accepted.add(id, job.Images())
	}
	a.admission.Admitted()
	a.metrics.JobSubmitted()
	a.log.Info("job submitted", "job_id", id, "visits", len(job.Visits), "images", job.Images())
	return id, false, nil
}

// The optional interfaces the HTTP layer looks for: a drifting signature
// must fail the build, not silently remove a route.
var (
	_ httpapi.Jobs    = (*App)(nil)
	_ httpapi.Results = (*App)(nil)
	_ httpapi.Queries = (*App)(nil)
)

// applied is the projection's callback after each run it commits (on its
// writer goroutine).
func (a *App) applied(r jsstore.Applied) {
	a.accepted.appliedThrough(r.Seq)
	a.metrics.ProjectionApplied(r.Seq, r.Result.Applied, r.Result.Duplicates, r.Lag)
}

// Status implements httpapi.Jobs from the read model database, once the
// projection may answer (jsstore.Projection.SyncJob): a job the log holds
// is never answered as unknown, and no answer is older than one already
// given. While the projection is behind it waits, at most --submit-timeout
// and 2s, then answers events.ErrStale (503).
//
// A job the read model already holds as completed or failed is answered at
// once, without asking the log where it ends: a terminal answer is final,
// so no answer given anywhere can be newer. That keeps status of finished
// jobs answering while the log has no quorum.
//
// A job this sole instance accepted that the read model has not applied
// yet is answered as ongoing at once (acceptedJobs): a client polling
// right after its submit does not wait for the projection.
func (a *App) Status(ctx context.Context, id uint64) (events.JobView, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.SubmitTimeout)
	defer cancel()
	v, err := a.view.Job(ctx, id)
	if err == nil && v.Status != events.StatusOngoing {
		return v, nil
	}
	if errors.Is(err, events.ErrJobNotFound) {
		if images, ok := a.accepted.lookup(id); ok {
			return events.JobView{ID: id, Status: events.StatusOngoing, Images: images}, nil
		}
	}
	if err := a.projection.SyncJob(ctx, id); err != nil {
		return events.JobView{}, err
	}
	return a.view.Job(ctx, id)
}

// Run serves until ctx ends or a component (HTTP server, projection,
// engine) fails, then shuts down in order: readiness off; the
// engine stops taking jobs and lets in-flight images finish for up to
// --shutdown-timeout, appends what finished and hands unfinished jobs back;
// the HTTP server stops (in-flight requests get 10s); the projection stops
// (a run of messages it was applying is rolled back, and applied again at
// the next start); the read model database closes; the NATS connection
// drains; the embedded server stops last. It returns
// after every goroutine it started has returned: nil after a shutdown
// requested through ctx, the first component's error otherwise (the process
// then exits non-zero). The App cannot be reused.
func (a *App) Run(ctx context.Context) error {
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	var wg sync.WaitGroup
	errc := make(chan error, 7) // one per component: no sender ever blocks
	// The engine stops on ctx or on any other component's failure.
	engineCtx, stopEngine := context.WithCancel(ctx)
	defer stopEngine()
	wg.Add(5)
	go func() {
		defer wg.Done()
		if a.admission != nil { // nil on a worker
			a.admission.Run(runCtx)
		}
	}()
	go func() {
		defer wg.Done()
		a.watchLog(runCtx)
	}()
	go func() {
		defer wg.Done()
		if a.projection == nil { // a worker keeps no read model
			return
		}
		if err := a.projection.Run(runCtx); err != nil {
			errc <- fmt.Errorf("projection: %w", err)
		}
	}()
	engineDone := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(engineDone)
		if a.cfg.JobSlots == 0 {
			return // API only: this instance takes no jobs
		}
		if err := a.engine.Run(engineCtx); err != nil {
			errc <- fmt.Errorf("engine: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := a.httpServer.Serve(a.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	}()
	if a.handoffL != nil { // connections handed over (--take-streams), served like accepted ones
		wg.Go(func() {
			if err := a.httpServer.Serve(a.handoffL); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http (handed connections): %w", err)
			}
		})
	}
	if a.streams != nil { // nil on a worker
		wg.Go(func() { a.runStreams(runCtx) }) // event streams; ends them at the HTTP shutdown
	}
	if a.debugL != nil {
		wg.Go(func() {
			if err := debugServer(runCtx, a.debugL); err != nil {
				errc <- err
			}
		})
	}
	a.log.Info("serving", "addr", a.Addr())
	if a.cfg.JobSlots == 0 {
		a.log.Info("API only (--job-slots 0): this instance takes no jobs; other instances on the same log process them")
	}
	if a.cfg.WorkerOnly {
		a.log.Info("worker only (--worker-only): this instance takes jobs; it serves no API, keeps no read model and serves only /healthz, /readyz and /metrics",
			"adaptive_image_slots", a.cfg.SchedLatencyTarget > 0)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		a.log.Error("component failed; shutting down", "err", runErr)
	}
	a.stopping.Store(true)
	a.log.Info("shutdown: readiness off, stopping job intake")
	stopEngine()
	<-engineDone
	a.log.Info("shutdown: jobs drained")
	shCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.httpServer.Shutdown(shCtx); err != nil {
		a.log.Warn("http shutdown", "err", err)
	}
	cancelRun()
	wg.Wait()
	a.close()
	a.log.Info("shutdown complete")
	return runErr
}

// close closes the read model, drains the NATS connection and stops the
// embedded server last.
func (a *App) close() {
	if a.fetcher != nil {
		a.fetcher.Close()
	}
	if a.listener != nil {
		_ = a.listener.Close()
	}
	if a.handoffL != nil {
		_ = a.handoffL.Close()
	}
	if a.handoff != nil {
		_ = a.handoff.Close()
	}
	if a.debugL != nil {
		_ = a.debugL.Close()
	}
	if a.view != nil {
		if err := a.view.Close(); err != nil {
			a.log.Warn("read model close", "err", err)
		}
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
