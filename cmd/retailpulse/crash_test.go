//go:build unix

package main

import (
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// TestCrash_KillNineAndRestart runs the real binary, SIGKILLs it at several
// points of a workload, restarts it on the same data dir and checks what the
// design promises for a crash: every job that got a 201 exists and
// completes; no submission is stored in part; every image ends with exactly
// one outcome in the log; and images settled before a kill are not
// downloaded again (only images in flight at the kill are redone).
func TestCrash_KillNineAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service as a child process")
	}
	bin := procBuild(t)
	// A restarted sole instance reclaims the crashed owner's jobs at once;
	// recovery must never wait for the ack wait.
	const ackWait = time.Hour
	// Kills land while the projection writes the read model database;
	// restarts resume it from its last committed sequence.
	flags := []string{"--gpu-pause", "5ms-20ms", "--ack-wait", ackWait.String(), "--store-concurrency", "4"}

	tests := []struct {
		name string
		// load submits work to c and SIGKILLs it; it returns every job it
		// attempted, with id set for those that got a 201.
		load func(t *testing.T, c *procChild, imgs *procImageServer) []*procJob
		// partial: the kill must find some images settled and some not.
		partial bool
		// recoveryKills: restarts that are SIGKILLed again once they have
		// processed 150 images, before the final restart.
		recoveryKills int
	}{
		{name: "early right after submits", load: crashEarly},
		{name: "mid job", load: crashMid, partial: true},
		{name: "during a burst of submits", load: crashBurst},
		{name: "mid job and again during recovery", load: crashMid, partial: true, recoveryKills: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			imgs := newProcImageServer(t)
			imgs.setDelay(10 * time.Millisecond) // so jobs are part-done at a kill
			dir := t.TempDir()
			first := procStart(t, bin, "first run", dir, flags...)
			jobs := tt.load(t, first, imgs)
			if !first.exited() {
				t.Fatal("load returned without killing the service")
			}

			// settledAt[path] = the image's request count at the first kill
			// after which the log held its outcome.
			settledAt := map[string]int{}
			var ids []uint64
			// afterKill checks the log as a kill left it.
			afterKill := func(c *procChild, round int, partial bool) {
				t.Helper()
				if ec := c.state.ExitCode(); ec != -1 {
					t.Fatalf("%s exited with code %d before the kill", c.name, ec)
				}
				counts := imgs.snapshot()
				lg := procInspect(t, dir, ackWait)
				if round == 0 {
					procMatchSubmissions(t, lg, jobs)
					ids = lg.IDs
				} else if !reflect.DeepEqual(lg.IDs, ids) {
					t.Errorf("jobs in the log: %v at the first kill, %v at kill %d", ids, lg.IDs, round+1)
				}
				settled, unsettled := 0, 0
				for _, id := range lg.IDs {
					j := lg.Jobs[id]
					j.checkConsistent(t)
					for _, p := range j.settledPaths() {
						if _, ok := settledAt[p]; !ok {
							settledAt[p] = counts[p]
						}
						settled++
					}
					unsettled += j.State.Unsettled()
				}
				created := 0
				for _, j := range jobs {
					if j.id != 0 {
						created++
					}
				}
				t.Logf("kill %d: %d submits attempted, %d got a 201, %d jobs in the log; %d images settled, %d unsettled, %d requested",
					round+1, len(jobs), created, len(lg.IDs), settled, unsettled, len(counts))
				if partial && (settled == 0 || unsettled == 0) {
					t.Errorf("kill %d was not mid-job: %d images settled, %d unsettled", round+1, settled, unsettled)
				}
				if t.Failed() {
					t.FailNow()
				}
			}
			afterKill(first, 0, tt.partial)

			for round := 1; round <= tt.recoveryKills; round++ {
				c := procStart(t, bin, fmt.Sprintf("restart %d", round), dir, flags...)
				c.waitMetric(t, 60*time.Second, "retailpulse_images_processed_total", 150)
				c.kill()
				afterKill(c, round, true)
			}

			// The last restart on the same data dir: every job completes.
			restarted := time.Now()
			last := procStart(t, bin, "last restart", dir, flags...)
			statuses := last.waitTerminal(t, 90*time.Second, ids)
			t.Logf("all %d jobs terminal %s after the last restart", len(ids), time.Since(restarted).Round(time.Millisecond))
			for id, s := range statuses {
				if s.Status != string(events.StatusCompleted) || s.JobID != fmt.Sprint(id) || len(s.Error) != 0 {
					t.Errorf("job %d after restart: %+v, want completed", id, s)
				}
			}
			last.stop(t, 30*time.Second)

			lg := procInspect(t, dir, ackWait)
			if !reflect.DeepEqual(lg.IDs, ids) {
				t.Errorf("jobs in the log: %v at the first kill, %v at the end", ids, lg.IDs)
			}
			for _, id := range lg.IDs {
				lg.Jobs[id].checkDone(t)
			}
			final := imgs.snapshot()
			for p, n := range settledAt {
				if final[p] != n {
					t.Errorf("%s was settled before a kill but downloaded again: %d requests then, %d now", p, n, final[p])
				}
			}
			redone := 0
			for _, n := range final {
				if n > 1 {
					redone++
				}
			}
			for _, id := range lg.IDs {
				j := lg.Jobs[id]
				for ref := range j.Outcomes {
					if p := procPath(j.url(ref)); final[p] == 0 {
						t.Errorf("job %d: %s has an outcome but was never downloaded", id, p)
					}
				}
			}
			t.Logf("images downloaded more than once (in flight at a kill): %d", redone)
		})
	}
}

