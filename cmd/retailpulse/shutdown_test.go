//go:build unix

package main

import (
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// TestShutdown_SIGTERMFinishesInFlightAndResumes: on SIGTERM the service
// stops taking images, lets the ones in flight finish, records them, hands
// the job back and exits 0 within --shutdown-timeout; a restart finishes the
// job, and no image is downloaded or recorded twice.
func TestShutdown_SIGTERMFinishesInFlightAndResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service as a child process")
	}
	bin := procBuild(t)
	const (
		// Far longer than the test waits for the job after the restart: the
		// job must come back because it was handed back, not because its ack
		// wait ran out.
		ackWait         = 30 * time.Second
		shutdownTimeout = 10 * time.Second
	)
	flags := []string{"--gpu-pause", "50ms-100ms", "--shutdown-timeout", shutdownTimeout.String(),
		"--ack-wait", ackWait.String(), "--store-concurrency", "4"}
	imgs := newProcImageServer(t)
	imgs.setDelay(20 * time.Millisecond)
	dir := t.TempDir()

	first := procStart(t, bin, "first run", dir, flags...)
	job := procMakeJob(imgs.URL, "term", 3, 100)
	id := first.mustSubmit(t, job)
	first.waitMetric(t, 30*time.Second, "retailpulse_images_processed_total", 40)
	first.signal(t, syscall.SIGTERM)
	ps, took := first.waitExit(t, shutdownTimeout+5*time.Second)
	if ps.ExitCode() != 0 {
		t.Fatalf("exit after SIGTERM: %v after %s, want code 0", ps, took)
	}
	t.Logf("exited 0 %s after SIGTERM", took.Round(time.Millisecond))

	before := procInspect(t, dir, ackWait)
	procMatchSubmissions(t, before, []*procJob{job})
	jl := before.Jobs[id]
	if jl == nil {
		t.Fatalf("job %d not in the log", id)
	}
	jl.checkConsistent(t)
	if jl.State.Completed || len(jl.Outcomes) == 0 {
		t.Fatalf("shutdown was not mid-job: completed=%v, %d of %d images settled", jl.State.Completed, len(jl.Outcomes), jl.State.Images)
	}
	// Every image the service started was allowed to finish and recorded.
	settled := map[string]bool{}
	for _, p := range jl.settledPaths() {
		settled[p] = true
	}
	atStop := imgs.snapshot()
	for p, n := range atStop {
		if !settled[p] {
			t.Errorf("%s was downloaded (%d times) before the shutdown but has no outcome", p, n)
		}
	}
	t.Logf("at the shutdown: %d of %d images settled, %d downloaded", len(jl.Outcomes), jl.State.Images, len(atStop))

	restarted := time.Now()
	second := procStart(t, bin, "after restart", dir, flags...)
	s := second.waitTerminal(t, ackWait*2/3, []uint64{id})[id]
	if s.Status != string(events.StatusCompleted) || s.JobID != fmt.Sprint(id) {
		t.Errorf("job %d after restart: %+v, want completed", id, s)
	}
	t.Logf("job completed %s after the restart", time.Since(restarted).Round(time.Millisecond))
	second.stop(t, shutdownTimeout+5*time.Second)

	after := procInspect(t, dir, ackWait)
	after.Jobs[id].checkDone(t)
	final := imgs.snapshot()
	if len(final) != job.images() {
		t.Errorf("%d images downloaded, want %d", len(final), job.images())
	}
	for p, n := range final {
		if n != 1 {
			t.Errorf("%s downloaded %d times, want once", p, n)
		}
	}
}

// TestShutdown_SecondSignalExitsAtOnce: a second SIGTERM during a slow
// graceful shutdown ends the process at once with a non-zero code, and the
// log it leaves is consistent: a restart completes the job.
func TestShutdown_SecondSignalExitsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service as a child process")
	}
	bin := procBuild(t)
	const ackWait = 2 * time.Second
	imgs := newProcImageServer(t)
	imgs.setDelay(3 * time.Second) // with the 2s pause, an image in flight needs 5s to finish
	dir := t.TempDir()

	first := procStart(t, bin, "first run", dir, "--gpu-pause", "2s", "--shutdown-timeout", "60s", "--ack-wait", ackWait.String())
	job := procMakeJob(imgs.URL, "twice", 2, 25)
	id := first.mustSubmit(t, job)
	jstest.CheckFor(t, 30*time.Second, func() error {
		if n := imgs.total(); n == 0 {
			return fmt.Errorf("no image download started")
		}
		return nil
	})

	first.signal(t, syscall.SIGTERM)
	// The graceful shutdown has begun (readiness is off) and is waiting for
	// the images in flight.
	jstest.CheckFor(t, 10*time.Second, func() error {
		if first.exited() {
			return fmt.Errorf("exited after one SIGTERM while images were in flight: %v", first.state)
		}
		code, _, err := first.get("/readyz")
		if err == nil && code == http.StatusOK {
			return fmt.Errorf("still ready after SIGTERM")
		}
		return nil
	})
	if first.exited() {
		t.Fatalf("exited after one SIGTERM while images were in flight: %v", first.state)
	}
	first.signal(t, syscall.SIGTERM)
	ps, took := first.waitExit(t, 5*time.Second)
	if !ps.Exited() || ps.ExitCode() == 0 {
		t.Fatalf("after a second SIGTERM: %v, want a non-zero exit code", ps)
	}
	t.Logf("second SIGTERM: exit code %d after %s", ps.ExitCode(), took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("second SIGTERM took %s to end the process", took)
	}

	before := procInspect(t, dir, ackWait)
	procMatchSubmissions(t, before, []*procJob{job})
	before.Jobs[id].checkConsistent(t)

	imgs.setDelay(0)
	second := procStart(t, bin, "after restart", dir, "--gpu-pause", "5ms", "--ack-wait", ackWait.String())
	if s := second.waitTerminal(t, 60*time.Second, []uint64{id})[id]; s.Status != string(events.StatusCompleted) {
		t.Errorf("job %d after restart: %+v, want completed", id, s)
	}
	second.stop(t, 30*time.Second)
	procInspect(t, dir, ackWait).Jobs[id].checkDone(t)
}

