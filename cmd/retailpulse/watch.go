package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/retailpulse/retailpulse/events"
)

// `retailpulse watch JOB`: follows a job's event stream
// (GET /api/jobs/{id}/events) and shows its progress until it completes.

// clientConfig is what the API client commands (submit, watch) take.
type clientConfig struct {
	URL              string
	Token            string
	ReconnectTimeout time.Duration
}

// register adds the client flags to fs.
func (c *clientConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.URL, "url", "http://localhost:8080", "the service's base URL")
	fs.StringVar(&c.Token, "token", "", "API token, sent as Authorization: Bearer (the service's --api-token)")
	fs.DurationVar(&c.ReconnectTimeout, "reconnect-timeout", 30*time.Second, "watch: how long to keep trying to reach the service before giving up (exit 2)")
}

// clientEnvHelp states the environment fallback of the client commands.
const clientEnvHelp = `Each flag falls back to RETAILPULSE_<FLAG> (e.g. RETAILPULSE_URL, RETAILPULSE_TOKEN); the
command line wins.`

// parseClientFlags parses args into fs, fills unset flags from the
// environment, and checks the client configuration. It returns the
// positional arguments.
func (c *clientConfig) parse(fs *flag.FlagSet, args []string, getenv func(string) string) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
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
		}
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url: want http(s)://host[:port], got %q", c.URL)
	}
	c.URL = strings.TrimSuffix(c.URL, "/")
	if c.ReconnectTimeout <= 0 {
		return nil, errors.New("--reconnect-timeout must be positive")
	}
	return fs.Args(), nil
}

// request builds a request to the service with the token.
func (c *clientConfig) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, body)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

// errorText returns an error response's message: the "error" of a JSON
// body, or the body itself.
func errorText(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return fmt.Sprintf("%d: %s", resp.StatusCode, e.Error)
	}
	if s := strings.TrimSpace(string(b)); s != "" && s != "{}" {
		return fmt.Sprintf("%d: %s", resp.StatusCode, s)
	}
	return resp.Status
}

// watch: retailpulse watch JOB [--url URL] [--token T].
func (m *Main) watch(ctx context.Context, args []string) int {
	var cc clientConfig
	fs := flag.NewFlagSet("retailpulse watch", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	cc.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: retailpulse watch [flags] JOB\n\nShows a job's progress, live, from its event stream, and its final status.\nExit 0 when the job completed, 1 when it failed, 2 on usage or connection errors.\n%s\n\nFlags:\n", clientEnvHelp)
		fs.PrintDefaults()
	}
	rest, err := cc.parse(fs, args, m.Getenv)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(m.Stderr, "retailpulse watch: %v\n", err)
		}
		return usageCode(err)
	}
	if len(rest) != 1 {
		fmt.Fprintln(m.Stderr, "retailpulse watch: name one job id")
		return exitUsage
	}
	id, err := events.ParseJobID(rest[0])
	if err != nil {
		fmt.Fprintf(m.Stderr, "retailpulse watch: %v\n", err)
		return exitUsage
	}
	return m.watchJob(ctx, &cc, id)
}

// watchJob follows job id until its job_completed and prints its final
// status; the exit code says how it ended.
func (m *Main) watchJob(ctx context.Context, cc *clientConfig, id uint64) int {
	p := newProgress(m.Stdout, id)
	w := &watcher{cc: cc, id: id, progress: p, client: &http.Client{Transport: &http.Transport{
		Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 15 * time.Second,
	}}}
	done, err := w.run(ctx)
	p.finish()
	if err != nil {
		fmt.Fprintf(m.Stderr, "retailpulse watch: job %d: %v\n", id, err)
		return exitUsage
	}
	fmt.Fprintln(m.Stdout, finalStatus(id, done))
	for _, e := range done.Errors {
		fmt.Fprintf(m.Stdout, "  %s: %s\n", e.StoreID, e.Error)
	}
	if done.Status == events.StatusCompleted {
		return exitOK
	}
	return exitError
}

func finalStatus(id uint64, done *events.JobCompleted) string {
	s := fmt.Sprintf("job %d: %s: %d images processed, %d failed", id, done.Status, done.Processed, done.Failed)
	if len(done.Errors) > 0 {
		s += fmt.Sprintf("; %d stores with errors:", len(done.Errors))
	}
	return s
}

