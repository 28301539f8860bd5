// Package events defines retailpulse's event log: the event types, the
// subjects they are stored under, their wire encoding, and the pure fold
// that turns a job's events into its state. It imports nothing of ours;
// everything that touches NATS lives in events/jsstore.
package events

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SchemaVersion is the version of the wire encoding written by this build.
// Decoders accept every version up to and including it.
const SchemaVersion = 1

// Type names an event on the wire ("type" field and Rp-Event-Type header).
type Type string

// The event types. The set is closed: Event is a sealed interface.
const (
	TypeJobSubmitted   Type = "job_submitted"
	TypeJobStarted     Type = "job_started"
	TypeImageProcessed Type = "image_processed"
	TypeImageFailed    Type = "image_failed"
	TypeJobCompleted   Type = "job_completed"
	TypeJobRequeued    Type = "job_requeued"
)

// Event is one fact in the log. It is sealed: only the types of this package
// implement it, so a type switch over events is closed.
type Event interface {
	EventType() Type
	sealed()
}

// Visit is one store visit of a submission, as the client sent it.
type Visit struct {
	StoreID   string   `json:"store_id"`
	ImageURLs []string `json:"image_url"`
	VisitTime string   `json:"visit_time"`
}

// JobSubmitted records an accepted job. Its stream sequence is the job id,
// so it carries no id of its own.
type JobSubmitted struct {
	Count       int       `json:"count"`
	Visits      []Visit   `json:"visits"`
	SubmittedAt time.Time `json:"submitted_at"`
}

// Images returns the number of images in the submission.
func (e *JobSubmitted) Images() int {
	n := 0
	for _, v := range e.Visits {
		n += len(v.ImageURLs)
	}
	return n
}

