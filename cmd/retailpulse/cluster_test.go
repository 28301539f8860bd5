//go:build unix

package main

// Fault tests of several `retailpulse serve` instances sharing a real
// 3-node nats-server cluster (R3 stream, one durable work consumer): leader
// kills, an instance kill, quorum loss, configuration drift and stranded
// jobs. Times worth quoting are logged with the prefix "MEASURED:".
// Repeat by hand with -count=N (the binaries are built once per run).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// clusterAckWait is short so a dead owner's job comes back within the
// test's budget.
const clusterAckWait = 10 * time.Second

// clusterFlags are the serve flags of a cluster instance; extra flags
// replace the defaults of the same name.
func clusterFlags(cl *natsCluster, extra ...string) []string {
	set := map[string]string{
		"--nats-url":          cl.URLs(),
		"--replicas":          "3",
		"--ack-wait":          clusterAckWait.String(),
		"--gpu-pause":         "5ms-20ms",
		"--store-concurrency": "2", // jobs take a few rounds, so kills find them part-done
	}
	order := []string{"--nats-url", "--replicas", "--ack-wait", "--gpu-pause", "--store-concurrency"}
	for i := 0; i+1 < len(extra); i += 2 {
		if _, ok := set[extra[i]]; !ok {
			order = append(order, extra[i])
		}
		set[extra[i]] = extra[i+1]
	}
	var out []string
	for _, f := range order {
		out = append(out, f, set[f])
	}
	return out
}

// clusterInstance starts a ready instance on the cluster. Its HTTP client
// waits up to 20s, so a submit stalled by a fault is measured, not cut.
func clusterInstance(t testing.TB, bin string, cl *natsCluster, name string, extra ...string) *procChild {
	t.Helper()
	c := procStart(t, bin, name, t.TempDir(), clusterFlags(cl, extra...)...)
	c.client.Timeout = 20 * time.Second
	return c
}

// clusterSubmit is one submit attempt and its answer.
type clusterSubmit struct {
	inst       string
	job        *procJob
	sent       time.Time
	took       time.Duration
	code       int // 0 = no answer
	retryAfter string
	body       string
	err        error
}

func (s *clusterSubmit) String() string {
	return fmt.Sprintf("%s %s sent %s: %d in %s (Retry-After %q) %s %v",
		s.inst, s.job.tag, s.sent.Format("15:04:05.000"), s.code, s.took.Round(time.Millisecond), s.retryAfter, strings.TrimSpace(s.body), s.err)
}

// clusterLoad submits jobs and records every attempt.
type clusterLoad struct {
	imgs *procImageServer
	seq  atomic.Int64

	mu   sync.Mutex
	jobs []*procJob
	subs []*clusterSubmit
}

// submit posts a new job of visits x perVisit images to c.
func (l *clusterLoad) submit(c *procChild, prefix string, visits, perVisit int) *clusterSubmit {
	j := procMakeJob(l.imgs.URL, fmt.Sprintf("%s-%d", prefix, l.seq.Add(1)), visits, perVisit)
	l.mu.Lock()
	l.jobs = append(l.jobs, j)
	l.mu.Unlock()
	s := &clusterSubmit{inst: c.name, job: j, sent: time.Now()}
	code, hdr, body, err := c.doResp("POST", "/api/submit/", j.body)
	s.took, s.code, s.body, s.err = time.Since(s.sent), code, string(body), err
	if hdr != nil {
		s.retryAfter = hdr.Get("Retry-After")
	}
	var id uint64
	if code == http.StatusCreated {
		var out struct {
			JobID *uint64 `json:"job_id"`
		}
		if err := json.Unmarshal(body, &out); err != nil || out.JobID == nil {
			s.err = fmt.Errorf("201 with body %q: %v", body, err)
		} else {
			id = *out.JobID
		}
	}
	l.mu.Lock()
	j.id = id
	l.subs = append(l.subs, s)
	l.mu.Unlock()
	return s
}

// created returns the ids of every job that got a 201.
func (l *clusterLoad) created() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []uint64
	for _, j := range l.jobs {
		if j.id != 0 {
			ids = append(ids, j.id)
		}
	}
	return ids
}