// idleTimeout: a stream that sends nothing, not even its keep-alive
// comment (every 15 s), for this long is taken for dead and reconnected.
const idleTimeout = 45 * time.Second

// watcher reads a job's event stream, reconnecting with Last-Event-ID.
type watcher struct {
	cc       *clientConfig
	id       uint64
	client   *http.Client
	progress *progress
	lastID   string // id of the last event received
}

// errPermanent marks an answer that reconnecting cannot change.
type errPermanent struct{ error }

// run reads the stream until the job's job_completed. It reconnects after
// a stream that ends early or breaks, and gives up when no connection has
// succeeded for ReconnectTimeout, or at once on an answer that retrying
// cannot change (unknown job, refused token).
func (w *watcher) run(ctx context.Context) (*events.JobCompleted, error) {
	failingSince := time.Time{}
	backoff := 100 * time.Millisecond
	for {
		done, connected, err := w.connect(ctx)
		if done != nil {
			return done, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if pe, ok := errors.AsType[errPermanent](err); ok {
			return nil, pe.error
		}
		if connected {
			failingSince, backoff = time.Time{}, 100*time.Millisecond
		} else if failingSince.IsZero() {
			failingSince = time.Now()
		}
		if !failingSince.IsZero() && time.Since(failingSince) >= w.cc.ReconnectTimeout {
			return nil, fmt.Errorf("cannot reach the service for %s: %v", w.cc.ReconnectTimeout, err)
		}
		w.progress.note(fmt.Sprintf("reconnecting: %v", err))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// connect opens the stream once and reads it. connected reports that the
// service answered 200.
func (w *watcher) connect(ctx context.Context) (done *events.JobCompleted, connected bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := w.cc.request(ctx, http.MethodGet, "/api/jobs/"+strconv.FormatUint(w.id, 10)+"/events", nil)
	if err != nil {
		return nil, false, errPermanent{err}
	}
	req.Header.Set("Accept", "text/event-stream")
	if w.lastID != "" {
		req.Header.Set("Last-Event-ID", w.lastID)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusNotFound:
		return nil, false, errPermanent{fmt.Errorf("no such job (%s)", errorText(resp))}
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, false, errPermanent{fmt.Errorf("refused: %s (check --token)", errorText(resp))}
	case resp.StatusCode == http.StatusNoContent:
		return nil, true, errPermanent{errors.New("the stream ended before job_completed")}
	default:
		return nil, false, fmt.Errorf("%s", errorText(resp))
	}
	idle := time.AfterFunc(idleTimeout, cancel)
	defer idle.Stop()
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	var id, typ string
	var data []byte
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long data line (a large submission): read the rest of it.
			rest, rerr := r.ReadString('\n')
			line, err = append(slices.Clone(line), rest...), rerr
		}
		if err != nil {
			if err == io.EOF {
				err = errors.New("the stream ended before job_completed")
			}
			return nil, true, err
		}
		idle.Reset(idleTimeout)
		text := strings.TrimRight(string(line), "\r\n")
		switch {
		case text == "":
			if typ != "" {
				done, err := w.progress.event(typ, data)
				if err != nil {
					return nil, true, errPermanent{err}
				}
				if id != "" {
					w.lastID = id
				}
				if done != nil {
					return done, true, nil
				}
				if typ == "overflow" {
					return nil, true, errors.New("the client fell behind the stream")
				}
			}
			id, typ, data = "", "", nil
		case strings.HasPrefix(text, ":"):
		case strings.HasPrefix(text, "id: "):
			id = text[4:]
		case strings.HasPrefix(text, "event: "):
			typ = text[7:]
		case strings.HasPrefix(text, "data: "):
			data = []byte(text[6:])
		}
	}
}

// progress tracks and shows a job's progress: a bar redrawn in place on a
// terminal, else a plain line at most every second.
type progress struct {
	out      io.Writer
	id       uint64
	terminal bool

	total       int
	submittedAt time.Time
	lastAt      time.Time
	settled     map[events.ImageRef]bool
	failed      map[string]int // failed images by store
	stores      []string       // stores with failures, in first-failure order

	shown    time.Time // last time a line or bar was drawn
	drawn    bool      // a bar is on the current line
	lastLine string
}

func newProgress(out io.Writer, id uint64) *progress {
	p := &progress{out: out, id: id, settled: map[events.ImageRef]bool{}, failed: map[string]int{}}
	if f, ok := out.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

// event applies one received event and redraws; it returns the job's
// job_completed when that is the event.
func (p *progress) event(typ string, data []byte) (*events.JobCompleted, error) {
	switch events.Type(typ) {
	case events.TypeJobSubmitted:
		var e events.JobSubmitted
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, fmt.Errorf("event %s: %w", typ, err)
		}
		p.total, p.submittedAt = e.Images(), e.SubmittedAt
	case events.TypeImageProcessed:
		var e events.ImageProcessed
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, fmt.Errorf("event %s: %w", typ, err)
		}
		p.settle(e.ImageRef, "", e.At)
	case events.TypeImageFailed:
		var e events.ImageFailed
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, fmt.Errorf("event %s: %w", typ, err)
		}
		p.settle(e.ImageRef, e.StoreID, e.At)
	case events.TypeJobCompleted:
		var e events.JobCompleted
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, fmt.Errorf("event %s: %w", typ, err)
		}
		p.show(true)
		return &e, nil
	}
	p.show(false)
	return nil, nil
}

