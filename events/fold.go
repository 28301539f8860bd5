package events

import (
	"fmt"
	"maps"
	"slices"
)

// JobState is a job folded from its events. The job actor and the
// projection use the same fold, so both agree on what a job's history means.
//
// The fold is idempotent: the first terminal outcome of an image wins and
// later ones are counted in Duplicates and ignored; events after
// JobCompleted are ignored. It is also independent of the order in which
// image outcomes arrive: Outcome depends only on which outcome each image
// got. A JobState is not safe for concurrent use.
type JobState struct {
	ID        uint64
	Images    int // images in the job
	Processed int
	Failed    int
	Status    Status
	// Errors is the failed job's error list once Completed: the
	// JobCompleted event's, or Outcome's when the event carries none. Nil
	// before completion and when the job completed without failing.
	Errors   []StoreError
	Attempts int // JobStarted events seen
	// Stalled counts the deliveries since the last image outcome: owners
	// that started the job and recorded nothing (crashed, or hung). A
	// graceful hand-back after progress does not count.
	Stalled   int
	Completed bool // a JobCompleted has been applied
	// Duplicates counts outcomes ignored because the image was already settled
	// or the job already completed.
	Duplicates int

	// The fields below are nil once completed.
	offsets    []int    // offsets[v] = index of visit v's first image
	settled    []uint64 // bitset over flattened image indexes
	storeFirst []int    // storeFirst[v] = first visit with visit v's store_id
	// failures holds each failed store's first failing image in (visit,
	// image) order, keyed by the store's first visit.
	failures map[int]failure
}

// failure is the first failing image of one store.
type failure struct {
	at  ImageRef
	err StoreError
}

// NewJobState starts a job's state from its submission. id is the stream
// sequence of the submission.
func NewJobState(id uint64, sub *JobSubmitted) *JobState {
	s := &JobState{ID: id, Status: StatusOngoing}
	s.offsets = make([]int, len(sub.Visits))
	s.storeFirst = make([]int, len(sub.Visits))
	first := make(map[string]int, len(sub.Visits))
	for i, v := range sub.Visits {
		s.offsets[i] = s.Images
		s.Images += len(v.ImageURLs)
		f, seen := first[v.StoreID]
		if !seen {
			f = i
			first[v.StoreID] = i
		}
		s.storeFirst[i] = f
	}
	s.settled = make([]uint64, (s.Images+63)/64)
	return s
}

// Settled reports whether an image already has a terminal outcome.
func (s *JobState) Settled(ref ImageRef) bool {
	i, ok := s.flat(ref)
	if !ok {
		return false
	}
	if s.settled == nil {
		return s.Completed
	}
	return s.settled[i/64]&(1<<(i%64)) != 0
}

// Unsettled returns the number of images without a terminal outcome.
func (s *JobState) Unsettled() int { return s.Images - s.Processed - s.Failed }

func (s *JobState) flat(ref ImageRef) (int, bool) {
	if ref.Visit < 0 || ref.Visit >= len(s.offsets) || ref.Index < 0 {
		return 0, false
	}
	next := s.Images
	if ref.Visit+1 < len(s.offsets) {
		next = s.offsets[ref.Visit+1]
	}
	i := s.offsets[ref.Visit] + ref.Index
	return i, i < next
}

