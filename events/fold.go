package events

import "fmt"

// JobState is a job folded from its events. The job actor and the
// projection use the same fold, so both agree on what a job's history means.
//
// The fold is idempotent: the first terminal outcome of an image wins and
// later ones are counted in Duplicates and ignored; events after
// JobCompleted are ignored. A JobState is not safe for concurrent use.
type JobState struct {
	ID        uint64
	Images    int // images in the job
	Processed int
	Failed    int
	Status    Status
	Errors    []StoreError // each failed store once, in order of first failure
	Attempts  int          // JobStarted events seen
	// Stalled counts the deliveries since the last image outcome: owners
	// that started the job and recorded nothing (crashed, or hung). A
	// graceful hand-back after progress does not count.
	Stalled   int
	Completed bool // a JobCompleted has been applied
	// Duplicates counts outcomes ignored because the image was already settled
	// or the job already completed.
	Duplicates int

	offsets      []int    // offsets[v] = index of visit v's first image; nil once completed
	settled      []uint64 // bitset over flattened image indexes; nil once completed
	failedStores map[string]struct{}
}

// NewJobState starts a job's state from its submission. id is the stream
// sequence of the submission.
func NewJobState(id uint64, sub *JobSubmitted) *JobState {
	s := &JobState{ID: id, Status: StatusOngoing}
	s.offsets = make([]int, len(sub.Visits))
	for i, v := range sub.Visits {
		s.offsets[i] = s.Images
		s.Images += len(v.ImageURLs)
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
		s.addError(StoreError{StoreID: e.StoreID, Error: e.StoreErrorText()})
		return true, nil
	case *JobCompleted:
		s.Completed = true
		s.Status = e.Status
		if e.Status == StatusFailed {
			// The terminal event's list is authoritative; keep what the
			// images said if it carries none.
			if len(e.Errors) > 0 {
				s.Errors = append([]StoreError(nil), e.Errors...)
			}
		}
		s.offsets, s.settled, s.failedStores = nil, nil, nil
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

func (s *JobState) addError(se StoreError) {
	if s.failedStores == nil {
		s.failedStores = make(map[string]struct{})
	}
	if _, seen := s.failedStores[se.StoreID]; seen {
		return
	}
	s.failedStores[se.StoreID] = struct{}{}
	s.Errors = append(s.Errors, se)
}

// Outcome returns the status and errors the job ends with once every image
// is settled: completed if none failed, else failed.
func (s *JobState) Outcome() (Status, []StoreError) {
	if s.Failed == 0 {
		return StatusCompleted, nil
	}
	return StatusFailed, append([]StoreError(nil), s.Errors...)
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
