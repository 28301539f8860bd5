package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
)

// logFlags select the event log an operator tool reads.
type logFlags struct {
	dataDir, natsURL, stream string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.dataDir, "data-dir", "./data", "data dir of a stopped service (embedded NATS)")
	fs.StringVar(&l.natsURL, "nats-url", "", "read a live external NATS instead of --data-dir")
	fs.StringVar(&l.stream, "stream", "RETAILPULSE", "stream name")
}

// open starts an embedded server on the data dir (locked against a running
// service) or connects to --nats-url, and attaches to the stream without
// changing it. close stops everything it started. A data dir without the
// service's data, or a missing stream, is an error that says so; nothing is
// created in a directory that holds no data.
func (l *logFlags) open(ctx context.Context) (eventLog *jsstore.EventLog, closeFn func(), err error) {
	var closers []func()
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	if l.natsURL != "" {
		nc, err := jsstore.Connect(l.natsURL, "retailpulse-tool", nil)
		if err != nil {
			return nil, nil, fmt.Errorf("--nats-url %s: %w", l.natsURL, err)
		}
		closers = append(closers, nc.Close)
		eventLog, err = jsstore.Attach(ctx, nc, l.stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			err = fmt.Errorf("--nats-url %s: no stream %q there; check --stream", l.natsURL, l.stream)
		}
		return eventLog, cleanup, err
	}
	if err := checkToolDataDir(l.dataDir); err != nil {
		return nil, nil, err
	}
	lock, err := lockDataDir(l.dataDir)
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers, func() { lock.Close() })
	ns, err := jsstore.StartServer(jsstore.ServerConfig{Name: "retailpulse-tool", StoreDir: filepath.Join(l.dataDir, "nats"), SyncAlways: true})
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers, func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := jsstore.ConnectInProcess(ns, "retailpulse-tool")
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers, nc.Close)
	eventLog, err = jsstore.Attach(ctx, nc, l.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		err = fmt.Errorf("--data-dir %s: no retailpulse data here (no stream %q in nats/); %s", l.dataDir, l.stream, toolDataHint)
	}
	return eventLog, cleanup, err
}

// lockForDatabase locks the data dir for its read model database. open
// already holds the lock of an embedded data dir; with --nats-url the data
// dir holds only the database, and is created if missing.
func (l *logFlags) lockForDatabase() (unlock func(), err error) {
	if l.natsURL == "" {
		return func() {}, nil
	}
	lock, err := lockDataDir(l.dataDir)
	if err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	return func() { lock.Close() }, nil
}

// rebuild folds the log from the start into a fresh read model, stopping
// after sequence untilSeq (0 = the end) or the last message stored at or
// before untilTime (zero = no limit). It returns the model and the number of
// undecodable messages.
func rebuild(ctx context.Context, eventLog *jsstore.EventLog, untilSeq uint64, untilTime time.Time) (*events.ReadModel, int, error) {
	r, err := rebuildLog(ctx, eventLog, untilSeq, untilTime)
	if err != nil {
		return nil, 0, err
	}
	return r.model, r.bad, nil
}

// rebuilt is the log folded from the start.
type rebuilt struct {
	model *events.ReadModel
	bad   int               // messages that could not be applied
	queue map[uint64]uint64 // job id -> stream sequence of its latest requeue message
}

