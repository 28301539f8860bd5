package main

import (
	"cmp"
	"slices"
	"sync"
)

// maxAcceptedJobs bounds acceptedJobs: past it a new job is not recorded,
// and its status waits for the projection as it would without the record.
const maxAcceptedJobs = 65_536

// acceptedJobs holds the jobs this instance accepted that the read model
// has not applied yet, so that their status is answered at once
// ("ongoing") instead of waiting for the projection to reach them. Under
// load the projection runs tens of milliseconds behind the log, and a
// client polls a job right after submitting it.
//
// That answer is as fresh as the read model's: the job's submission is in
// the log (the append was acknowledged), and any later status has to come
// from the read model, which applies the submission first. It is only
// valid for a sole instance: with several on one log (linearizable reads)
// another instance may already have answered from further on.
//
// Safe for concurrent use. Memory: one entry per job between its append
// and its projection, at most maxAcceptedJobs.
type acceptedJobs struct {
	mu      sync.Mutex
	jobs    []acceptedJob // by id; ids arrive nearly in order
	applied uint64        // the read model's last sequence as last reported
}

type acceptedJob struct {
	id     uint64
	images int
}

// add records job id, of images images, once its submission is in the
// log. A job the read model already applied is not recorded.
func (a *acceptedJobs) add(id uint64, images int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if id <= a.applied || len(a.jobs) >= maxAcceptedJobs {
		return
	}
	i, found := slices.BinarySearchFunc(a.jobs, id, cmpJobID)
	if !found {
		a.jobs = slices.Insert(a.jobs, i, acceptedJob{id: id, images: images})
	}
}

// lookup returns the image count of job id while it is recorded.
func (a *acceptedJobs) lookup(id uint64) (images int, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i, found := slices.BinarySearchFunc(a.jobs, id, cmpJobID); found {
		return a.jobs[i].images, true
	}
	return 0, false
}

// appliedThrough forgets the jobs at or below seq: the read model answers
// for them now. Called after each run the projection commits.
func (a *acceptedJobs) appliedThrough(seq uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.applied = max(a.applied, seq)
	i, found := slices.BinarySearchFunc(a.jobs, seq, cmpJobID)
	if found {
		i++
	}
	if i > 0 {
		a.jobs = slices.Delete(a.jobs, 0, i)
	}
}

// len returns how many jobs are recorded.
func (a *acceptedJobs) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.jobs)
}

func cmpJobID(j acceptedJob, id uint64) int { return cmp.Compare(j.id, id) }
