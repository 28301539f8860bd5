package events

import (
	"errors"
	"time"
)

// The read side's queries: what a read model answers beyond one job's
// status, shared by the read model (events/sqlview) and the API (httpapi).
// Every list is a page: at most Limit entries and an opaque cursor for the
// next page ("" when there is none).

// Page sizes.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

var (
	// ErrBadCursor: a cursor that no page of this list handed out.
	ErrBadCursor = errors.New("cursor is not one this list handed out")
	// ErrStoreNotFound: a store id neither in the store master nor in any
	// visit.
	ErrStoreNotFound = errors.New("store not found")
)

// VisitStatus is a visit's state over its images: failed if any image
// failed, else pending if any image has no outcome yet, else processed.
type VisitStatus string

const (
	VisitProcessed VisitStatus = "processed"
	VisitFailed    VisitStatus = "failed"
	VisitPending   VisitStatus = "pending"
)

// VisitFilter selects visits. Zero fields select everything.
type VisitFilter struct {
	AreaCode string
	StoreID  string
	// From and To bound visit_time, both inclusive. A visit whose
	// visit_time does not parse matches no bound.
	From, To time.Time
	Status   VisitStatus
	Limit    int    // 1..MaxPageLimit; 0 = DefaultPageLimit
	Cursor   string // "" = the first page
}

// VisitView is one visit of a job with its store and its images.
type VisitView struct {
	JobID      uint64      `json:"job_id,string"`
	Visit      int         `json:"visit"` // position in the job's visits
	StoreID    string      `json:"store_id"`
	StoreName  string      `json:"store_name"` // "" for a store not in the store master
	AreaCode   string      `json:"area_code"`  // ""  likewise
	VisitTime  string      `json:"visit_time"` // as submitted
	Status     VisitStatus `json:"status"`
	ImageCount int         `json:"image_count"`
	Processed  int         `json:"processed"`
	Failed     int         `json:"failed"`
	// Images are the visit's images in order, at most MaxPageLimit; the
	// rest of a larger visit is in the job's results.
	Images []VisitImage `json:"images"`
}

// VisitImage is one image of a visit and its result.
type VisitImage struct {
	Index     int    `json:"index"` // position in the visit's image_url
	URL       string `json:"url"`
	State     string `json:"state"` // ImageProcessedState, ImageFailedState or ImagePendingState
	Width     int    `json:"width,omitempty"`
	Height    int    `json:"height,omitempty"`
	Perimeter int    `json:"perimeter,omitempty"`
	Error     string `json:"error,omitempty"` // the reason class of a failed image
}

// VisitPage is one page of visits, newest visit_time first (visits whose
// time does not parse last), then by job and visit, newest first.
type VisitPage struct {
	Visits []VisitView
	Next   string
}

// StoreSummary counts a store's visits and images, in all and per day.
type StoreSummary struct {
	StoreID   string     `json:"store_id"`
	StoreName string     `json:"store_name"`
	AreaCode  string     `json:"area_code"`
	Visits    int        `json:"visits"`
	Images    int        `json:"images"`
	Processed int        `json:"processed"`
	Failed    int        `json:"failed"`
	Pending   int        `json:"pending"`
	Days      []DayCount `json:"days"` // days with visits, oldest first (UTC days of visit_time)
}

// DayCount is one day of a store's summary.
type DayCount struct {
	Date      string `json:"date"` // YYYY-MM-DD, UTC
	Visits    int    `json:"visits"`
	Images    int    `json:"images"`
	Processed int    `json:"processed"`
	Failed    int    `json:"failed"`
}

// JobSummary is one job of the job list.
type JobSummary struct {
	JobID       uint64    `json:"job_id,string"`
	Status      Status    `json:"status"`
	SubmittedAt time.Time `json:"submitted_at"`
	Images      int       `json:"images"`
	Processed   int       `json:"processed"`
	Failed      int       `json:"failed"`
}

// JobPage is one page of jobs, newest (highest id) first.
type JobPage struct {
	Jobs []JobSummary
	Next string
}

// ResultPage is one page of a job's image results, in submission order.
type ResultPage struct {
	Status Status
	Images []ImageResult
	Next   string
}

// JobStore is one store of a job: its visits and images, and the job's
// first failure there.
type JobStore struct {
	StoreID   string `json:"store_id"`
	StoreName string `json:"store_name"` // "" for a store not in the store master
	AreaCode  string `json:"area_code"`  // ""  likewise
	Visits    int    `json:"visits"`
	Images    int    `json:"images"`
	Processed int    `json:"processed"`
	Failed    int    `json:"failed"`
	// FirstFailure is the store's first failed image in submission order
	// (visit, then index); nil while none failed.
	FirstFailure *StoreFailure `json:"first_failure,omitempty"`
}

// StoreFailure is one failed image of a store.
type StoreFailure struct {
	Visit  int    `json:"visit"`
	Index  int    `json:"index"`
	URL    string `json:"url"`
	Reason string `json:"reason"` // the reason class ("http 404", "unknown store", ...)
}

// JobStores is a job's status and its stores, in the order of each store's
// first visit in the submission.
type JobStores struct {
	Status Status
	Stores []JobStore
}