// Apply folds one event into the state. It returns false when the event
// changed nothing (a duplicate, an event after completion, a second
// submission). An image reference outside the job is an error: the log holds
// something this job never asked for.
func (s *JobState) Apply(ev Event) (bool, error) {
	if s.Completed {
		if _, ok := ev.(*JobSubmitted); !ok {
			s.Duplicates++
		}
		return false, nil
	}
	switch e := ev.(type) {
	case *JobSubmitted, *JobRequeued:
		return false, nil
	case *JobStarted:
		s.Attempts++
		s.Stalled++
		return true, nil
	case *ImageProcessed:
		if !s.settle(e.ImageRef) {
			return false, s.refErr(e.ImageRef)
		}
		s.Processed++
		s.Stalled = 0
		return true, nil
	case *ImageFailed:
		if !s.settle(e.ImageRef) {
			return false, s.refErr(e.ImageRef)
		}
		s.Failed++
		s.Stalled = 0
		s.addFailure(e.ImageRef, StoreError{StoreID: e.StoreID, Error: e.StoreErrorText()})
		return true, nil
	case *JobCompleted:
		s.Completed = true
		s.Status = e.Status
		if e.Status == StatusFailed {
			// The terminal event's list is authoritative; use what the
			// images said if it carries none.
			if len(e.Errors) > 0 {
				s.Errors = append([]StoreError(nil), e.Errors...)
			} else {
				s.Errors = s.failureList()
			}
		}
		s.offsets, s.settled, s.storeFirst, s.failures = nil, nil, nil, nil
		return true, nil
	}
	return false, fmt.Errorf("job %d: unknown event %T", s.ID, ev)
}

// settle marks ref settled; false if it was already settled or is out of
// range (refErr tells which).
func (s *JobState) settle(ref ImageRef) bool {
	i, ok := s.flat(ref)
	if !ok {
		return false
	}
	w, bit := i/64, uint64(1)<<(i%64)
	if s.settled[w]&bit != 0 {
		s.Duplicates++
		return false
	}
	s.settled[w] |= bit
	return true
}

func (s *JobState) refErr(ref ImageRef) error {
	if _, ok := s.flat(ref); ok {
		return nil // a duplicate, already counted
	}
	return fmt.Errorf("job %d: image visit %d index %d is not in the job", s.ID, ref.Visit, ref.Index)
}

// addFailure records a failed image of the store of visit ref.Visit, which
// must be in the job. The store keeps the failure of its first image in
// (visit, image) order, whatever order failures arrive in.
func (s *JobState) addFailure(ref ImageRef, se StoreError) {
	key := s.storeFirst[ref.Visit]
	if f, seen := s.failures[key]; seen && !ref.before(f.at) {
		return
	}
	if s.failures == nil {
		s.failures = make(map[int]failure)
	}
	s.failures[key] = failure{at: ref, err: se}
}

// before orders images by visit, then by index within the visit.
func (r ImageRef) before(o ImageRef) bool {
	return r.Visit < o.Visit || r.Visit == o.Visit && r.Index < o.Index
}

// failureList returns each failed store once, ordered by the store's first
// visit in the submission, with the error of its first failing image.
func (s *JobState) failureList() []StoreError {
	if len(s.failures) == 0 {
		return nil
	}
	out := make([]StoreError, 0, len(s.failures))
	for _, k := range slices.Sorted(maps.Keys(s.failures)) {
		out = append(out, s.failures[k].err)
	}
	return out
}

// Outcome returns the status and errors the job ends with once every image
// is settled: completed if none failed, else failed with each failed store
// once, ordered by the store's first visit in the submission, each with the
// error of its first failing image in (visit, image) order. The result does
// not depend on the order outcomes were applied in. Once Completed, it
// returns the completed job's Errors.
func (s *JobState) Outcome() (Status, []StoreError) {
	if s.Failed == 0 {
		return StatusCompleted, nil
	}
	if s.Completed {
		return StatusFailed, append([]StoreError(nil), s.Errors...)
	}
	return StatusFailed, s.failureList()
}

// View returns a snapshot for the API. Until JobCompleted is applied the
// job is ongoing, whatever its images say.
func (s *JobState) View() JobView {
	v := JobView{ID: s.ID, Status: StatusOngoing, Images: s.Images, Processed: s.Processed, Failed: s.Failed}
	if s.Completed {
		v.Status = s.Status
		if s.Status == StatusFailed {
			v.Errors = append([]StoreError(nil), s.Errors...)
		}
	}
	return v
}
