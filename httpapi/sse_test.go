package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// The event-stream tests run the real event log (embedded JetStream), the
// real projection for Jobs.Status, and the handler on an httptest server.
// Jobs are written straight to the log, as their owners would.

// logJobs is Jobs on the real log and projection.
type logJobs struct {
	log   *jsstore.EventLog
	proj  *jsstore.Projection
	model *events.ReadModel
}

func (j logJobs) Submit(ctx context.Context, job *events.JobSubmitted, key string) (uint64, bool, error) {
	return j.log.Submit(ctx, job, key)
}

func (j logJobs) Status(ctx context.Context, id uint64) (events.JobView, error) {
	if err := j.proj.SyncJob(ctx, id); err != nil {
		return events.JobView{}, err
	}
	if v, ok := j.model.Job(id); ok {
		return v, nil
	}
	return events.JobView{}, events.ErrJobNotFound
}

// countingObserver counts what a StreamObserver is told.
type countingObserver struct {
	mu                             sync.Mutex
	opened, closed, overflow, sent map[string]int
}

func newCountingObserver() *countingObserver {
	return &countingObserver{opened: map[string]int{}, closed: map[string]int{}, overflow: map[string]int{}, sent: map[string]int{}}
}

func (o *countingObserver) StreamOpened(door string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.opened[door]++
}

func (o *countingObserver) StreamClosed(door string, overflowed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed[door]++
	if overflowed {
		o.overflow[door]++
	}
}

func (o *countingObserver) EventsSent(door string, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sent[door] += n
}

func (o *countingObserver) get(m map[string]int, door string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return m[door]
}

type sseEnv struct {
	t       *testing.T
	log     *jsstore.EventLog
	streams *Streams
	obs     *countingObserver
	srv     *httptest.Server
	fences  map[uint64]uint64
	ends    *atomic.Int64 // the streams' JobCompleted requests to the log
}

// endCountingLog counts the requests for where a job ends.
type endCountingLog struct {
	EventLog
	n *atomic.Int64
}

func (l endCountingLog) JobCompleted(ctx context.Context, id uint64) (uint64, error) {
	l.n.Add(1)
	return l.EventLog.JobCompleted(ctx, id)
}

// newSSEEnv starts the log, the projection, the streams and the server.
// scfg's Log and Observer are filled in; configure may change the server
// before it starts.
func newSSEEnv(t *testing.T, scfg StreamsConfig, cfg Config, configure func(*http.Server)) *sseEnv {
	t.Helper()
	eventLog := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	model := events.NewReadModel()
	proj := jsstore.NewProjection(eventLog, model, slog.New(slog.DiscardHandler), nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() { _ = proj.Run(ctx) })

	env := &sseEnv{t: t, log: eventLog, obs: newCountingObserver(), fences: map[uint64]uint64{}, ends: new(atomic.Int64)}
	scfg.Log, scfg.Observer = endCountingLog{eventLog, env.ends}, env.obs
	streams, err := NewStreams(scfg)
	if err != nil {
		t.Fatal(err)
	}
	env.streams = streams
	wg.Go(func() { _ = streams.Run(ctx) })
	cfg.Jobs, cfg.Streams = logJobs{eventLog, proj, model}, streams
	h := mustHandler(t, cfg)
	env.srv = httptest.NewUnstartedServer(h)
	if configure != nil {
		configure(env.srv.Config)
	}
	env.srv.Start()
	t.Cleanup(env.srv.Close)
	t.Cleanup(streams.Close) // before the server closes: streams must not hold it up
	jstest.CheckFor(t, 10*time.Second, func() error {
		select {
		case <-streams.started:
			return nil
		default:
			return fmt.Errorf("the streams' tail has not started")
		}
	})
	return env
}

