//go:build unix

package main

// Helpers for tests that run the real binary as a child process: build it,
// start it on a loopback port, signal or kill it, talk to its HTTP API,
// serve it images, and read its data dir in-process while it is stopped.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
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

// procBuild builds this command (once per test binary run) and returns the
// binary. With RP_TEST_CHILD_RACE=1 the binary is built with the race
// detector and a race it reports fails the test.
func procBuild(t testing.TB) string {
	t.Helper()
	var args []string
	if os.Getenv("RP_TEST_CHILD_RACE") != "" {
		args = append(args, "-race")
	}
	return procGoBuild(t, "retailpulse", ".", args...)
}

// procBuilds holds the binaries procGoBuild built in this test binary run,
// so tests (and -count=N runs) share them. TestMain removes them.
var procBuilds = struct {
	sync.Mutex
	dir  string
	bins map[string]*procBuilt
}{bins: map[string]*procBuilt{}}

type procBuilt struct {
	once sync.Once
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := checkLateViolations(m.Run())
	if procBuilds.dir != "" {
		os.RemoveAll(procBuilds.dir)
	}
	os.Exit(code)
}

// procGoBuild runs `go build [args] pkg` from this package's directory
// (so go.mod decides every version) once per test binary run and returns
// the binary, named name.
func procGoBuild(t testing.TB, name, pkg string, args ...string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	key := strings.Join(append([]string{pkg}, args...), " ")
	procBuilds.Lock()
	if procBuilds.dir == "" {
		if procBuilds.dir, err = os.MkdirTemp("", "retailpulse-test-bin-"); err != nil {
			procBuilds.Unlock()
			t.Fatal(err)
		}
	}
	b, ok := procBuilds.bins[key]
	if !ok {
		b = &procBuilt{path: filepath.Join(procBuilds.dir, fmt.Sprintf("%d-%s", len(procBuilds.bins), name))}
		procBuilds.bins[key] = b
	}
	procBuilds.Unlock()
	b.once.Do(func() {
		start := time.Now()
		cmd := exec.Command(goTool, append(append([]string{"build", "-o", b.path}, args...), pkg)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", key, err, out)
			return
		}
		t.Logf("built %s (%s) in %s", name, key, time.Since(start).Round(time.Millisecond))
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// procBuffer collects a child's output; safe for concurrent use.
type procBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *procBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *procBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// procProc is a child process whose output is collected.
type procProc struct {
	name   string
	cmd    *exec.Cmd
	out    *procBuffer   // stdout and stderr
	stderr *procBuffer   // stderr only
	done   chan struct{} // closed once the process has exited and been reaped
	state  *os.ProcessState
}

// procSpawn starts bin with args. The process is killed when the test
// ends; if the test failed its output is logged (only the last tail bytes
// when tail > 0; not at all when tail < 0), and a data race it reported
// fails the test.
func procSpawn(t testing.TB, name string, tail int, bin string, args ...string) *procProc {
	t.Helper()
	p := &procProc{name: name, cmd: exec.Command(bin, args...), out: &procBuffer{}, stderr: &procBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, io.MultiWriter(p.out, p.stderr)
	p.cmd.Env = procEnv()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		out := p.out.String()
		if strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("%s: the race detector reported a data race", p.name)
		}
		if t.Failed() && tail >= 0 {
			if tail > 0 && len(out) > tail {
				out = "...\n" + out[len(out)-tail:]
			}
			t.Logf("output of %s (%s %s):\n%s", p.name, filepath.Base(bin), strings.Join(args, " "), out)
		}
	})
	procDiagCleanup(t)
	return p
}

// procDiags holds, per test, functions to run if the test fails, while its
// child processes still run.
var procDiags = struct {
	sync.Mutex
	m map[testing.TB]*procDiag
}{m: map[testing.TB]*procDiag{}}

type procDiag struct {
	fns []func()
	gen int // bumped by every registration; only the latest cleanup runs fns
}

// procOnFailure registers fn to run if t fails, before any child process
// of t is killed: cleanups run last-registered first, so every spawn
// registers a cleanup after its kill and only the latest one runs fn.
func procOnFailure(t testing.TB, fn func()) {
	t.Helper()
	procDiagsFor(t).fns = append(procDiagsFor(t).fns, fn)
	procDiagCleanup(t)
}

func procDiagsFor(t testing.TB) *procDiag {
	procDiags.Lock()
	defer procDiags.Unlock()
	d, ok := procDiags.m[t]
	if !ok {
		d = &procDiag{}
		procDiags.m[t] = d
		t.Cleanup(func() {
			procDiags.Lock()
			delete(procDiags.m, t)
			procDiags.Unlock()
		})
	}
	return d
}

func procDiagCleanup(t testing.TB) {
	d := procDiagsFor(t)
	d.gen++
	gen := d.gen
	t.Cleanup(func() {
		if t.Failed() && d.gen == gen {
			for _, fn := range d.fns {
				fn()
			}
		}
	})
}

func (p *procProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL (if the process still runs) and waits until it is
// reaped. Safe to call more than once.
func (p *procProc) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

func (p *procProc) signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
}

// waitExit waits up to total for the process to exit and returns its state
// and how long the wait took; it fails the test on timeout.
func (p *procProc) waitExit(t testing.TB, total time.Duration) (*os.ProcessState, time.Duration) {
	t.Helper()
	start := time.Now()
	select {
	case <-p.done:
		return p.state, time.Since(start)
	case <-time.After(total):
		t.Fatalf("%s still running after %s", p.name, total)
		return nil, 0
	}
}

// procRunTool runs bin with args to completion, bounded by total, and
// returns its exit code and output.
func procRunTool(t testing.TB, bin string, total time.Duration, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), total)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr, cmd.Env = &out, &errOut, procEnv()
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: still running after %s\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), strings.Join(args, " "), total, &out, &errOut)
	}
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// procChild is the service running as a child process.
type procChild struct {
	*procProc
	url    string
	client *http.Client
}