// crashEarly submits five jobs of 200 images and kills the service as soon
// as the last 201 arrives.
func crashEarly(t *testing.T, c *procChild, imgs *procImageServer) []*procJob {
	var jobs []*procJob
	for i := range 5 {
		j := procMakeJob(imgs.URL, fmt.Sprintf("early%d", i), 4, 50)
		c.mustSubmit(t, j)
		jobs = append(jobs, j)
	}
	c.kill()
	return jobs
}

// crashMid submits five jobs of 200 images and kills the service once 300
// of the 1000 images are processed.
func crashMid(t *testing.T, c *procChild, imgs *procImageServer) []*procJob {
	var jobs []*procJob
	for i := range 5 {
		j := procMakeJob(imgs.URL, fmt.Sprintf("mid%d", i), 4, 50)
		c.mustSubmit(t, j)
		jobs = append(jobs, j)
	}
	c.waitMetric(t, 60*time.Second, "retailpulse_images_processed_total", 300)
	c.kill()
	return jobs
}

// crashBurst runs four submitters concurrently and kills the service while
// they are submitting, once six jobs got a 201. Submits in flight at the
// kill may or may not have been stored; each submitter stops at its first
// submit that gets no 201.
func crashBurst(t *testing.T, c *procChild, imgs *procImageServer) []*procJob {
	const submitters, perSubmitter = 4, 10
	var (
		mu       sync.Mutex
		jobs     []*procJob
		created  atomic.Int64
		inflight atomic.Int64
		wg       sync.WaitGroup
	)
	for s := range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range perSubmitter {
				j := procMakeJob(imgs.URL, fmt.Sprintf("burst%d-%d", s, n), 2, 50)
				mu.Lock()
				jobs = append(jobs, j)
				mu.Unlock()
				inflight.Add(1)
				id, _, err := c.submit(j)
				inflight.Add(-1)
				if err != nil {
					return
				}
				mu.Lock()
				j.id = id
				mu.Unlock()
				created.Add(1)
			}
		}()
	}
	jstest.CheckFor(t, 30*time.Second, func() error {
		if n := created.Load(); n < 6 {
			return fmt.Errorf("%d jobs created, want 6", n)
		}
		return nil
	})
	inFlightAtKill := inflight.Load()
	c.kill()
	wg.Wait()
	t.Logf("burst: %d submits in flight at the kill", inFlightAtKill)
	if created.Load() == submitters*perSubmitter {
		t.Errorf("every submit finished before the kill; the burst was not interrupted")
	}
	return jobs
}

// TestCrash_APIInstanceKilledUnderAWorker kills -9 the API instance of the
// one-machine split (the embedded server that holds the log) while its
// worker is mid-job, and restarts it on the same data dir and port: the
// worker reconnects and finishes the jobs without a redelivery (the ack
// wait is an hour), and the log holds one outcome for every image.
func TestCrash_APIInstanceKilledUnderAWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service as child processes")
	}
	bin := procBuild(t)
	const ackWait = time.Hour
	const password = "service-pw-1"
	natsAddr := procFreeAddr(t)
	apiFlags := []string{"--job-slots", "0", "--nats-listen", natsAddr, "--nats-password", password,
		"--subscriber-password", "subscriber-pw-1", "--ack-wait", ackWait.String()}
	imgs := newProcImageServer(t)
	imgs.setDelay(10 * time.Millisecond) // so the jobs are part-done at the kill
	dir := t.TempDir()
	api := procStart(t, bin, "api", dir, apiFlags...)
	worker := procStart(t, bin, "worker", t.TempDir(), "--worker-only", "--nats-url", "nats://"+natsAddr,
		"--nats-password", password, "--gpu-pause", "5ms-20ms", "--store-concurrency", "4", "--ack-wait", ackWait.String())

	var ids []uint64
	for i := range 2 {
		ids = append(ids, api.mustSubmit(t, procMakeJob(imgs.URL, fmt.Sprintf("split%d", i), 4, 50)))
	}
	worker.waitMetric(t, 60*time.Second, "retailpulse_images_processed_total", 100)
	api.kill()
	if n, err := worker.metric("retailpulse_images_processed_total"); err != nil || n >= 400 {
		t.Fatalf("at the kill the worker had processed %v images (%v), want some of the 400", n, err)
	}

	restarted := time.Now()
	again := procStart(t, bin, "api restarted", dir, apiFlags...)
	for id, s := range again.waitTerminal(t, 90*time.Second, ids) {
		if s.Status != string(events.StatusCompleted) || len(s.Error) != 0 {
			t.Errorf("job %d after the restart: %+v, want completed", id, s)
		}
	}
	t.Logf("both jobs completed %s after the API instance's restart", time.Since(restarted).Round(time.Millisecond))
	worker.stop(t, 30*time.Second)
	again.stop(t, 30*time.Second)

	lg := procInspect(t, dir, ackWait)
	if !reflect.DeepEqual(lg.IDs, ids) {
		t.Fatalf("jobs in the log: %v, want %v", lg.IDs, ids)
	}
	for _, id := range lg.IDs {
		lg.Jobs[id].checkDone(t)
	}
	redone := 0
	for _, n := range imgs.snapshot() {
		if n > 1 {
			redone++
		}
	}
	t.Logf("images downloaded more than once: %d", redone)
}