// submit stores a job of n images and returns its id.
func (e *sseEnv) submit(n int) uint64 {
	e.t.Helper()
	urls := make([]string, n)
	for i := range urls {
		urls[i] = fmt.Sprintf("http://img.example/%d.jpg", i)
	}
	id, _, err := e.log.Submit(context.Background(), &events.JobSubmitted{Count: 1,
		Visits: []events.Visit{{StoreID: "S1", ImageURLs: urls, VisitTime: "t"}}, SubmittedAt: time.Now().UTC()}, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// write appends events to the job as its owner would (fenced).
func (e *sseEnv) write(id uint64, kind string, evs ...events.Event) uint64 {
	e.t.Helper()
	seq, err := e.log.Append(context.Background(), id, kind, e.fences[id], fmt.Sprintf("test/%d/%d", id, e.fences[id]), evs...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.fences[id] = seq
	return seq
}

// images returns outcomes for images [from, to) of a job's only visit;
// every fifth one fails.
func images(from, to int) []events.Event {
	var evs []events.Event
	for i := from; i < to; i++ {
		if i%5 == 4 {
			evs = append(evs, &events.ImageFailed{ImageRef: events.ImageRef{Index: i}, StoreID: "S1", URL: fmt.Sprintf("http://img.example/%d.jpg", i), Reason: "http 404", At: time.Now().UTC()})
			continue
		}
		evs = append(evs, &events.ImageProcessed{ImageRef: events.ImageRef{Index: i}, StoreID: "S1", Width: i, Height: 2, Perimeter: 2 * (i + 2), At: time.Now().UTC()})
	}
	return evs
}

func (e *sseEnv) complete(id uint64) uint64 {
	return e.write(id, events.KindCompleted, &events.JobCompleted{Status: events.StatusFailed, At: time.Now().UTC()})
}

// sseEvent is one received frame.
type sseEvent struct {
	ID, Event string
	Data      map[string]any
}

// logEvents returns what a stream of the job (job != 0) or of every job
// must send for the messages in [from, to], read from the log.
func (e *sseEnv) logEvents(job, from, to uint64) []sseEvent {
	e.t.Helper()
	var out []sseEvent
	err := e.log.ReadAll(context.Background(), from, to, func(r events.Record, err error) error {
		if err != nil {
			return err
		}
		id := r.Seq
		if r.Subject != events.SubjectSubmitted {
			id, _, _ = events.ParseJobSubject(r.Subject)
		}
		if job != 0 && id != job {
			return nil
		}
		for i, ev := range r.Events {
			b, _ := json.Marshal(ev)
			data := map[string]any{}
			if err := json.Unmarshal(b, &data); err != nil {
				return err
			}
			data["job_id"] = float64(id)
			out = append(out, sseEvent{ID: fmt.Sprintf("%d-%d", r.Seq, i), Event: string(ev.EventType()), Data: data})
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// sseConn is an open event stream.
type sseConn struct {
	resp     *http.Response
	events   chan sseEvent // closed at the end of the stream
	comments chan string
	done     chan struct{}
}

// open requests path with header pairs and, on 200, starts reading its
// frames.
func (e *sseEnv) open(client *http.Client, path string, header ...string) (*sseConn, *http.Response) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if client == nil {
		client = e.srv.Client()
	}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		return nil, resp
	}
	c := &sseConn{resp: resp, events: make(chan sseEvent, 1_000_000), comments: make(chan string, 1000), done: make(chan struct{})}
	e.t.Cleanup(func() { resp.Body.Close(); <-c.done })
	go c.read(e.t)
	return c, resp
}

func (c *sseConn) read(t *testing.T) {
	defer close(c.done)
	defer close(c.events)
	r := bufio.NewReaderSize(c.resp.Body, 1<<20)
	var ev sseEvent
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.Event != "" {
				c.events <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			select {
			case c.comments <- line:
			default:
			}
		case strings.HasPrefix(line, "id: "):
			ev.ID = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.Event = line[7:]
		case strings.HasPrefix(line, "data: "):
			ev.Data = map[string]any{}
			if err := json.Unmarshal([]byte(line[6:]), &ev.Data); err != nil {
				t.Errorf("data is not one JSON object: %v: %.200s", err, line)
			}
		default:
			t.Errorf("unexpected line %q", line)
		}
	}
}

// next returns the next event, failing the test after 10 s; ok is false
// at the end of the stream.
func (c *sseConn) next(t *testing.T) (sseEvent, bool) {
	t.Helper()
	select {
	case ev, ok := <-c.events:
		return ev, ok
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return sseEvent{}, false
}

// collect reads n events.
func (c *sseConn) collect(t *testing.T, n int) []sseEvent {
	t.Helper()
	var out []sseEvent
	for len(out) < n {
		ev, ok := c.next(t)
		if !ok {
			t.Fatalf("stream ended after %d events, want %d", len(out), n)
		}
		out = append(out, ev)
	}
	return out
}

// rest reads until the end of the stream.
func (c *sseConn) rest(t *testing.T) []sseEvent {
	t.Helper()
	var out []sseEvent
	for {
		ev, ok := c.next(t)
		if !ok {
			return out
		}
		out = append(out, ev)
	}
}

func sameEvents(t *testing.T, got, want []sseEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d\ngot  %s\nwant %s", len(got), len(want), eventIDs(got), eventIDs(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("event %d:\ngot  %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

func eventIDs(evs []sseEvent) string {
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.ID+":"+e.Event)
	}
	return strings.Join(ids, " ")
}

// historySources run a test with the history in the tail's recent
// messages, and with (almost) all of it read from the log.
var historySources = []struct {
	name   string
	recent int
}{
	{"recent messages", 0},
	{"from the log", 1},
}

func TestStreams_JobHistoryThenLiveEqualsTheLog(t *testing.T) {
	for _, src := range historySources {
		t.Run(src.name, func(t *testing.T) { testJobHistoryThenLive(t, src.recent) })
	}
}

func testJobHistoryThenLive(t *testing.T, recent int) {
	env := newSSEEnv(t, StreamsConfig{Recent: recent}, Config{}, nil)
	other := env.submit(3)
	id := env.submit(30)
	env.write(id, events.KindStarted, &events.JobStarted{Attempt: 1, Owner: "test"})
	env.write(other, events.KindStarted, &events.JobStarted{Attempt: 1, Owner: "test"})
	env.write(id, events.KindImages, images(0, 10)...)

	c, resp := env.open(nil, fmt.Sprintf("/api/jobs/%d/events", id))
	if c == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	// Unchunked, ended by closing the connection: one system call a write.
	if len(resp.TransferEncoding) != 0 || resp.ContentLength != -1 || !resp.Close {
		t.Fatalf("Transfer-Encoding %q, Content-Length %d, Connection: close %v; want an unchunked body the connection's close ends", resp.TransferEncoding, resp.ContentLength, resp.Close)
	}
	history := c.collect(t, 1+1+10) // submitted, started, 10 images
	env.write(other, events.KindImages, images(0, 3)...)
	env.write(id, events.KindImages, images(10, 25)...)
	env.write(id, events.KindImages, images(25, 30)...)
	last := env.complete(id)
	env.complete(other)
	got := append(history, c.rest(t)...)
	sameEvents(t, got, env.logEvents(id, 1, last))
	if got[len(got)-1].Event != string(events.TypeJobCompleted) {
		t.Fatalf("the stream did not end with job_completed: %+v", got[len(got)-1])
	}

	// The same stream opened after the job completed is its history alone,
	// and a reconnect after its last event is told to stop (204). Only
	// that reconnect asks the log where the job ends.
	c, _ = env.open(nil, fmt.Sprintf("/api/jobs/%d/events", id))
	sameEvents(t, c.rest(t), env.logEvents(id, 1, last))
	if n := env.ends.Load(); n != 0 {
		t.Fatalf("new streams asked the log where the job ends %d times", n)
	}
	_, resp = env.open(nil, fmt.Sprintf("/api/jobs/%d/events", id), "Last-Event-ID", fmt.Sprintf("%d-0", last))
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("reconnect after job_completed: %d, want 204", resp.StatusCode)
	}
	if n := env.ends.Load(); n != 1 {
		t.Fatalf("the reconnect asked the log where the job ends %d times, want 1", n)
	}
	jstest.CheckFor(t, 5*time.Second, func() error {
		if o, c := env.obs.get(env.obs.opened, DoorJob), env.obs.get(env.obs.closed, DoorJob); o != 2 || c != 2 {
			return fmt.Errorf("streams opened %d, closed %d; want 2 and 2", o, c)
		}
		if n := env.obs.get(env.obs.sent, DoorJob); n != 2*len(got) {
			return fmt.Errorf("events sent %d, want %d", n, 2*len(got))
		}
		return nil
	})
}

func TestStreams_ResumeAfterServerDisconnectLosesAndRepeatsNothing(t *testing.T) {
	tests := []struct {
		name   string
		recent int
		resume func(env *sseEnv, path, lastID string) *sseConn
	}{
		{"Last-Event-ID header", 0, func(env *sseEnv, path, lastID string) *sseConn {
			c, _ := env.open(nil, path, "Last-Event-ID", lastID)
			return c
		}},
		{"last_event_id parameter", 0, func(env *sseEnv, path, lastID string) *sseConn {
			c, _ := env.open(nil, path+"?last_event_id="+lastID)
			return c
		}},
		{"Last-Event-ID header, history from the log", 1, func(env *sseEnv, path, lastID string) *sseConn {
			c, _ := env.open(nil, path, "Last-Event-ID", lastID)
			return c
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newSSEEnv(t, StreamsConfig{Recent: tt.recent}, Config{}, nil)
			id := env.submit(40)
			path := fmt.Sprintf("/api/jobs/%d/events", id)
			env.write(id, events.KindStarted, &events.JobStarted{Attempt: 1})
			c, _ := env.open(nil, path)
			got := c.collect(t, 2)
			env.write(id, events.KindImages, images(0, 10)...)
			// Cut mid-message: the resume point is inside a batch.
			got = append(got, c.collect(t, 4)...)
			env.srv.CloseClientConnections()
			got = append(got, c.rest(t)...) // what was already on the wire
			env.write(id, events.KindImages, images(10, 30)...)

			c = tt.resume(env, path, got[len(got)-1].ID)
			if c == nil {
				t.Fatal("resume refused")
			}
			got = append(got, c.collect(t, 1)...)
			env.write(id, events.KindImages, images(30, 40)...)
			last := env.complete(id)
			got = append(got, c.rest(t)...)
			sameEvents(t, got, env.logEvents(id, 1, last))
		})
	}
}

func TestStreams_FirehoseFromSinceOrNow(t *testing.T) {
	for _, src := range historySources {
		t.Run(src.name, func(t *testing.T) { testFirehose(t, src.recent) })
	}
}

func testFirehose(t *testing.T, recent int) {
	env := newSSEEnv(t, StreamsConfig{Recent: recent}, Config{}, nil)
	a := env.submit(5)
	env.write(a, events.KindStarted, &events.JobStarted{Attempt: 1})
	b := env.submit(5)
	env.write(a, events.KindImages, images(0, 5)...)
	env.write(b, events.KindStarted, &events.JobStarted{Attempt: 1})
	mid := env.write(b, events.KindImages, images(0, 3)...)
	before, _ := env.log.LastSeq(context.Background())

	type open struct {
		query  string
		header []string
	}
	tests := []struct {
		name  string
		open  open
		from  uint64 // first sequence expected
		types []string
	}{
		{"since the first job", open{query: fmt.Sprintf("?since=%d", a)}, a, nil},
		{"since 0 is the start", open{query: "?since=0"}, 1, nil},
		{"since a later message", open{query: fmt.Sprintf("?since=%d", mid)}, mid, nil},
		{"Last-Event-ID wins over since", open{query: "?since=1", header: []string{"Last-Event-ID", fmt.Sprintf("%d-1", mid)}}, mid, nil},
		{"from now", open{}, before + 1, nil},
		{"types", open{query: fmt.Sprintf("?since=%d&type=job_completed,image_failed", a)}, a, []string{"job_completed", "image_failed"}},
	}
	conns := make([]*sseConn, len(tests))
	for i, tt := range tests {
		c, resp := env.open(nil, "/api/events"+tt.open.query, tt.open.header...)
		if c == nil {
			t.Fatalf("%s: status %d", tt.name, resp.StatusCode)
		}
		conns[i] = c
	}
	// Every stream has subscribed to the tail before the live writes.
	jstest.CheckFor(t, 10*time.Second, func() error {
		if n := env.streams.subscribers(); n != len(tests) {
			return fmt.Errorf("%d subscribers, want %d", n, len(tests))
		}
		return nil
	})
	env.write(b, events.KindImages, images(3, 5)...)
	env.complete(a)
	last := env.complete(b)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := env.logEvents(0, tt.from, last)
			if tt.name == "Last-Event-ID wins over since" {
				want = want[2:] // strictly after mid-1; mid's batch starts at index 0
			}
			if tt.types != nil {
				var kept []sseEvent
				for _, ev := range want {
					if ev.Event == tt.types[0] || ev.Event == tt.types[1] {
						kept = append(kept, ev)
					}
				}
				want = kept
			}
			sameEvents(t, conns[i].collect(t, len(want)), want)
		})
	}
}