// Digest identifies the job's content (count and visits, not SubmittedAt):
// two submissions with the same digest ask for the same work. Used to tell
// an idempotent retry from a reused Idempotency-Key.
func (e *JobSubmitted) Digest() string {
	b, _ := json.Marshal(struct {
		Count  int     `json:"count"`
		Visits []Visit `json:"visits"`
	}{e.Count, e.Visits})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// JobStarted records that an owner took the job (one per delivery).
type JobStarted struct {
	Attempt int       `json:"attempt"`
	Owner   string    `json:"owner"`
	At      time.Time `json:"at"`
}

// ImageRef identifies an image within a job: the index of its visit and its
// index within that visit's image_url list.
type ImageRef struct {
	Visit int `json:"visit"`
	Index int `json:"index"`
}

// ImageProcessed records the result of one image.
type ImageProcessed struct {
	ImageRef
	StoreID   string    `json:"store_id"`
	Width     int       `json:"width"`
	Height    int       `json:"height"`
	Perimeter int       `json:"perimeter"`
	At        time.Time `json:"at"`
}

// ImageFailed records that one image could not be processed. Reason is a
// coarse class ("unknown store", "http 404", "timeout", ...), never a raw
// network error.
type ImageFailed struct {
	ImageRef
	StoreID string    `json:"store_id"`
	URL     string    `json:"url"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}

// ReasonUnknownStore is the failure reason of every image of a visit whose
// store_id is not in the store master. Such images are never downloaded.
const ReasonUnknownStore = "unknown store"

// StoreError is one entry of a failed job's error list.
type StoreError struct {
	StoreID string `json:"store_id"`
	Error   string `json:"error"`
}

// JobCompleted is a job's terminal event. Its Status and Errors are
// authoritative: a job abandoned after too many deliveries completes as
// failed with images still unsettled.
type JobCompleted struct {
	Status    Status       `json:"status"`
	Errors    []StoreError `json:"errors,omitempty"`
	Processed int          `json:"processed"`
	Failed    int          `json:"failed"`
	At        time.Time    `json:"at"`
}

// JobRequeued records that an operator put an unfinished job back on the
// work queue (retailpulse requeue). Its message, on rp.job.<id>.requeued,
// is itself what the work consumer delivers; the fold ignores it.
type JobRequeued struct {
	By     string    `json:"by"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

func (*JobSubmitted) EventType() Type   { return TypeJobSubmitted }
func (*JobStarted) EventType() Type     { return TypeJobStarted }
func (*ImageProcessed) EventType() Type { return TypeImageProcessed }
func (*ImageFailed) EventType() Type    { return TypeImageFailed }
func (*JobCompleted) EventType() Type   { return TypeJobCompleted }
func (*JobRequeued) EventType() Type    { return TypeJobRequeued }

func (*JobSubmitted) sealed()   {}
func (*JobStarted) sealed()     {}
func (*ImageProcessed) sealed() {}
func (*ImageFailed) sealed()    {}
func (*JobCompleted) sealed()   {}
func (*JobRequeued) sealed()    {}

// StoreErrorText is the error shown for a store in a failed job's status:
// the reason alone for an unknown store, else "image <url>: <reason>".
func (e *ImageFailed) StoreErrorText() string {
	if e.Reason == ReasonUnknownStore {
		return e.Reason
	}
	return fmt.Sprintf("image %s: %s", e.URL, e.Reason)
}

// Status is a job's status as the API reports it.
type Status string

const (
	StatusOngoing   Status = "ongoing"
	StatusCompleted Status = "completed"
	StatusFailed    Status = "failed"
)

// JobView is what a status request answers: a snapshot, owned by the caller.
type JobView struct {
	ID        uint64
	Status    Status
	Errors    []StoreError // a failed job's list (see JobState.Outcome)
	Images    int          // images in the job
	Processed int
	Failed    int
}

// Sentinel errors shared by every layer, so callers can branch on them
// without importing the layer that produced them.
var (
	// ErrJobNotFound: no job has that id.
	ErrJobNotFound = errors.New("job not found")
	// ErrOverloaded: the service cannot take more work now; retry later.
	ErrOverloaded = errors.New("service overloaded")
	// ErrStorageFull: the event log refused the write for lack of space.
	ErrStorageFull = errors.New("event log full")
	// ErrFenced: an append lost its fence: another owner wrote to the job.
	ErrFenced = errors.New("job fenced by another owner")
	// ErrIdempotencyConflict: an Idempotency-Key already names a job with
	// other content.
	ErrIdempotencyConflict = errors.New("idempotency key reused with a different job")
	// ErrUnavailable: the event log cannot be reached or has no quorum now;
	// retry later. Nothing was stored (or, for a write whose answer was
	// lost, a retry with the same identity resolves it).
	ErrUnavailable = errors.New("event log unavailable")
	// ErrStale: the read model has not reached the log yet (catching up
	// after a start, or behind another instance), and an answer now could
	// be older than one already given; retry later.
	ErrStale = errors.New("read model behind the event log")
)

// Subjects. Broad to narrow, lower case; a few per job, never one per image.
const (
	SubjectSubmitted = "rp.submitted"
	subjectJobPrefix = "rp.job."
	// SubjectAllJobs matches every per-job subject.
	SubjectAllJobs = "rp.job.>"
)

// Per-job subject kinds: rp.job.<id>.<kind>.
const (
	KindStarted   = "started"
	KindImages    = "images"
	KindCompleted = "completed"
	KindRequeued  = "requeued"
)

// SubjectRequeued matches every job's requeue subject; the work consumer
// takes these besides submissions.
const SubjectRequeued = "rp.job.*." + KindRequeued

// StreamSubjects are the subjects the event stream stores.
var StreamSubjects = []string{SubjectSubmitted, SubjectAllJobs}

// JobSubject returns rp.job.<id>.<kind>.
func JobSubject(id uint64, kind string) string {
	return subjectJobPrefix + strconv.FormatUint(id, 10) + "." + kind
}

// JobFilter returns rp.job.<id>.>, every subject of one job.
func JobFilter(id uint64) string {
	return subjectJobPrefix + strconv.FormatUint(id, 10) + ".>"
}

// ParseJobSubject returns the job id and kind of a per-job subject.
func ParseJobSubject(subject string) (id uint64, kind string, ok bool) {
	rest, found := strings.CutPrefix(subject, subjectJobPrefix)
	if !found {
		return 0, "", false
	}
	idText, kind, found := strings.Cut(rest, ".")
	if !found || kind == "" || strings.Contains(kind, ".") {
		return 0, "", false
	}
	id, err := strconv.ParseUint(idText, 10, 64)
	if err != nil || id == 0 {
		return 0, "", false
	}
	return id, kind, true
}

// ParseJobID parses a job id given by a client. Only a positive decimal
// integer is accepted, so wildcards can never reach a subject filter.
func ParseJobID(s string) (uint64, error) {
	if s == "" || len(s) > 20 {
		return 0, fmt.Errorf("job id %q: not a positive integer", s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("job id %q: not a positive integer", s)
		}
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("job id %q: not a positive integer", s)
	}
	return id, nil
}

// ErrJobTooLarge: a submission does not fit one message of the log.
var ErrJobTooLarge = errors.New("job too large")