// settle records an image's first outcome (a redone image's later ones
// are ignored, as the job's status ignores them).
func (p *progress) settle(ref events.ImageRef, failedStore string, at time.Time) {
	if p.settled[ref] {
		return
	}
	p.settled[ref] = true
	if at.After(p.lastAt) {
		p.lastAt = at
	}
	if failedStore != "" {
		if p.failed[failedStore] == 0 {
			p.stores = append(p.stores, failedStore)
		}
		p.failed[failedStore]++
	}
}

// line describes the progress: settled/total, rate, ETA, failures.
func (p *progress) line() string {
	n := len(p.settled)
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d images", n, p.total)
	// The rate is the job's own, from its events' times: replayed history
	// and reconnects do not distort it.
	if el := p.lastAt.Sub(p.submittedAt); n > 0 && el > 0 {
		rate := float64(n) / el.Seconds()
		fmt.Fprintf(&b, ", %.1f images/s", rate)
		if rem := p.total - n; rem > 0 {
			fmt.Fprintf(&b, ", ETA %s", (time.Duration(float64(rem) / rate * float64(time.Second))).Round(time.Second))
		}
	}
	if len(p.stores) > 0 {
		var parts []string
		for i, s := range p.stores {
			if i == 3 {
				parts = append(parts, fmt.Sprintf("+%d stores", len(p.stores)-3))
				break
			}
			parts = append(parts, fmt.Sprintf("%s %d", s, p.failed[s]))
		}
		fmt.Fprintf(&b, ", failed: %s", strings.Join(parts, ", "))
	}
	return b.String()
}

// show draws the progress, at most every 100 ms on a terminal and every
// second otherwise, unless force.
func (p *progress) show(force bool) {
	every := time.Second
	if p.terminal {
		every = 100 * time.Millisecond
	}
	if !force && time.Since(p.shown) < every {
		return
	}
	p.shown = time.Now()
	line := p.line()
	if !p.terminal {
		if line != p.lastLine {
			fmt.Fprintf(p.out, "job %d: %s\n", p.id, line)
			p.lastLine = line
		}
		return
	}
	const width = 30
	filled := 0
	if p.total > 0 {
		filled = width * len(p.settled) / p.total
	}
	fmt.Fprintf(p.out, "\r\x1b[Kjob %d [%s%s] %s", p.id, strings.Repeat("#", filled), strings.Repeat("-", width-filled), line)
	p.drawn = true
}

// note shows a message (a reconnect) on its own line.
func (p *progress) note(msg string) {
	p.finish()
	fmt.Fprintf(p.out, "job %d: %s\n", p.id, msg)
}

// finish ends the bar's line.
func (p *progress) finish() {
	if p.drawn {
		fmt.Fprintln(p.out)
		p.drawn = false
	}
}