func TestStreams_OverflowClosesOnlyTheSlowClient(t *testing.T) {
	// Small socket buffers on both ends make the server's writes to a
	// client that reads nothing block soon.
	// A buffer of 32 messages leaves the fast client slack on a busy machine;
	// the slow client, reading nothing, overflows it all the same.
	env := newSSEEnv(t, StreamsConfig{Buffer: 32, WriteTimeout: time.Minute}, Config{}, func(s *http.Server) {
		s.ConnState = func(c net.Conn, state http.ConnState) {
			if tc, ok := c.(*net.TCPConn); ok && state == http.StateNew {
				_ = tc.SetWriteBuffer(4096)
			}
		}
	})
	id := env.submit(200)
	slow := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}).DialContext}}
	defer slow.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, env.srv.URL+"/api/events", nil)
	slowResp, err := slow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer slowResp.Body.Close()
	fast, _ := env.open(nil, "/api/events")
	jstest.CheckFor(t, 10*time.Second, func() error {
		if n := env.streams.subscribers(); n != 2 {
			return fmt.Errorf("%d subscribers, want 2", n)
		}
		return nil
	})

	// Large messages until the slow client has fallen behind: the tail
	// drops it.
	// The fast client reads each message before the next is written, so
	// only the slow one can fall behind, however busy the machine.
	first := env.write(id, events.KindStarted, &events.JobStarted{Attempt: 1})
	got := fast.collect(t, 1)
	for i := 0; env.streams.subscribers() == 2; i++ {
		if i == 400 {
			t.Fatal("the slow client never fell behind")
		}
		env.write(id, events.KindImages, images(0, 200)...)
		got = append(got, fast.collect(t, 200)...)
	}
	last := env.complete(id)
	got = append(got, fast.collect(t, 1)...)
	want := env.logEvents(id, first, last)
	sameEvents(t, got, want)
	if n := env.streams.subscribers(); n != 1 {
		t.Fatalf("%d subscribers after the overflow, want the fast one", n)
	}

	// The slow client's stream ends with the overflow event naming where
	// to resume.
	slowConn := &sseConn{resp: slowResp, events: make(chan sseEvent, 1_000_000), comments: make(chan string, 10), done: make(chan struct{})}
	slowConn.read(t)
	var lastEv sseEvent
	n := 0
	for ev := range slowConn.events {
		lastEv = ev
		n++
	}
	if lastEv.Event != "overflow" || lastEv.Data["last_event_id"] == "" {
		t.Fatalf("last of %d events of the slow stream: %+v, want an overflow event", n, lastEv)
	}
	jstest.CheckFor(t, 5*time.Second, func() error {
		if o, f := env.obs.get(env.obs.overflow, DoorAll), env.obs.get(env.obs.closed, DoorAll); o != 1 || f != 1 {
			return fmt.Errorf("%d streams closed, %d for overflow; want 1 and 1", f, o)
		}
		return nil
	})
}

