package loadgen

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// workload builds the jobs. Job j's visit v goes to store
// stores[(j*visits+v) % len(stores)]; each image fails (points at a 404)
// with probability failRate, drawn from a generator seeded by (seed, j), so
// a job is the same on every run. Every image URL is unique; image n is
// served by images[n % len(images)].
type workload struct {
	images   []string // image server base URLs
	stores   []string
	visits   int
	perVisit int
	failRate float64
	seed     uint64
}

type visit struct {
	StoreID   string   `json:"store_id"`
	ImageURL  []string `json:"image_url"`
	VisitTime string   `json:"visit_time"`
}

type submitBody struct {
	Count  int     `json:"count"`
	Visits []visit `json:"visits"`
}

// jobRecord is what the run keeps of one job: its id and what it must end as.
type jobRecord struct {
	id         uint64 // 0 until submitted
	failing    int    // images pointing at a 404
	wantFailed []string
	done       bool
}

// build returns job j's submit body and its expected outcome.
func (w workload) build(j int) ([]byte, jobRecord) {
	rng := rand.New(rand.NewPCG(w.seed, uint64(j)))
	body := submitBody{Count: w.visits, Visits: make([]visit, w.visits)}
	var job jobRecord
	failedStores := map[string]bool{}
	visitTime := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	for v := range w.visits {
		store := w.stores[(j*w.visits+v)%len(w.stores)]
		urls := make([]string, w.perVisit)
		for i := range urls {
			n := (j*w.visits+v)*w.perVisit + i
			host := w.images[n%len(w.images)]
			if rng.Float64() < w.failRate {
				urls[i] = host + "/missing/" + strconv.Itoa(n) + ".jpg"
				job.failing++
				failedStores[store] = true
				continue
			}
			urls[i] = host + "/img/" + strconv.Itoa(n) + ".jpg"
		}
		body.Visits[v] = visit{StoreID: store, ImageURL: urls, VisitTime: visitTime.Add(time.Duration(v) * time.Minute).Format(time.RFC3339)}
	}
	for s := range failedStores {
		job.wantFailed = append(job.wantFailed, s)
	}
	slices.Sort(job.wantFailed)
	b, _ := json.Marshal(body) // strings and ints only: cannot fail
	return b, job
}

// check compares a terminal status with what the job's inputs imply:
// completed without failing images, else failed listing exactly the stores
// with a failing image, each once.
func (j *jobRecord) check(st jobStatus) error {
	if got := strings.Trim(string(st.JobID), `"`); got != strconv.FormatUint(j.id, 10) {
		return fmt.Errorf("job %d: answer names job_id %s", j.id, st.JobID)
	}
	if len(j.wantFailed) == 0 {
		if st.Status != "completed" || len(st.Error) > 0 {
			return fmt.Errorf("job %d: status %q with %d errors, want completed", j.id, st.Status, len(st.Error))
		}
		return nil
	}
	if st.Status != "failed" {
		return fmt.Errorf("job %d: status %q, want failed (stores %v)", j.id, st.Status, j.wantFailed)
	}
	var got []string
	for _, e := range st.Error {
		got = append(got, e.StoreID)
	}
	slices.Sort(got)
	if !slices.Equal(got, j.wantFailed) {
		return fmt.Errorf("job %d: failed stores %v, want %v (each once)", j.id, got, j.wantFailed)
	}
	return nil
}