// sentBetween returns the submits sent in [from, to).
func (l *clusterLoad) sentBetween(from, to time.Time) []*clusterSubmit {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*clusterSubmit
	for _, s := range l.subs {
		if !s.sent.Before(from) && s.sent.Before(to) {
			out = append(out, s)
		}
	}
	return out
}

// longest returns the slowest of subs.
func longest(subs []*clusterSubmit) time.Duration {
	var d time.Duration
	for _, s := range subs {
		d = max(d, s.took)
	}
	return d
}

// clusterBurst is concurrent submitters, one per instance.
type clusterBurst struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	created atomic.Int64
}

// burst starts one submitter per instance, each submitting up to max jobs,
// one every pace (or as soon as the previous one answered, if slower). A
// submitter stops at its first submit that gets no answer (its instance
// is gone).
func (l *clusterLoad) burst(insts []*procChild, prefix string, visits, perVisit, max int, pace time.Duration) *clusterBurst {
	b := &clusterBurst{stop: make(chan struct{})}
	for _, c := range insts {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			for range max {
				next := time.After(pace)
				s := l.submit(c, prefix, visits, perVisit)
				if s.code == http.StatusCreated {
					b.created.Add(1)
				}
				if s.code == 0 {
					return
				}
				select {
				case <-b.stop:
					return
				case <-next:
				}
			}
		}()
	}
	return b
}

func (b *clusterBurst) waitCreated(t testing.TB, n int64, total time.Duration) {
	t.Helper()
	jstest.CheckFor(t, total, func() error {
		if got := b.created.Load(); got < n {
			return fmt.Errorf("burst: %d jobs created, want %d", got, n)
		}
		return nil
	})
}

// end stops the submitters and waits for their submits in flight.
func (b *clusterBurst) end() {
	close(b.stop)
	b.wg.Wait()
}