func TestStreams_MaxStreamsAnswers503(t *testing.T) {
	env := newSSEEnv(t, StreamsConfig{MaxStreams: 2}, Config{}, nil)
	id := env.submit(1)
	a, _ := env.open(nil, "/api/events")
	env.open(nil, fmt.Sprintf("/api/jobs/%d/events", id))
	for _, path := range []string{"/api/events", fmt.Sprintf("/api/jobs/%d/events", id)} {
		_, resp := env.open(nil, path)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s beyond --max-streams: %d, Retry-After %q; want 503 with Retry-After", path, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	a.resp.Body.Close()
	jstest.CheckFor(t, 10*time.Second, func() error {
		c, resp := env.open(nil, "/api/events")
		if c == nil {
			return fmt.Errorf("after a stream closed: %d", resp.StatusCode)
		}
		return nil
	})
}

func TestStreams_RefusesBadRequests(t *testing.T) {
	env := newSSEEnv(t, StreamsConfig{}, Config{APITokens: []string{"secret"}}, nil)
	id := env.submit(1)
	auth := []string{"Authorization", "Bearer secret"}
	tests := []struct {
		name   string
		path   string
		header []string
		code   int
		body   string // exact, or a substring when it starts with ~
	}{
		{"no token", "/api/events", nil, 401, "~bearer token"},
		{"no token, job", fmt.Sprintf("/api/jobs/%d/events", id), nil, 401, "~bearer token"},
		{"malformed job id", "/api/jobs/abc/events", auth, 400, "{}"},
		{"job id 0", "/api/jobs/0/events", auth, 400, "{}"},
		{"unknown job", fmt.Sprintf("/api/jobs/%d/events", id+100), auth, 404, "~not found"},
		{"malformed Last-Event-ID", fmt.Sprintf("/api/jobs/%d/events", id), append([]string{"Last-Event-ID", "x"}, auth...), 400, "~event id"},
		{"malformed since", "/api/events?since=-1", auth, 400, "~since"},
		{"unknown type", "/api/events?type=job_submitted,nope", auth, 400, "~nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, resp := env.open(nil, tt.path, tt.header...)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tt.code)
			}
			if want, ok := strings.CutPrefix(tt.body, "~"); ok && !strings.Contains(string(body), want) || !ok && string(body) != tt.body {
				t.Fatalf("body %s, want %s", body, tt.body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
	t.Run("method", func(t *testing.T) {
		resp, err := http.Post(env.srv.URL+"/api/events", "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 && resp.StatusCode != 401 {
			t.Fatalf("POST: %d", resp.StatusCode)
		}
	})
}

func TestStreams_ServerTimeoutsDoNotCutStreamsAndKeepAlivesFlow(t *testing.T) {
	env := newSSEEnv(t, StreamsConfig{KeepAlive: 50 * time.Millisecond}, Config{}, func(s *http.Server) {
		s.ReadTimeout, s.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond
	})
	c, _ := env.open(nil, "/api/events")
	jstest.CheckFor(t, 10*time.Second, func() error {
		if env.streams.subscribers() != 1 {
			return fmt.Errorf("not subscribed")
		}
		return nil
	})
	time.Sleep(600 * time.Millisecond) // three times the server's timeouts
	id := env.submit(1)
	ev, ok := c.next(t)
	if !ok || ev.Event != string(events.TypeJobSubmitted) || ev.Data["job_id"] != float64(id) {
		t.Fatalf("after the server's timeouts: %+v (open %v), want job %d's submission", ev, ok, id)
	}
	if n := len(c.comments); n < 5 {
		t.Fatalf("%d keep-alive comments in 600ms at 50ms, want at least 5", n)
	}
}

func TestStreams_CloseEndsOpenStreams(t *testing.T) {
	env := newSSEEnv(t, StreamsConfig{}, Config{}, nil)
	id := env.submit(1)
	all, _ := env.open(nil, "/api/events")
	job, _ := env.open(nil, fmt.Sprintf("/api/jobs/%d/events", id))
	job.collect(t, 1)
	env.streams.Close()
	for _, c := range []*sseConn{all, job} {
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			t.Fatal("a stream is still open after Close")
		}
	}
	if _, resp := env.open(nil, "/api/events"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a stream after Close: %d, want 503", resp.StatusCode)
	}
}

func TestParsePosition(t *testing.T) {
	tests := []struct {
		in   string
		want position
		ok   bool
	}{
		{"42-0", position{42, 0}, true},
		{"7-12", position{7, 12}, true},
		{"42", position{}, false},
		{"-1", position{}, false},
		{"a-1", position{}, false},
		{"1-a", position{}, false},
		{"1--1", position{}, false},
		{"", position{}, false},
	}
	for _, tt := range tests {
		got, err := parsePosition(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parsePosition(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// History reads of every job's events each hold one of the log's consumers:
// at most MaxHistoryReads run at once, and the others wait their turn.
func TestStreams_HistoryReadsWaitForAFreeRead(t *testing.T) {
	env := newSSEEnv(t, StreamsConfig{MaxHistoryReads: 1, Recent: 1, WriteTimeout: time.Minute}, Config{}, func(s *http.Server) {
		s.ConnState = func(c net.Conn, state http.ConnState) {
			if tc, ok := c.(*net.TCPConn); ok && state == http.StateNew {
				_ = tc.SetWriteBuffer(4096)
			}
		}
	})
	id := env.submit(200)
	for range 20 {
		env.write(id, events.KindImages, images(0, 200)...)
	}
	last, _ := env.log.LastSeq(context.Background())
	// A client that reads nothing holds the only history read.
	slow := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}).DialContext}}
	slowResp, err := slow.Get(env.srv.URL + "/api/events?since=1")
	if err != nil {
		t.Fatal(err)
	}
	defer slowResp.Body.Close()
	// Its headers come before its read takes the slot: wait for the read.
	jstest.CheckFor(t, 10*time.Second, func() error {
		if n := len(env.streams.historyReads); n != 1 {
			return fmt.Errorf("%d history reads running, want the slow client's", n)
		}
		return nil
	})
	waiting, _ := env.open(nil, "/api/events?since=1")
	select {
	case ev := <-waiting.events:
		t.Fatalf("a second history read ran while the only one was taken: %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
	slowResp.Body.Close()
	slow.CloseIdleConnections()
	want := env.logEvents(0, 1, last)
	sameEvents(t, waiting.collect(t, len(want)), want)
}

func TestStreams_RecentMessagesAreBounded(t *testing.T) {
	sub := func(n int) events.Record { // a submission of n images
		urls := make([]string, n)
		for i := range urls {
			urls[i] = strings.Repeat("u", 100)
		}
		return events.Record{Subject: events.SubjectSubmitted, Events: []events.Event{&events.JobSubmitted{Visits: []events.Visit{{ImageURLs: urls}}}}}
	}
	tests := []struct {
		name        string
		recent      int
		recentBytes int64
		records     []events.Record
		wantFrom    uint64 // sequence of the oldest kept
		wantKept    int
	}{
		{"by count", 3, 1 << 20, []events.Record{sub(1), sub(1), sub(1), sub(1), sub(1)}, 3, 3},
		{"by size", 100, 30_000, []events.Record{sub(100), sub(100), sub(100), sub(100)}, 3, 2},
		{"the newest is kept whatever its size", 100, 1000, []events.Record{sub(1), sub(1000)}, 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewStreams(StreamsConfig{Log: &jsstore.EventLog{}, Recent: tt.recent, RecentBytes: tt.recentBytes})
			if err != nil {
				t.Fatal(err)
			}
			s.recentFrom = 1
			for i, r := range tt.records {
				r.Seq = uint64(i + 1)
				_ = s.dispatch(r, nil)
			}
			if s.recentFrom != tt.wantFrom || len(s.recent) != tt.wantKept || s.recent[0].rec.Seq != tt.wantFrom {
				t.Fatalf("kept %d from %d, want %d from %d", len(s.recent), s.recentFrom, tt.wantKept, tt.wantFrom)
			}
		})
	}
}

// stallingLog is the real log whose first tail never delivers anything, as
// a reader whose server died without the client library noticing.
type stallingLog struct {
	*jsstore.EventLog
	mu    sync.Mutex
	tails int
}

func (l *stallingLog) Tail(ctx context.Context, after uint64, fn func(events.Record, error) error) error {
	l.mu.Lock()
	l.tails++
	first := l.tails == 1
	l.mu.Unlock()
	if first {
		<-ctx.Done()
		return ctx.Err()
	}
	return l.EventLog.Tail(ctx, after, fn)
}

func TestStreams_StalledTailIsRestartedWhereItStopped(t *testing.T) {
	eventLog := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{})
	stalling := &stallingLog{EventLog: eventLog}
	streams, err := NewStreams(StreamsConfig{Log: stalling, StallTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = streams.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	<-streams.started // the tail starts at the log's end: empty
	var got []uint64
	for range 3 {
		id, _, err := eventLog.Submit(ctx, &events.JobSubmitted{Count: 1, Visits: []events.Visit{{StoreID: "S1", ImageURLs: []string{"u"}}}}, "")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, id)
	}
	jstest.CheckFor(t, 10*time.Second, func() error {
		streams.mu.Lock()
		defer streams.mu.Unlock()
		if streams.pos != got[2] {
			return fmt.Errorf("the tail handed out up to %d, the log holds %d", streams.pos, got[2])
		}
		return nil
	})
	if len(streams.recent) != 3 || streams.recent[0].rec.Seq != got[0] {
		t.Fatalf("recent messages %d from %d: a message was skipped or repeated", len(streams.recent), streams.recent[0].rec.Seq)
	}
}

// failingWriter is a ResponseWriter whose connection is gone.
type failingWriter struct{ http.ResponseWriter }

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("connection reset") }

// A stream gathers frames into one write of about maxUnsent bytes, in
// order, and holds no buffer once they are written or the client is gone.
func TestStream_GathersFramesAndHoldsNoBufferBetweenWrites(t *testing.T) {
	frame := func(i, size int) []byte {
		b := bytes.Repeat([]byte{'a' + byte(i%26)}, size-1)
		return append(b, '\n')
	}
	tests := []struct {
		name   string
		sizes  []int
		writes int // writes before the flush
	}{
		{"small frames wait for the flush", []int{100, 200, 300}, 0},
		{"a full buffer is written", []int{maxUnsent / 2, maxUnsent / 2, 10}, 1},
		{"a large frame alone is written as it is", []int{maxUnsent + 1}, 1},
		{"a large frame after small ones goes with them", []int{10, maxUnsent + 1, 10}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			writes := 0
			w := writeCounter{ResponseWriter: rec, n: &writes}
			st := &stream{s: &Streams{writeTimeout: time.Second, obs: nopObserver{}}, w: w, rc: http.NewResponseController(w)}
			var want []byte
			for i, n := range tt.sizes {
				f := frame(i, n)
				want = append(want, f...)
				if err := st.put(f); err != nil {
					t.Fatal(err)
				}
			}
			if writes != tt.writes {
				t.Fatalf("%d writes before the flush, want %d", writes, tt.writes)
			}
			if err := st.flush(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rec.Body.Bytes(), want) {
				t.Fatalf("wrote %d bytes, not the %d bytes of the frames in order", rec.Body.Len(), len(want))
			}
			if st.buf != nil {
				t.Fatal("a buffer is held after the flush")
			}
		})
	}
	t.Run("client gone", func(t *testing.T) {
		w := failingWriter{httptest.NewRecorder()}
		st := &stream{s: &Streams{writeTimeout: time.Second, obs: nopObserver{}}, w: w, rc: http.NewResponseController(w)}
		if err := st.put(frame(0, 100)); err != nil {
			t.Fatal(err)
		}
		if err := st.flush(); err == nil {
			t.Fatal("flush to a gone client succeeded")
		}
		if st.buf != nil {
			t.Fatal("a buffer is held after a failed write")
		}
		if err := st.put(frame(1, 100)); err == nil || st.buf != nil {
			t.Fatalf("put after a failed write: %v, buffer held %v", err, st.buf != nil)
		}
	})
}

// writeCounter counts the writes that reach the connection.
type writeCounter struct {
	http.ResponseWriter
	n *int
}

func (w writeCounter) Write(b []byte) (int, error) {
	*w.n++
	return w.ResponseWriter.Write(b)
}

func (w writeCounter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Stream buffers come in a few sizes kept on free lists: the smallest
// that holds what is asked, a larger one as it grows, and one beyond the
// largest size is made to measure and not kept.
func TestUnsentBuffers_Sizes(t *testing.T) {
	tests := []struct {
		need, cap int
		kept      bool
	}{
		{1, 4 << 10, true},
		{4 << 10, 4 << 10, true},
		{4<<10 + 1, 16 << 10, true},
		{40 << 10, 64 << 10, true},
		{64<<10 + 1, 64<<10 + 1, false},
	}
	for _, tt := range tests {
		b := getUnsent(tt.need)
		if len(b.b) != 0 || cap(b.b) != tt.cap {
			t.Fatalf("getUnsent(%d): len %d cap %d, want 0 and %d", tt.need, len(b.b), cap(b.b), tt.cap)
		}
		b.b = append(b.b, "data"...)
		putUnsent(b)
		if got := len(b.b) == 0; got != tt.kept {
			t.Fatalf("a buffer of %d bytes given back: emptied for its free list %v, want %v", tt.cap, got, tt.kept)
		}
	}
}

// A stream waits up to its linger for more before writing, except for its
// job's end: job_completed is written, and the stream ended, at once.
func TestStreams_JobEndIsNotHeldByTheLinger(t *testing.T) {
	env := newSSEEnv(t, StreamsConfig{Linger: time.Minute}, Config{}, nil)
	id := env.submit(3)
	started := env.write(id, events.KindStarted, &events.JobStarted{Attempt: 1, Owner: "test"})
	// The shared tail has both messages: the stream gets them as history,
	// which is written at once, not as live messages, which would wait.
	jstest.CheckFor(t, 10*time.Second, func() error {
		env.streams.mu.Lock()
		defer env.streams.mu.Unlock()
		if env.streams.pos < started {
			return fmt.Errorf("the tail is at %d, not yet at %d", env.streams.pos, started)
		}
		return nil
	})
	c, resp := env.open(nil, fmt.Sprintf("/api/jobs/%d/events", id))
	if c == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c.collect(t, 2) // submitted, started
	start := time.Now()
	env.complete(id)
	got := c.rest(t)
	if len(got) != 1 || got[0].Event != string(events.TypeJobCompleted) {
		t.Fatalf("after the history: %+v, want job_completed alone", got)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("the job's end took %v: it waited for the linger", d)
	}
}

// discardWriter is a connection that takes every write and flush.
type discardWriter struct {
	h       http.Header
	written chan struct{} // told of every flush
}

func (w discardWriter) Header() http.Header              { return w.h }
func (w discardWriter) Write(b []byte) (int, error)      { return len(b), nil }
func (w discardWriter) WriteHeader(int)                  {}
func (w discardWriter) SetWriteDeadline(time.Time) error { return nil }
func (w discardWriter) FlushError() error                { w.written <- struct{}{}; return nil }

// A live stream allocates nothing per message it writes: a thousand
// streams writing on every append make no garbage, and so never help the
// collector mark while the API waits.
func TestStream_LiveWriteAllocatesNothing(t *testing.T) {
	if raceDetector {
		t.Skip("allocations are counted without the race detector (.ci/run runs them so)")
	}
	w := discardWriter{h: http.Header{}, written: make(chan struct{})}
	st := &stream{s: &Streams{writeTimeout: time.Second, keepAlive: time.Hour, linger: time.Microsecond, obs: nopObserver{}, logger: slog.New(slog.DiscardHandler)},
		w: w, rc: http.NewResponseController(w), door: DoorJob, job: 7, pos: before(7)}
	sub := &subscriber{job: 7, ch: make(chan *message, 1), dropped: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); st.live(ctx, sub) }()
	defer func() { cancel(); <-done }()
	seq := uint64(8)
	next := func() *message {
		m := newMessage(events.Record{Seq: seq, Subject: events.JobSubject(7, events.KindImages), Events: images(0, 3)}, nil)
		m.framesOf()
		seq++
		return m
	}
	msgs := make([]*message, 200)
	for i := range msgs {
		msgs[i] = next()
	}
	i := 0
	allocs := testing.AllocsPerRun(100, func() {
		sub.ch <- msgs[i]
		i++
		<-w.written
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per message written, want 0", allocs)
	}
}

// The tail encodes a message's frames as it hands the message to
// subscribers, so no client's goroutine encodes (allocates); a message no
// client wants is left to be encoded if a history ever needs it.
func TestStreams_TailEncodesFramesForItsSubscribers(t *testing.T) {
	s, err := NewStreams(StreamsConfig{Log: endCountingLog{n: new(atomic.Int64)}})
	if err != nil {
		t.Fatal(err)
	}
	close(s.started)
	s.recentFrom = 1
	sub, _, _, ok, err := s.join(context.Background(), 7, 1)
	if err != nil || !ok {
		t.Fatalf("join: %v %v", ok, err)
	}
	wanted := events.Record{Seq: 1, Subject: events.JobSubject(7, events.KindImages), Events: images(0, 2)}
	unwanted := events.Record{Seq: 2, Subject: events.JobSubject(8, events.KindImages), Events: images(0, 2)}
	for _, rec := range []events.Record{wanted, unwanted} {
		if err := s.dispatch(rec, nil); err != nil {
			t.Fatal(err)
		}
	}
	if m := <-sub.ch; m.frames == nil {
		t.Fatal("a subscriber got a message whose frames are not encoded")
	}
	if m := s.recent[1]; m.rec.Seq != 2 || m.frames != nil {
		t.Fatalf("message %d, no subscriber: frames encoded %v, want not yet", m.rec.Seq, m.frames != nil)
	}
}

// A buffer given back outlives garbage collections (a sync.Pool would
// drop it by the second): a stream that writes just after one takes it
// again instead of allocating.
func TestUnsentBuffers_OutliveCollections(t *testing.T) {
	allocs := testing.AllocsPerRun(20, func() {
		putUnsent(getUnsent(1))
		runtime.GC()
		runtime.GC()
		putUnsent(getUnsent(1))
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations to take a buffer after two collections, want 0", allocs)
	}
}
