package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// loadRun is one run of the workload against a target.
type loadRun struct {
	cfg      *Config
	client   *apiClient
	work     workload
	res      *Result
	progress io.Writer

	jobs        []jobRecord
	submitLat   []time.Duration
	firstSubmit time.Time    // when the first submit request was sent
	streams     streamReader // nil without SSEStreams
}

// run submits every job, hammers the status endpoint if asked, and polls
// until every job is terminal or the timeout passes, filling r.res.
func (r *loadRun) run(ctx context.Context) {
	runCtx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	if r.cfg.SSEStreams > 0 {
		if len(r.cfg.StreamsCommand) > 0 {
			child, err := startChildStreams(r.cfg.StreamsCommand, r.client.base, r.progress)
			if err != nil {
				r.res.fail(err.Error())
				return
			}
			r.streams = child
		} else {
			r.streams = newStreams(r.client.base)
		}
	}
	start := time.Now()
	r.submitAll(runCtx)
	r.res.SubmitSeconds = time.Since(start).Seconds()
	r.res.setSubmit(r.submitLat)
	fmt.Fprintf(r.progress, "bench: submitted %d jobs in %.2fs; waiting for them\n", r.res.JobsSubmitted, r.res.SubmitSeconds)

	var h *hammer
	if ids := r.submittedIDs(); r.cfg.StatusRPS > 0 && len(ids) > 0 {
		h = startHammer(ctx, r.client, ids, r.cfg.StatusRPS, int64(r.cfg.StatusRPS)*int64(r.cfg.Timeout/time.Second+1))
	}
	last, ok := r.pollAll(runCtx)
	if h != nil {
		r.res.setHammer(h.finish())
	}
	if r.streams != nil {
		r.res.setStreams(r.streams.finish(runCtx))
	}
	if ok && r.res.JobsSubmitted == r.cfg.Jobs {
		wall := last.Sub(r.firstSubmit)
		r.res.WallSeconds = wall.Seconds()
		r.res.ImagesPerSecond = float64(r.res.Images) / wall.Seconds()
	}
	r.res.Pass = len(r.res.Failures) == 0 && r.res.FailuresOmitted == 0
}

// submitAll submits the jobs with SubmitConcurrency workers, recording each
// submit's latency (retries included).
func (r *loadRun) submitAll(ctx context.Context) {
	r.jobs = make([]jobRecord, r.cfg.Jobs)
	next := make(chan int)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(r.cfg.SubmitConcurrency, r.cfg.Jobs) {
		wg.Go(func() {
			for j := range next {
				body, job := r.work.build(j)
				t := time.Now()
				id, retries, err := r.client.submit(ctx, body)
				lat := time.Since(t)
				mu.Lock()
				if r.firstSubmit.IsZero() || t.Before(r.firstSubmit) {
					r.firstSubmit = t
				}
				r.res.SubmitRetries += retries
				r.res.FailingImages += job.failing
				if err != nil {
					r.res.fail(fmt.Sprintf("job #%d: %v", j, err))
				} else {
					job.id = id
					r.jobs[j] = job
					if r.streams != nil {
						r.streams.watch(ctx, id, perJob(r.cfg.SSEStreams, r.cfg.Jobs, j))
					}
					r.submitLat = append(r.submitLat, lat)
					r.res.JobsSubmitted++
				}
				mu.Unlock()
			}
		})
	}
	for j := range r.cfg.Jobs {
		if ctx.Err() != nil {
			mu.Lock()
			r.res.fail(fmt.Sprintf("submitting: %v after %d of %d jobs", ctx.Err(), j, r.cfg.Jobs))
			mu.Unlock()
			break
		}
		next <- j
	}
	close(next)
	wg.Wait()
}

func (r *loadRun) submittedIDs() []uint64 {
	var ids []uint64
	for _, j := range r.jobs {
		if j.id != 0 {
			ids = append(ids, j.id)
		}
	}
	return ids
}

// pollAll polls every submitted job that is not yet terminal, one round per
// PollInterval, and checks each as it ends. It returns when the last job
// was seen terminal (ok) or when ctx ends (not ok).
func (r *loadRun) pollAll(ctx context.Context) (last time.Time, ok bool) {
	pending := 0
	for _, j := range r.jobs {
		if j.id != 0 {
			pending++
		}
	}
	tick := time.NewTicker(r.cfg.PollInterval)
	defer tick.Stop()
	report := time.Now()
	for pending > 0 {
		select {
		case <-ctx.Done():
			r.res.fail(fmt.Sprintf("timeout: %d of %d jobs not terminal after %s", pending, r.res.JobsSubmitted, r.cfg.Timeout))
			return last, false
		case <-tick.C:
		}
		for i := range r.jobs {
			if j := &r.jobs[i]; j.id != 0 && !j.done && r.poll(ctx, j) {
				last = time.Now()
				pending--
			}
		}
		if time.Since(report) >= 10*time.Second {
			report = time.Now()
			fmt.Fprintf(r.progress, "bench: %d of %d jobs terminal\n", r.res.JobsSubmitted-pending, r.res.JobsSubmitted)
		}
	}
	return last, true
}

// poll asks for one job's status; true once the job is terminal.
func (r *loadRun) poll(ctx context.Context, j *jobRecord) bool {
	code, st, err := r.client.status(ctx, j.id)
	if err != nil || code != http.StatusOK {
		if ctx.Err() == nil {
			r.res.PollErrors++
		}
		return false
	}
	switch st.Status {
	case "ongoing":
		return false
	case "completed":
		r.res.JobsCompleted++
	case "failed":
		r.res.JobsFailed++
	}
	j.done = true
	if err := j.check(st); err != nil {
		r.res.fail(err.Error())
	}
	return true
}