// probe submits one job at a time, round robin over insts, until one gets
// a 201, and returns that job's id and how long after since the 201 came.
func (l *clusterLoad) probe(t testing.TB, insts []*procChild, prefix string, since time.Time, total time.Duration) (uint64, time.Duration) {
	t.Helper()
	deadline := time.Now().Add(total)
	for i := 0; ; i++ {
		s := l.submit(insts[i%len(insts)], prefix, 2, 3)
		if s.code == http.StatusCreated && s.err == nil {
			return s.job.id, time.Since(since)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 201 within %s; last submit: %v", total, s)
		}
		if s.took < 100*time.Millisecond {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestCluster_FaultsLoseNothing runs three instances on a 3-node cluster
// and, while bursts of submits run, SIGKILLs the stream leader, the work
// consumer's leader and the meta leader (restarting each), then an
// instance that owns jobs, then two of the three nodes (quorum loss). The
// contract: a fault costs time, never a job. Every 201 job is in the log
// once and completes; every image has exactly one outcome; verify agrees.
// During quorum loss instances turn unready within 10s, submits answer
// 503 with Retry-After within the submit timeout, and status keeps
// answering from the read model.
func TestCluster_FaultsLoseNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a nats-server cluster and the service as child processes")
	}
	bin := procBuild(t)
	cl := startNATSCluster(t)
	imgs := newProcImageServer(t)
	imgs.setDelay(5 * time.Millisecond)
	load := &clusterLoad{imgs: imgs}
	insts := []*procChild{
		clusterInstance(t, bin, cl, "instance a"),
		clusterInstance(t, bin, cl, "instance b"),
		clusterInstance(t, bin, cl, "instance c"),
	}
	procOnFailure(t, func() { t.Logf("instances at the failure:\n%s", clusterDescribe(insts)) })
	measured := func(format string, args ...any) {
		t.Helper()
		t.Logf("MEASURED: "+format, args...)
	}

	// Every instance works before the faults start.
	var warm []uint64
	for _, c := range insts {
		s := load.submit(c, "warm", 2, 3)
		if s.code != http.StatusCreated {
			t.Fatalf("warm-up submit: %v", s)
		}
		warm = append(warm, s.job.id)
	}
	insts[0].waitTerminal(t, 30*time.Second, warm)
	known := warm[0] // a completed job, for reads during quorum loss

	// Leader kills: with the three roles on three different nodes, SIGKILL
	// the node holding one; measure until a submit sent after the kill gets
	// a 201 and until that job completes (it needs the work consumer);
	// restart the node and wait for the cluster to be healthy again.
	leaderKills := []struct {
		name string
		find func() int
	}{
		{"stream leader", func() int { return cl.streamLeader(clusterStream) }},
		{"consumer leader", func() int { return cl.consumerLeader(clusterStream, jsstore.WorkConsumer) }},
		{"meta leader", cl.metaLeader},
	}
	for _, lk := range leaderKills {
		cl.spreadLeaders(clusterStream, jsstore.WorkConsumer)
		victim := lk.find()
		roles := cl.roles(victim)
		prefix := strings.ReplaceAll(lk.name, " ", "")
		stepStart := time.Now()
		b := load.burst(insts, prefix, 2, 3, 8, 700*time.Millisecond)
		b.waitCreated(t, 2, 30*time.Second)
		killAt := time.Now()
		cl.kill(victim)
		probeID, next := load.probe(t, insts, prefix+"probe", killAt, 60*time.Second)
		clusterWaitTerminal(t, insts, 60*time.Second, []uint64{probeID})
		done := time.Since(killAt)
		measured("%s kill (%s): first 201 of a submit sent after the kill %s after it; that job completed %s after the kill",
			lk.name, roles, next.Round(time.Millisecond), done.Round(time.Millisecond))
		cl.start(victim)
		healthy := cl.waitHealthy(60 * time.Second)
		b.end()
		clusterCaughtUp(t, cl, insts, 30*time.Second)
		subs := load.sentBetween(stepStart, time.Now())
		measured("%s kill: %s restarted, cluster healthy %s later; longest of %d submits in the step %s",
			lk.name, cl.nodes[victim].name, healthy.Round(time.Millisecond), len(subs), longest(subs).Round(time.Millisecond))
	}

	// Instance kill: SIGKILL an instance while it owns jobs with some images
	// settled; its jobs come back to the others after the ack wait.
	imgs.setDelay(250 * time.Millisecond)
	victim := insts[0]
	processedBefore, err := victim.metric("retailpulse_images_processed_total")
	if err != nil {
		t.Fatal(err)
	}
	b := load.burst(insts, "owner", 2, 6, 4, 300*time.Millisecond)
	var active, processed float64
	jstest.CheckFor(t, 30*time.Second, func() error {
		var err error
		if active, err = victim.metric("retailpulse_jobs_active"); err != nil {
			return err
		}
		if processed, err = victim.metric("retailpulse_images_processed_total"); err != nil {
			return err
		}
		if active < 1 || processed < processedBefore+2 {
			return fmt.Errorf("%s owns %v jobs, processed %v images (%v before the burst)", victim.name, active, processed, processedBefore)
		}
		return nil
	})
	killAt := time.Now()
	victim.kill()
	imgs.setDelay(5 * time.Millisecond)
	b.end()
	insts = append(insts[1:], clusterInstance(t, bin, cl, "instance d"))
	clusterWaitTerminal(t, insts, 60*time.Second, load.created())
	measured("instance kill (%s owned %v jobs and had processed %v images of the burst): every job completed %s after the kill (ack wait %s)",
		victim.name, active, processed-processedBefore, time.Since(killAt).Round(time.Millisecond), clusterAckWait)

	clusterQuorumLoss(t, cl, load, insts, known, measured)

	// Every job in the log ends completed, as the API and the log tell.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	store := cl.attach(ctx)
	ids, _, err := procSubmissions(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range load.created() {
		if !slices.Contains(ids, id) {
			t.Errorf("job %d got a 201 but is not in the log", id)
		}
	}
	start := time.Now()
	for id, s := range clusterWaitTerminal(t, insts, 90*time.Second, ids) {
		if s.Status != string(events.StatusCompleted) || s.JobID != fmt.Sprint(id) || len(s.Error) != 0 {
			t.Errorf("job %d: %+v, want completed", id, s)
		}
	}
	t.Logf("%d jobs in the log (%d got a 201), all terminal %s after the last fault", len(ids), len(load.created()), time.Since(start).Round(time.Millisecond))
	clusterCaughtUp(t, cl, insts, 30*time.Second)
	lg := procReadLog(t, ctx, store, "cluster")
	procMatchSubmissions(t, lg, load.jobs)
	images := 0
	for _, id := range lg.IDs {
		lg.Jobs[id].checkDone(t)
		images += lg.Jobs[id].State.Images
	}
	t.Logf("log: %d jobs, %d images, each with one outcome", len(lg.IDs), images)

	code, stdout, stderr := procRunTool(t, bin, 2*time.Minute, "verify", "--nats-url", cl.URLs())
	if code != 0 {
		t.Errorf("verify: exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// clusterWaitTerminal polls the status of every id on each instance in
// turn until one of them answers it terminal, and returns those statuses.
func clusterWaitTerminal(t testing.TB, insts []*procChild, total time.Duration, ids []uint64) map[uint64]procStatus {
	t.Helper()
	got := map[uint64]procStatus{}
	jstest.CheckFor(t, total, func() error {
		for _, id := range ids {
			if _, ok := got[id]; ok {
				continue
			}
			var answers []string
			for _, c := range insts {
				s, err := c.status(id)
				if err == nil && s.Status != string(events.StatusOngoing) {
					got[id] = s
					break
				}
				answers = append(answers, fmt.Sprintf("%s: %s %v", c.name, s.Status, err))
			}
			if _, ok := got[id]; !ok {
				return fmt.Errorf("job %d not terminal (%s); %d of %d jobs terminal", id, strings.Join(answers, ", "), len(got), len(ids))
			}
		}
		return nil
	})
	return got
}

// clusterCaughtUp waits until every instance's projection has applied the
// stream's last message as of now: a fault must not leave an instance
// serving stale status for good.
func clusterCaughtUp(t testing.TB, cl *natsCluster, insts []*procChild, total time.Duration) {
	t.Helper()
	var last uint64
	jstest.CheckFor(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		st, err := cl.js.Stream(ctx, clusterStream)
		if err != nil {
			return err
		}
		si, err := st.Info(ctx)
		if err != nil {
			return err
		}
		last = si.State.LastSeq
		return nil
	})
	jstest.CheckFor(t, total, func() error {
		for _, c := range insts {
			seq, err := c.metric("retailpulse_projection_last_sequence")
			if err != nil {
				return fmt.Errorf("%s: %v", c.name, err)
			}
			if uint64(seq) < last {
				return fmt.Errorf("%s: projection at sequence %v, the stream at %d", c.name, seq, last)
			}
		}
		return nil
	})
}

// clusterDescribe returns the job-related metrics of every running
// instance, for failure logs.
func clusterDescribe(insts []*procChild) string {
	var b strings.Builder
	for _, c := range insts {
		if c.exited() {
			fmt.Fprintf(&b, "%s: exited\n", c.name)
			continue
		}
		fmt.Fprintf(&b, "%s:", c.name)
		for _, m := range []string{"retailpulse_jobs_active", "retailpulse_images_inflight", "retailpulse_projection_last_sequence"} {
			v, err := c.metric(m)
			fmt.Fprintf(&b, " %s=%v", strings.TrimPrefix(m, "retailpulse_"), v)
			if err != nil {
				fmt.Fprintf(&b, " (%v)", err)
			}
		}
		fmt.Fprintln(&b)
	}
	return b.String()
}

// clusterQuorumLoss SIGKILLs two of the three nodes (the stream leader and
// one more) for 15s while every instance keeps submitting, then restarts
// them.
func clusterQuorumLoss(t *testing.T, cl *natsCluster, load *clusterLoad, insts []*procChild, known uint64, measured func(string, ...any)) {
	const (
		outage       = 15 * time.Second
		readyOffMax  = 10 * time.Second
		submitMax    = 7 * time.Second // --submit-timeout (5s) and slack
		readyBackMax = 30 * time.Second
	)
	leader := cl.streamLeader(clusterStream)
	victims := []int{leader, (leader + 1) % 3}
	lossAt := time.Now()
	for _, v := range victims {
		cl.kill(v)
	}
	t.Logf("quorum loss: killed %s and %s", cl.nodes[victims[0]].name, cl.nodes[victims[1]].name)

	restarted := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-restarted:
					return
				default:
				}
				next := time.After(time.Second)
				load.submit(c, "quorum", 2, 3)
				select {
				case <-restarted:
					return
				case <-next:
				}
			}
		}()
	}

	// Readiness turns off on every instance within readyOffMax.
	off := map[string]time.Duration{}
	for len(off) < len(insts) && time.Since(lossAt) < readyOffMax {
		for _, c := range insts {
			if _, ok := off[c.name]; ok {
				continue
			}
			if code, _, err := c.get("/readyz"); err == nil && code == http.StatusServiceUnavailable {
				off[c.name] = time.Since(lossAt)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	var offTimes []string
	var offMax time.Duration
	for _, c := range insts {
		d, ok := off[c.name]
		if !ok {
			t.Errorf("quorum loss: %s still ready %s after the kill", c.name, readyOffMax)
			continue
		}
		offTimes = append(offTimes, fmt.Sprintf("%s %s", c.name, d.Round(time.Millisecond)))
		offMax = max(offMax, d)
	}
	if len(off) == len(insts) {
		measured("quorum loss: /readyz 503 on every instance %s after the kill (%s)", offMax.Round(time.Millisecond), strings.Join(offTimes, ", "))
	}

	// Reads from the read model keep working; reads from the log answer
	// 200 or 503, never 500. The instances are asked at once, so slow
	// answers do not stretch the outage.
	var reads sync.WaitGroup
	for _, c := range insts {
		reads.Add(1)
		go func() {
			defer reads.Done()
			id := strconv.FormatUint(known, 10)
			if code, body, err := c.get("/api/status?jobid=" + id); err != nil || code != http.StatusOK {
				t.Errorf("quorum loss: %s status of job %s: %d %s %v, want 200", c.name, id, code, body, err)
			}
			start := time.Now()
			code, body, err := c.get("/api/results?jobid=" + id)
			if err != nil || (code != http.StatusOK && code != http.StatusServiceUnavailable) {
				t.Errorf("quorum loss: %s results of job %s: %d %s %v, want 200 or 503", c.name, id, code, body, err)
			}
			t.Logf("quorum loss: %s results of job %s: %d in %s", c.name, id, code, time.Since(start).Round(time.Millisecond))
		}()
	}
	reads.Wait()

	// Hold the outage, checking readiness stays off.
	for time.Since(lossAt) < outage {
		for _, c := range insts {
			if _, ok := off[c.name]; !ok {
				continue
			}
			if code, _, err := c.get("/readyz"); err == nil && code == http.StatusOK {
				t.Errorf("quorum loss: %s ready again %s after the kill, with quorum still lost", c.name, time.Since(lossAt).Round(time.Millisecond))
				delete(off, c.name)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}

	restartAt := time.Now()
	close(restarted)
	for _, v := range victims {
		cl.start(v)
	}
	var backMax time.Duration
	jstest.CheckFor(t, readyBackMax, func() error {
		for _, c := range insts {
			if code, _, err := c.get("/readyz"); err != nil || code != http.StatusOK {
				return fmt.Errorf("%s /readyz: %d %v", c.name, code, err)
			}
		}
		backMax = time.Since(restartAt)
		return nil
	})
	_, next := load.probe(t, insts, "quorumprobe", restartAt, readyBackMax)
	wg.Wait()
	cl.waitHealthy(60 * time.Second)
	healthy := time.Since(restartAt)
	if len(off) == len(insts) {
		measured("quorum restored: /readyz 200 on every instance %s after the restart", backMax.Round(time.Millisecond))
	}
	measured("quorum restored: first 201 %s after the restart; cluster healthy %s after it", next.Round(time.Millisecond), healthy.Round(time.Millisecond))

	// Every submit sent during the outage answered within submitMax; those
	// answered before the restart with 503, Retry-After and a message
	// naming the event log unavailable.
	subs := load.sentBetween(lossAt, restartAt)
	if len(subs) == 0 {
		t.Errorf("quorum loss: no submit was made during the outage")
	}
	codes := map[int]int{}
	for _, s := range subs {
		codes[s.code]++
		switch {
		case s.code == 0:
			t.Errorf("quorum loss: submit got no answer: %v", s)
			continue
		case s.took > submitMax:
			t.Errorf("quorum loss: submit answered after %s, want within %s: %v", s.took.Round(time.Millisecond), submitMax, s)
		}
		if s.sent.Add(s.took).Before(restartAt) && s.code != http.StatusServiceUnavailable {
			t.Errorf("quorum loss: submit answered %d during the outage, want 503: %v", s.code, s)
		}
		if s.code == http.StatusServiceUnavailable && (s.retryAfter == "" || !strings.Contains(strings.ToLower(s.body), "unavailable")) {
			t.Errorf("quorum loss: 503 without Retry-After or without \"unavailable\" in its message: %v", s)
		}
	}
	measured("quorum loss: longest submit latency %s over %d submits during the outage (answers by code: %v)",
		longest(subs).Round(time.Millisecond), len(subs), codes)
}

// TestCluster_ConfigDriftRefused: an instance whose shared settings differ
// from the existing stream and work consumer exits with code 2, naming the
// flag, and changes nothing.
func TestCluster_ConfigDriftRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a nats-server cluster and the service as child processes")
	}
	bin := procBuild(t)
	cl := startNATSCluster(t)
	imgs := newProcImageServer(t)
	first := clusterInstance(t, bin, cl, "instance a")

	// checkUnchanged: the stream and the work consumer keep the settings
	// the first instance created them with.
	checkUnchanged := func(after string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := cl.js.Stream(ctx, clusterStream)
		if err != nil {
			t.Fatal(err)
		}
		si, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if si.Config.Replicas != 3 {
			t.Errorf("after %s: stream replicas = %d, want 3", after, si.Config.Replicas)
		}
		cons, err := cl.js.Consumer(ctx, clusterStream, jsstore.WorkConsumer)
		if err != nil {
			t.Fatal(err)
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ci.Config.AckWait != clusterAckWait || ci.Config.Replicas != 3 {
			t.Errorf("after %s: work consumer ack wait %s, replicas %d; want %s, 3", after, ci.Config.AckWait, ci.Config.Replicas, clusterAckWait)
		}
	}
	checkUnchanged("the first instance")

	for _, tt := range []struct {
		flag, value string
	}{
		{"--replicas", "1"},
		{"--ack-wait", "15s"},
	} {
		name := fmt.Sprintf("drifted %s %s", tt.flag, tt.value)
		c := procLaunch(t, bin, name, t.TempDir(), clusterFlags(cl, tt.flag, tt.value)...)
		ready := false
		jstest.CheckFor(t, 30*time.Second, func() error {
			if c.exited() {
				return nil
			}
			if code, _, err := c.get("/readyz"); err == nil && code == http.StatusOK {
				ready = true
				return nil
			}
			return fmt.Errorf("%s still running", name)
		})
		switch {
		case ready:
			t.Errorf("%s: started and became ready; want exit 2", name)
			c.kill()
		case c.state.ExitCode() != 2:
			t.Errorf("%s: exit code %d, want 2\n%s", name, c.state.ExitCode(), c.out)
		case !strings.Contains(c.stderr.String(), tt.flag):
			t.Errorf("%s: stderr does not name %s:\n%s", name, tt.flag, c.stderr)
		}
		checkUnchanged(name)
	}

	// The instance that was running is unharmed.
	j := procMakeJob(imgs.URL, "after-drift", 2, 3)
	first.mustSubmit(t, j)
	if s := first.waitTerminal(t, 30*time.Second, []uint64{j.id})[j.id]; s.Status != string(events.StatusCompleted) {
		t.Errorf("job after the drifted instances: %+v, want completed", s)
	}
}

// TestCluster_VerifyFindsAndRequeuesStranded: a job whose submission is in
// the log but which is no longer in the work queue (its delivery was acked
// without an outcome) is reported by verify (exit 1, a "stranded" line
// naming it) and put back to work by requeue; it then completes.
func TestCluster_VerifyFindsAndRequeuesStranded(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a nats-server cluster and the service as child processes")
	}
	bin := procBuild(t)
	cl := startNATSCluster(t)
	imgs := newProcImageServer(t)

	// An instance creates the stream and the work consumer and completes a
	// few jobs, then stops, so no instance takes the job below.
	creator := clusterInstance(t, bin, cl, "creator")
	jobs := []*procJob{}
	var done []uint64
	for i := range 3 {
		j := procMakeJob(imgs.URL, fmt.Sprintf("done%d", i), 2, 3)
		done = append(done, creator.mustSubmit(t, j))
		jobs = append(jobs, j)
	}
	creator.waitTerminal(t, 30*time.Second, done)
	creator.stop(t, 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	j := procMakeJob(imgs.URL, "stranded", 2, 3)
	j.id = clusterPublishSubmission(t, ctx, cl, j)
	jobs = append(jobs, j)

	// Lose the job: take its delivery and ack it.
	cons, err := cl.js.Consumer(ctx, clusterStream, jsstore.WorkConsumer)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got uint64
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		got = md.Sequence.Stream
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got != j.id {
		t.Fatalf("work consumer delivered %d (fetch error %v), want job %d", got, batch.Error(), j.id)
	}

	code, stdout, stderr := procRunTool(t, bin, time.Minute, "verify", "--nats-url", cl.URLs())
	stranded := regexp.MustCompile(`(?im)^.*stranded.*\b` + strconv.FormatUint(j.id, 10) + `\b`)
	if code != 1 || !stranded.MatchString(stdout+stderr) {
		t.Errorf("verify with job %d stranded: exit %d, want 1 and a line naming it stranded\nstdout:\n%s\nstderr:\n%s", j.id, code, stdout, stderr)
	}
	for _, id := range done {
		if regexp.MustCompile(`(?i)stranded\s+job\s+` + strconv.FormatUint(id, 10) + `\b`).MatchString(stdout + stderr) {
			t.Errorf("verify calls completed job %d stranded:\n%s", id, stdout)
		}
	}
	code, stdout, stderr = procRunTool(t, bin, time.Minute, "requeue", "--nats-url", cl.URLs(), strconv.FormatUint(j.id, 10))
	if code != 0 {
		t.Fatalf("requeue %d: exit %d, want 0\nstdout:\n%s\nstderr:\n%s", j.id, code, stdout, stderr)
	}

	c := clusterInstance(t, bin, cl, "worker")
	if s := c.waitTerminal(t, 60*time.Second, []uint64{j.id})[j.id]; s.Status != string(events.StatusCompleted) {
		t.Errorf("requeued job: %+v, want completed", s)
	}
	code, stdout, stderr = procRunTool(t, bin, time.Minute, "verify", "--nats-url", cl.URLs())
	if code != 0 {
		t.Errorf("verify after requeue: exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	lg := procReadLog(t, ctx, cl.attach(ctx), "cluster")
	procMatchSubmissions(t, lg, jobs)
	for _, id := range lg.IDs {
		lg.Jobs[id].checkDone(t)
	}
}

// clusterPublishSubmission stores j's submission on the submission subject
// the way the service does (same encoding and headers), bypassing the
// service, and returns its sequence: the job id.
func clusterPublishSubmission(t testing.TB, ctx context.Context, cl *natsCluster, j *procJob) uint64 {
	t.Helper()
	body, err := events.Encode(0, &events.JobSubmitted{Count: len(j.visits), Visits: j.visits, SubmittedAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(events.SubjectSubmitted)
	msg.Header.Set(events.HeaderType, string(events.TypeJobSubmitted))
	msg.Header.Set(events.HeaderSchema, strconv.Itoa(events.SchemaVersion))
	msg.Header.Set(events.HeaderCount, "1")
	msg.Data = body
	ack, err := cl.js.PublishMsg(ctx, msg, jetstream.WithMsgID("submit/"+nuid.Next()))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}