func rebuildLog(ctx context.Context, eventLog *jsstore.EventLog, untilSeq uint64, untilTime time.Time) (*rebuilt, error) {
	r := &rebuilt{model: events.NewReadModel(), queue: map[uint64]uint64{}}
	errStop := errors.New("stop")
	err := eventLog.Scan(ctx, 1, untilSeq, func(m jsstore.Message) error {
		if !untilTime.IsZero() && m.Time.After(untilTime) {
			return errStop
		}
		if m.Err != nil {
			r.bad++
			r.model.Skip(m.Seq)
			return nil
		}
		if id, kind, ok := events.ParseJobSubject(m.Subject); ok && kind == events.KindRequeued {
			r.queue[id] = m.Seq
		}
		if _, err := r.model.Apply(m.Seq, m.Subject, m.Batch); err != nil {
			r.bad++
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	return r, nil
}

type jobJSON struct {
	JobID     uint64              `json:"job_id"`
	Status    events.Status       `json:"status"`
	Images    int                 `json:"images"`
	Processed int                 `json:"processed"`
	Failed    int                 `json:"failed"`
	Error     []events.StoreError `json:"error,omitempty"`
}

func toJSON(v events.JobView) jobJSON {
	return jobJSON{JobID: v.ID, Status: v.Status, Images: v.Images, Processed: v.Processed, Failed: v.Failed, Error: v.Errors}
}

// replay: retailpulse replay [--until-seq N | --until-time T] [--job N] [--json].
// Exit 0 when the jobs are printed, 1 when --job names no job at that
// point, 2 on usage errors or when the log cannot be read (as verify).
func (m *Main) replay(ctx context.Context, args []string) int {
	var lf logFlags
	fs := flag.NewFlagSet("retailpulse replay", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	lf.register(fs)
	untilSeq := fs.Uint64("until-seq", 0, "stop after this stream sequence (0 = the end)")
	untilTimeText := fs.String("until-time", "", "stop after the last message stored at or before this RFC 3339 time")
	job := fs.Uint64("job", 0, "print only this job")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := fs.Parse(args); err != nil {
		return usageCode(err)
	}
	var untilTime time.Time
	if *untilTimeText != "" {
		t, err := time.Parse(time.RFC3339Nano, *untilTimeText)
		if err != nil {
			fmt.Fprintf(m.Stderr, "retailpulse replay: --until-time: %v\n", err)
			return exitUsage
		}
		untilTime = t
	}
	if *untilSeq != 0 && !untilTime.IsZero() {
		fmt.Fprintln(m.Stderr, "retailpulse replay: give --until-seq or --until-time, not both")
		return exitUsage
	}
	eventLog, closeFn, err := lf.open(ctx)
	if err != nil {
		fmt.Fprintf(m.Stderr, "retailpulse replay: %v\n", err)
		return exitUsage
	}
	defer closeFn()
	model, bad, err := rebuild(ctx, eventLog, *untilSeq, untilTime)
	if err != nil {
		fmt.Fprintf(m.Stderr, "retailpulse replay: %v\n", err)
		return exitUsage
	}
	views := model.Jobs()
	if *job != 0 {
		v, ok := model.Job(*job)
		if !ok {
			fmt.Fprintf(m.Stderr, "retailpulse replay: job %d not found at sequence %d\n", *job, model.LastSeq())
			return exitError
		}
		views = []events.JobView{v}
	}
	if *asJSON {
		out := struct {
			LastSeq     uint64    `json:"last_seq"`
			Undecodable int       `json:"undecodable"`
			Jobs        []jobJSON `json:"jobs"`
		}{model.LastSeq(), bad, make([]jobJSON, 0, len(views))}
		for _, v := range views {
			out.Jobs = append(out.Jobs, toJSON(v))
		}
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
		return exitOK
	}
	printJobs(m.Stdout, views)
	fmt.Fprintf(m.Stdout, "%d jobs at sequence %d", len(views), model.LastSeq())
	if bad > 0 {
		fmt.Fprintf(m.Stdout, " (%d messages could not be applied)", bad)
	}
	fmt.Fprintln(m.Stdout)
	return exitOK
}

// printJobs prints views as a table, one line per job. Text from the log
// (store ids and errors hold what clients sent) goes through tableCell, so
// no value can break the table or reach the terminal as a control sequence.
func printJobs(w io.Writer, views []events.JobView) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSTATUS\tIMAGES\tPROCESSED\tFAILED\tERRORS")
	for _, v := range views {
		var errs []string
		for _, e := range v.Errors {
			errs = append(errs, e.StoreID+": "+e.Error)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%s\n", v.ID, tableCell(string(v.Status)), v.Images, v.Processed, v.Failed, tableCell(strings.Join(errs, "; ")))
	}
	tw.Flush()
}

// maxCellChars bounds a table cell; a longer one is cut and ends in "…".
const maxCellChars = 80

// tableCell renders s for one cell of a terminal table: backslashes,
// non-printable characters (controls such as \n, \t and \x1b, format
// characters such as \u202e) and invalid UTF-8 bytes are escaped as in a
// Go string literal, and the result is cut after maxCellChars characters,
// never inside an escape.
func tableCell(s string) string {
	var b strings.Builder
	chars := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		var piece string
		switch {
		case r == utf8.RuneError && size == 1:
			piece = fmt.Sprintf(`\x%02x`, s[i])
		case r == '\\':
			piece = `\\`
		case unicode.IsPrint(r):
			piece = s[i : i+size]
		default:
			q := strconv.QuoteRune(r)
			piece = q[1 : len(q)-1]
		}
		n := utf8.RuneCountInString(piece)
		if chars+n > maxCellChars {
			b.WriteString("…")
			return b.String()
		}
		b.WriteString(piece)
		chars += n
		i += size
	}
	return b.String()
}

// verify rebuilds every job from scratch and compares it with the read
// model database in the data dir (caught up with the log first, as a
// starting service would), checks each job's invariants and the
// database's counters, and finds stranded jobs: unfinished jobs the work
// consumer will never deliver again. Without a database it checks the log
// alone. Exit 0 when all agree, 1 on any problem, 2 when it cannot run.
func (m *Main) verify(ctx context.Context, args []string) int {
	var lf logFlags
	fs := flag.NewFlagSet("retailpulse verify", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return usageCode(err)
	}
	fail := func(err error) int {
		fmt.Fprintf(m.Stderr, "retailpulse verify: %v\n", err)
		return exitUsage
	}
	eventLog, closeFn, err := lf.open(ctx)
	if err != nil {
		return fail(err)
	}
	defer closeFn()
	// The queue's state is read before the log: a job acked by then has its
	// terminal event in the log read after.
	ws, wsErr := eventLog.WorkState(ctx)
	if wsErr != nil && !errors.Is(wsErr, jetstream.ErrConsumerNotFound) {
		return fail(wsErr)
	}
	info, err := eventLog.Info(ctx)
	if err != nil {
		return fail(err)
	}
	scratch, err := rebuildLog(ctx, eventLog, info.LastSeq, time.Time{})
	if err != nil {
		return fail(err)
	}
	problems, err := m.verifyDatabase(ctx, &lf, eventLog, info.LastSeq, scratch.model.Jobs())
	if err != nil {
		return fail(err)
	}
	if scratch.bad > 0 {
		problems = append(problems, fmt.Sprintf("%d messages could not be applied", scratch.bad))
	}
	for _, p := range problems {
		fmt.Fprintln(m.Stdout, "DIFF", p)
	}
	stranded := 0
	if wsErr == nil {
		for _, s := range findStranded(scratch, ws) {
			fmt.Fprintln(m.Stdout, "STRANDED", s)
			stranded++
		}
	} else {
		fmt.Fprintln(m.Stdout, "verify: no work consumer yet; stranded jobs not checked")
	}
	jobs := scratch.model.Jobs()
	if len(problems)+stranded > 0 {
		fmt.Fprintf(m.Stdout, "verify: %d problems and %d stranded jobs in %d jobs up to sequence %d\n", len(problems), stranded, len(jobs), info.LastSeq)
		if stranded > 0 {
			fmt.Fprintln(m.Stdout, "verify: put stranded jobs back to work with: retailpulse requeue JOB...")
		}
		return exitError
	}
	fmt.Fprintf(m.Stdout, "verify: OK, %d jobs up to sequence %d agree; none stranded\n", len(jobs), info.LastSeq)
	return exitOK
}

// verifyDatabase compares want (a fresh fold of the log up to sequence
// last) with the read model database in the data dir, caught up to last
// first, and checks the database's counters. Without a database, or when a
// running instance holds it, it says so and checks want's invariants only.
func (m *Main) verifyDatabase(ctx context.Context, lf *logFlags, eventLog *jsstore.EventLog, last uint64, want []events.JobView) ([]string, error) {
	alone := func() []string {
		var out []string
		for _, v := range want {
			out = append(out, invariants(v)...)
		}
		return out
	}
	dbPath := filepath.Join(lf.dataDir, readModelFile)
	if _, err := os.Stat(dbPath); err != nil {
		fmt.Fprintf(m.Stdout, "verify: no read model database at %s; checking the log alone\n", dbPath)
		return alone(), nil
	}
	unlock, err := lf.lockForDatabase()
	if errors.Is(err, errDataDirInUse) {
		fmt.Fprintf(m.Stdout, "verify: the read model database at %s is in use by a running instance; checking the log alone\n", dbPath)
		return alone(), nil
	}
	if err != nil {
		return nil, err
	}
	defer unlock()
	log := slog.New(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	view, err := openView(ctx, eventLog, lf.dataDir, nil, log)
	if err != nil {
		return nil, err
	}
	defer view.Close()
	if err := catchUp(ctx, eventLog, view, last, log); err != nil {
		return nil, err
	}
	problems, err := compareJobs(ctx, want, view.EachJob)
	if err != nil {
		return nil, err
	}
	counters, err := view.CheckCounters(ctx)
	if err != nil {
		return nil, err
	}
	return append(problems, counters...), nil
}

// compareJobs lists every job that differs between want (a fresh fold of
// the log, in id order) and the jobs each yields in id order (the read
// model database), and every job of want whose state breaks an invariant.
func compareJobs(ctx context.Context, want []events.JobView, each func(context.Context, func(events.JobView) error) error) ([]string, error) {
	var out []string
	i := 0
	err := each(ctx, func(g events.JobView) error {
		for ; i < len(want) && want[i].ID < g.ID; i++ {
			out = append(out, fmt.Sprintf("job %d: missing from the read model", want[i].ID))
			out = append(out, invariants(want[i])...)
		}
		if i == len(want) || want[i].ID != g.ID {
			out = append(out, fmt.Sprintf("job %d: in the read model only", g.ID))
			return nil
		}
		w := want[i]
		i++
		if !reflect.DeepEqual(w, g) {
			out = append(out, fmt.Sprintf("job %d: rebuilt %+v, read model %+v", w.ID, w, g))
		}
		out = append(out, invariants(w)...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for ; i < len(want); i++ {
		out = append(out, fmt.Sprintf("job %d: missing from the read model", want[i].ID))
		out = append(out, invariants(want[i])...)
	}
	return out, nil
}

func invariants(v events.JobView) []string {
	var out []string
	settled := v.Processed + v.Failed
	switch {
	case settled > v.Images:
		out = append(out, fmt.Sprintf("job %d: %d outcomes for %d images", v.ID, settled, v.Images))
	case v.Status == events.StatusCompleted && (v.Failed != 0 || settled != v.Images):
		out = append(out, fmt.Sprintf("job %d: completed with %d processed, %d failed of %d", v.ID, v.Processed, v.Failed, v.Images))
	case v.Status == events.StatusFailed && len(v.Errors) == 0:
		out = append(out, fmt.Sprintf("job %d: failed without errors", v.ID))
	}
	return out
}

func usageCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}