// TestShutdown_GracefulRestartsDoNotExhaustAttempts: a job handed back on a
// graceful shutdown was not lost by a crashing owner, so rolling restarts
// during a long job must not use up its delivery attempts (--max-attempts)
// and fail it.
// Only deliveries that recorded nothing count against --max-attempts.
func TestShutdown_GracefulRestartsDoNotExhaustAttempts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service as a child process")
	}
	bin := procBuild(t)
	const ackWait = 30 * time.Second
	flags := []string{"--gpu-pause", "50ms-100ms", "--shutdown-timeout", "10s", "--ack-wait", ackWait.String(),
		"--store-concurrency", "4", "--max-attempts", "2"}
	imgs := newProcImageServer(t)
	imgs.setDelay(20 * time.Millisecond)
	dir := t.TempDir()

	job := procMakeJob(imgs.URL, "rolling", 3, 100)
	for round := 1; round <= 2; round++ {
		c := procStart(t, bin, fmt.Sprintf("run %d", round), dir, flags...)
		if round == 1 {
			c.mustSubmit(t, job)
		}
		c.waitMetric(t, 20*time.Second, "retailpulse_images_processed_total", 30)
		c.stop(t, 15*time.Second)
	}
	last := procStart(t, bin, "last run", dir, flags...)
	s := last.waitTerminal(t, 20*time.Second, []uint64{job.id})[job.id]
	last.stop(t, 15*time.Second)
	lg := procInspect(t, dir, ackWait)
	j := lg.Jobs[job.id]
	j.checkConsistent(t)
	if s.Status != string(events.StatusCompleted) {
		t.Errorf("job %d after two graceful restarts with --max-attempts 2: %+v (%d of %d images settled, %d JobStarted), want completed",
			job.id, s, len(j.Outcomes), j.State.Images, j.State.Attempts)
	}
}

// TestShutdown_DeadlineAbandonsStuckImages: images that do not finish within
// --shutdown-timeout are abandoned: the process still exits 0 soon after the
// deadline, records nothing for them, and a restart redoes them.
func TestShutdown_DeadlineAbandonsStuckImages(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service as a child process")
	}
	bin := procBuild(t)
	const (
		ackWait         = 30 * time.Second
		shutdownTimeout = 2 * time.Second
	)
	imgs := newProcImageServer(t)
	imgs.setDelay(time.Minute) // every download hangs until the service goes away
	dir := t.TempDir()

	first := procStart(t, bin, "first run", dir, "--gpu-pause", "0", "--shutdown-timeout", shutdownTimeout.String(), "--ack-wait", ackWait.String())
	job := procMakeJob(imgs.URL, "stuck", 2, 20)
	id := first.mustSubmit(t, job)
	jstest.CheckFor(t, 30*time.Second, func() error {
		if n := imgs.total(); n < 8 {
			return fmt.Errorf("%d downloads started, want 8", n)
		}
		return nil
	})
	first.signal(t, syscall.SIGTERM)
	ps, took := first.waitExit(t, shutdownTimeout+10*time.Second)
	if ps.ExitCode() != 0 {
		t.Fatalf("exit after SIGTERM: %v after %s, want code 0", ps, took)
	}
	if took < shutdownTimeout {
		t.Errorf("exited %s after SIGTERM, before the %s deadline, with every download still hanging", took, shutdownTimeout)
	}
	t.Logf("exited 0 %s after SIGTERM (deadline %s)", took.Round(time.Millisecond), shutdownTimeout)

	before := procInspect(t, dir, ackWait)
	j := before.Jobs[id]
	j.checkConsistent(t)
	if len(j.Outcomes) != 0 || j.State.Completed {
		t.Errorf("job %d: %d outcomes recorded (completed=%v) though no download finished", id, len(j.Outcomes), j.State.Completed)
	}

	imgs.setDelay(0)
	second := procStart(t, bin, "after restart", dir, "--gpu-pause", "0", "--ack-wait", ackWait.String())
	if s := second.waitTerminal(t, ackWait*2/3, []uint64{id})[id]; s.Status != string(events.StatusCompleted) {
		t.Errorf("job %d after restart: %+v, want completed", id, s)
	}
	second.stop(t, 15*time.Second)
	procInspect(t, dir, ackWait).Jobs[id].checkDone(t)
}