// procStart runs `retailpulse serve` on a free loopback port with dataDir,
// loopback images allowed, logging at warn, plus flags, and waits until it
// is ready. The process is killed when the test ends; its output is logged
// if the test failed.
func procStart(t testing.TB, bin, name, dataDir string, flags ...string) *procChild {
	t.Helper()
	return procStartWithin(t, 30*time.Second, bin, name, dataDir, flags...)
}

// procStartWithin is procStart waiting up to ready for readiness.
func procStartWithin(t testing.TB, ready time.Duration, bin, name, dataDir string, flags ...string) *procChild {
	t.Helper()
	for attempt := 1; ; attempt++ {
		c := procLaunch(t, bin, name, dataDir, flags...)
		err := c.waitReady(ready)
		if err == nil {
			return c
		}
		// Another process may have taken the port between our probe and the
		// child's bind.
		if c.exited() && attempt < 3 && strings.Contains(c.out.String(), "address already in use") {
			continue
		}
		t.Fatalf("%s: %v", name, err)
	}
}

// procLaunch starts `retailpulse serve` like procStart but does not wait
// for readiness.
func procLaunch(t testing.TB, bin, name, dataDir string, flags ...string) *procChild {
	t.Helper()
	addr := procFreeAddr(t)
	args := append([]string{"serve", "--addr", addr, "--data-dir", dataDir,
		"--allow-private-networks", "--log-level", "warn"}, flags...)
	return &procChild{
		procProc: procSpawn(t, name, 0, bin, args...),
		url:      "http://" + addr,
		client:   &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}},
	}
}

// procEnv is the test's environment without RETAILPULSE_* settings, so
// only the flags a test passes configure the child.
func procEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RETAILPULSE_") {
			env = append(env, kv)
		}
	}
	return env
}

func procFreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (c *procChild) waitReady(total time.Duration) error {
	deadline := time.Now().Add(total)
	for {
		if c.exited() {
			return fmt.Errorf("exited before it was ready: %v", c.state)
		}
		code, _, err := c.get("/readyz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s (last: %d %v)", total, code, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL (if the process still runs) and waits until it is
// reaped. Safe to call more than once.
func (c *procChild) kill() {
	c.procProc.kill()
	c.client.CloseIdleConnections()
}

// waitExit waits up to total for the process to exit and returns its state
// and how long the wait took; it fails the test on timeout.
func (c *procChild) waitExit(t testing.TB, total time.Duration) (*os.ProcessState, time.Duration) {
	t.Helper()
	ps, took := c.procProc.waitExit(t, total)
	c.client.CloseIdleConnections()
	return ps, took
}

// stop sends SIGTERM and requires a clean exit (code 0) within total.
func (c *procChild) stop(t testing.TB, total time.Duration) {
	t.Helper()
	c.signal(t, syscall.SIGTERM)
	ps, took := c.waitExit(t, total)
	if ps.ExitCode() != 0 {
		t.Fatalf("%s: exit after SIGTERM = %v (took %s), want code 0", c.name, ps, took)
	}
}

func (c *procChild) get(path string) (int, []byte, error) {
	return c.do("GET", path, "")
}

func (c *procChild) do(method, path, body string) (int, []byte, error) {
	code, _, b, err := c.doResp(method, path, body)
	return code, b, err
}

// doResp is do with the response's headers.
func (c *procChild) doResp(method, path, body string) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(method, c.url+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		recordViolations(contractViolations(req, resp.StatusCode, resp.Header, b))
	}
	return resp.StatusCode, resp.Header, b, err
}

// submit posts job. It returns the id on a 201; code is 0 when no answer
// came (connection refused or reset, timeout).
func (c *procChild) submit(job *procJob) (id uint64, code int, err error) {
	code, body, err := c.do("POST", "/api/submit/", job.body)
	if err != nil {
		return 0, code, err
	}
	if code != http.StatusCreated {
		return 0, code, fmt.Errorf("submit %s: %d %s", job.tag, code, body)
	}
	var out struct {
		JobID *uint64 `json:"job_id"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.JobID == nil {
		return 0, code, fmt.Errorf("submit %s: body %s: %v", job.tag, body, err)
	}
	return *out.JobID, code, nil
}

func (c *procChild) mustSubmit(t testing.TB, job *procJob) uint64 {
	t.Helper()
	id, _, err := c.submit(job)
	if err != nil {
		t.Fatal(err)
	}
	job.id = id
	return id
}

type procStatus struct {
	Status string              `json:"status"`
	JobID  string              `json:"job_id"`
	Error  []events.StoreError `json:"error"`
}

// status returns the status of job id.
func (c *procChild) status(id uint64) (procStatus, error) {
	code, body, err := c.get("/api/status?jobid=" + strconv.FormatUint(id, 10))
	if err != nil {
		return procStatus{}, err
	}
	if code != http.StatusOK {
		return procStatus{}, fmt.Errorf("status of job %d: %d %s", id, code, body)
	}
	var s procStatus
	if err := json.Unmarshal(body, &s); err != nil {
		return procStatus{}, fmt.Errorf("status of job %d: %s: %v", id, body, err)
	}
	return s, nil
}

// waitTerminal polls the status of every id until none is ongoing and
// returns the final statuses.
func (c *procChild) waitTerminal(t testing.TB, total time.Duration, ids []uint64) map[uint64]procStatus {
	t.Helper()
	got := map[uint64]procStatus{}
	jstest.CheckFor(t, total, func() error {
		for _, id := range ids {
			if _, ok := got[id]; ok {
				continue
			}
			s, err := c.status(id)
			if err != nil {
				return err
			}
			if s.Status == string(events.StatusOngoing) {
				return fmt.Errorf("job %d still ongoing (%d of %d jobs terminal)", id, len(got), len(ids))
			}
			got[id] = s
		}
		return nil
	})
	return got
}

// metric returns the value of an unlabelled metric from /metrics.
func (c *procChild) metric(name string) (float64, error) {
	code, body, err := c.get("/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics: %d", code)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("/metrics has no %s", name)
}

// waitMetric polls an unlabelled metric until it reaches at least min.
func (c *procChild) waitMetric(t testing.TB, total time.Duration, name string, min float64) float64 {
	t.Helper()
	var v float64
	jstest.CheckFor(t, total, func() error {
		var err error
		if v, err = c.metric(name); err != nil {
			return err
		}
		if v < min {
			return fmt.Errorf("%s = %v, want >= %v", name, v, min)
		}
		return nil
	})
	return v
}

// procImageServer serves a PNG of WxH at /img/<tag>/<W>x<H>/<name>.png,
// counts requests per path and can hold each response for a delay.
type procImageServer struct {
	*httptest.Server
	delay atomic.Int64 // nanoseconds

	mu     sync.Mutex
	counts map[string]int
	pngs   map[[2]int][]byte
}

func newProcImageServer(t testing.TB) *procImageServer {
	t.Helper()
	s := &procImageServer{counts: map[string]int{}, pngs: map[[2]int][]byte{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *procImageServer) setDelay(d time.Duration) { s.delay.Store(int64(d)) }

func (s *procImageServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.counts[r.URL.Path]++
	s.mu.Unlock()
	wd, ht, ok := procImageSize(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if d := time.Duration(s.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "image/png")
	w.Write(s.png(wd, ht))
}

func (s *procImageServer) png(w, h int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.pngs[[2]int{w, h}]; ok {
		return b
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, w, h))); err != nil {
		panic(err)
	}
	s.pngs[[2]int{w, h}] = buf.Bytes()
	return buf.Bytes()
}

// procImageSize parses the size out of /img/<tag>/<W>x<H>/<name>.png.
func procImageSize(path string) (w, h int, ok bool) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(parts) != 4 || parts[0] != "img" {
		return 0, 0, false
	}
	ws, hs, found := strings.Cut(parts[2], "x")
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	if !found || err1 != nil || err2 != nil || w <= 0 || h <= 0 || w > 4096 || h > 4096 {
		return 0, 0, false
	}
	return w, h, true
}

// snapshot returns a copy of the request counts per path.
func (s *procImageServer) snapshot() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int, len(s.counts))
	for k, v := range s.counts {
		m[k] = v
	}
	return m
}

func (s *procImageServer) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.counts {
		n += v
	}
	return n
}

// Known stores of the sample store master (storemaster/sample_stores.csv).
var procStores = []string{"S00339218", "S01408764", "S00000001", "S00000007", "S00000011", "S00000014", "S00000017"}

// procJob is one submission a test made or attempted.
type procJob struct {
	tag    string // unique; part of every image path
	visits []events.Visit
	body   string
	id     uint64 // set once a 201 came back
}

// procMakeJob returns a job of visits x perVisit unique images on known
// stores, each with its own size so perimeters can be checked.
func procMakeJob(baseURL, tag string, visits, perVisit int) *procJob {
	j := &procJob{tag: tag}
	for v := range visits {
		vis := events.Visit{
			StoreID:   procStores[(procHash(tag)+v)%len(procStores)],
			VisitTime: time.Date(2026, 3, 1, 9, v, 0, 0, time.UTC).Format(time.RFC3339),
		}
		for i := range perVisit {
			n := v*perVisit + i
			vis.ImageURLs = append(vis.ImageURLs, fmt.Sprintf("%s/img/%s/%dx%d/v%d-i%d.png", baseURL, tag, 8+n%37, 6+n%23, v, i))
		}
		j.visits = append(j.visits, vis)
	}
	b, err := json.Marshal(map[string]any{"count": len(j.visits), "visits": j.visits})
	if err != nil {
		panic(err)
	}
	j.body = string(b)
	return j
}

func procHash(s string) int {
	h := 0
	for _, c := range s {
		h = (h*31 + int(c)) & 0xffff
	}
	return h
}

func (j *procJob) images() int {
	n := 0
	for _, v := range j.visits {
		n += len(v.ImageURLs)
	}
	return n
}

// procPath returns the path of an image URL.
func procPath(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Path
}

// procTag returns the tag of a submission made by procMakeJob, from the
// path of its first image.
func procTag(sub *events.JobSubmitted) string {
	for _, v := range sub.Visits {
		for _, raw := range v.ImageURLs {
			if u, err := url.Parse(raw); err == nil {
				if parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/"); len(parts) == 4 {
					return parts[1]
				}
			}
		}
	}
	return ""
}

// procJobLog is one job as the event log holds it.
type procJobLog struct {
	ID       uint64
	Sub      *events.JobSubmitted
	State    *events.JobState // the fold over the job's whole history
	Outcomes map[events.ImageRef]int
	Perims   map[events.ImageRef]int // perimeter of each processed image
	Failures []string                // reasons of failed images
	FoldErrs []error
	Messages int
}

// url returns the URL of an image of the job.
func (j *procJobLog) url(ref events.ImageRef) string {
	return j.Sub.Visits[ref.Visit].ImageURLs[ref.Index]
}

// settledPaths returns the image server paths of every settled image.
func (j *procJobLog) settledPaths() []string {
	var out []string
	for ref := range j.Outcomes {
		out = append(out, procPath(j.url(ref)))
	}
	return out
}

// procLog is every job in a data dir's event log, in submission order.
type procLog struct {
	Jobs map[uint64]*procJobLog
	IDs  []uint64
	Bad  []error // submissions that did not decode
}

// procInspect opens dataDir's embedded store in-process (the service must
// not be running) and reads every job with procReadLog. It closes
// everything before returning.
func procInspect(t testing.TB, dataDir string, ackWait time.Duration) *procLog {
	t.Helper()
	ns, err := jsstore.StartServer(jsstore.ServerConfig{Name: "retailpulse", StoreDir: filepath.Join(dataDir, "nats"), SyncAlways: true})
	if err != nil {
		t.Fatalf("inspect %s: %v", dataDir, err)
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	nc, err := jsstore.ConnectInProcess(ns, "inspect")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store, err := jsstore.Open(ctx, nc, jsstore.Config{AckWait: ackWait})
	if err != nil {
		t.Fatalf("inspect %s: %v", dataDir, err)
	}
	return procReadLog(t, ctx, store, dataDir)
}

// procReadLog reads every job in store's log (embedded or a cluster):
// each submission and each message on the job's subjects, folded with
// events.NewJobState. what names the log in failures.
func procReadLog(t testing.TB, ctx context.Context, store *jsstore.EventLog, what string) *procLog {
	t.Helper()
	out := &procLog{Jobs: map[uint64]*procJobLog{}}
	ids, bad, err := procSubmissions(ctx, store)
	if err != nil {
		t.Fatalf("inspect %s: submissions: %v", what, err)
	}
	out.Bad = bad
	for _, id := range ids {
		h, err := store.LoadJob(ctx, id)
		if err != nil {
			t.Fatalf("inspect %s: %v", what, err)
		}
		j := &procJobLog{ID: id, Sub: h.Submitted, State: events.NewJobState(id, h.Submitted),
			Outcomes: map[events.ImageRef]int{}, Perims: map[events.ImageRef]int{}, Messages: len(h.Records)}
		for _, r := range h.Records {
			for _, ev := range r.Events {
				if _, err := j.State.Apply(ev); err != nil {
					j.FoldErrs = append(j.FoldErrs, fmt.Errorf("seq %d: %w", r.Seq, err))
				}
				switch e := ev.(type) {
				case *events.ImageProcessed:
					j.Outcomes[e.ImageRef]++
					j.Perims[e.ImageRef] = e.Perimeter
				case *events.ImageFailed:
					j.Outcomes[e.ImageRef]++
					j.Failures = append(j.Failures, e.Reason)
				}
			}
		}
		out.Jobs[id] = j
		out.IDs = append(out.IDs, id)
	}
	return out
}

// procSubmissions returns the sequence of every message on the submission
// subject, and an error for each one that does not decode to exactly one
// JobSubmitted.
func procSubmissions(ctx context.Context, store *jsstore.EventLog) (ids []uint64, bad []error, err error) {
	// The service's own reader: 1 s heartbeats and recreated where it
	// stopped, so a stream leader elected a moment ago cannot stall it.
	err = store.Scan(ctx, 1, 0, func(m jsstore.Message) error {
		switch {
		case m.Subject != events.SubjectSubmitted:
		case m.Err != nil:
			bad = append(bad, fmt.Errorf("submission %d: %w", m.Seq, m.Err))
		case len(m.Batch.Events) != 1:
			bad = append(bad, fmt.Errorf("submission %d: %d events", m.Seq, len(m.Batch.Events)))
		default:
			if _, ok := m.Batch.Events[0].(*events.JobSubmitted); !ok {
				bad = append(bad, fmt.Errorf("submission %d: %s", m.Seq, m.Batch.Events[0].EventType()))
				return nil
			}
			ids = append(ids, m.Seq)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return ids, bad, nil
}

// checkConsistent: the job's history folds without errors, no image has
// more than one outcome, and every perimeter is right.
func (j *procJobLog) checkConsistent(t testing.TB) {
	t.Helper()
	for _, err := range j.FoldErrs {
		t.Errorf("job %d: fold: %v", j.ID, err)
	}
	if j.State.Duplicates != 0 {
		t.Errorf("job %d: %d duplicate outcomes in the log", j.ID, j.State.Duplicates)
	}
	for ref, n := range j.Outcomes {
		if n != 1 {
			t.Errorf("job %d: image %+v (%s) has %d outcomes", j.ID, ref, j.url(ref), n)
		}
	}
	for ref, p := range j.Perims {
		path := procPath(j.url(ref))
		w, h, _ := procImageSize(path)
		if p != 2*(w+h) {
			t.Errorf("job %d: image %s perimeter %d, want %d", j.ID, path, p, 2*(w+h))
		}
	}
}

// checkDone: consistent, completed, and every image processed exactly once.
func (j *procJobLog) checkDone(t testing.TB) {
	t.Helper()
	j.checkConsistent(t)
	st := j.State
	if !st.Completed || st.Status != events.StatusCompleted {
		t.Errorf("job %d: completed=%v status=%s, want completed", j.ID, st.Completed, st.Status)
	}
	if st.Processed+st.Failed != st.Images || st.Failed != 0 || len(j.Outcomes) != st.Images {
		t.Errorf("job %d: processed %d + failed %d of %d images (%d with an outcome; failures %q)",
			j.ID, st.Processed, st.Failed, st.Images, len(j.Outcomes), j.Failures)
	}
}

// procMatchSubmissions checks the submissions in the log against the jobs
// the test attempted: every job that got a 201 is in the log under its id;
// every submission in the log is one the test attempted, stored whole.
func procMatchSubmissions(t testing.TB, lg *procLog, attempted []*procJob) {
	t.Helper()
	for _, err := range lg.Bad {
		t.Errorf("undecodable submission: %v", err)
	}
	byTag := map[string]*procJob{}
	for _, j := range attempted {
		byTag[j.tag] = j
		if j.id == 0 {
			continue
		}
		got, ok := lg.Jobs[j.id]
		if !ok {
			t.Errorf("job %d (%s) got a 201 but is not in the log", j.id, j.tag)
			continue
		}
		if tag := procTag(got.Sub); tag != j.tag {
			t.Errorf("job %d: log holds %q, want %q", j.id, tag, j.tag)
		}
	}
	seen := map[string]uint64{}
	for _, id := range lg.IDs {
		sub := lg.Jobs[id].Sub
		tag := procTag(sub)
		j, ok := byTag[tag]
		if !ok {
			t.Errorf("job %d in the log is no submission of this test (tag %q)", id, tag)
			continue
		}
		if prev, dup := seen[tag]; dup {
			t.Errorf("submission %s stored twice: jobs %d and %d", tag, prev, id)
		}
		seen[tag] = id
		if sub.Count != len(j.visits) || !reflect.DeepEqual(sub.Visits, j.visits) {
			t.Errorf("job %d (%s): stored submission differs from the one sent (count %d, %d visits, %d images; want %d visits, %d images)",
				id, tag, sub.Count, len(sub.Visits), sub.Images(), len(j.visits), j.images())
		}
	}
}
