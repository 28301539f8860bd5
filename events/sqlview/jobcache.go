package sqlview

import (
	"slices"
	"sync"

	"github.com/retailpulse/retailpulse/events"
)

// jobCache holds the rows of the jobs most recently submitted, as Job
// reads them, so a status read of a recent job costs a map lookup instead
// of a SQLite query. It is kept equal to the committed rows by the
// projection's writer alone: an entry is made when a job's submission is
// committed and follows every later commit of that job; readers never
// fill it. Hence an entry is never older than the state the View has
// advanced to (ApplyMessages updates the cache after its commit and before
// advance), and a job's reads stay monotonic whether they hit or miss: an
// entry, once made, lives until evicted and never reappears.
//
// At most capacity entries are kept, the oldest submissions evicted first.
// A failed job whose error list is longer than maxCachedErrors is dropped
// rather than cached. Safe for concurrent use.
type jobCache struct {
	mu       sync.RWMutex
	jobs     map[uint64]*events.JobView
	ring     []uint64 // ids in insertion order; ring[next] is the oldest once full
	next     int
	capacity int
}

// Bounds of the job cache: at about 150 bytes an entry, 65,536 entries
// hold the last hour of a busy instance in about 10 MiB.
const (
	jobCacheEntries = 1 << 16
	maxCachedErrors = 64
)

func newJobCache(capacity int) *jobCache {
	return &jobCache{jobs: make(map[uint64]*events.JobView), capacity: capacity}
}

// get returns a copy of job id's cached view.
func (c *jobCache) get(id uint64) (events.JobView, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	jv, ok := c.jobs[id]
	if !ok {
		return events.JobView{}, false
	}
	out := *jv
	out.Errors = slices.Clone(jv.Errors)
	return out, true
}

// cacheOp is one committed change to a job's row, recorded by the applier
// during a transaction and applied to the cache after its commit.
type cacheOp struct {
	id                uint64
	kind              cacheOpKind
	images            int                 // opInsert
	processed, failed int                 // opAdd
	status            events.Status       // opComplete
	errors            []events.StoreError // opComplete, failed jobs only
}

type cacheOpKind uint8

const (
	opInsert   cacheOpKind = iota // a submission: an ongoing job with nothing settled
	opAdd                         // settled images added to the counters
	opComplete                    // the job's terminal status and error list
)

// apply folds committed changes into the cache, in commit order. Changes
// to jobs without an entry are ignored: their reads go to the database.
func (c *jobCache) apply(ops []cacheOp) {
	if len(ops) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, op := range ops {
		if op.kind == opInsert {
			c.insert(&events.JobView{ID: op.id, Status: events.StatusOngoing, Images: op.images})
			continue
		}
		jv, ok := c.jobs[op.id]
		if !ok {
			continue
		}
		switch op.kind {
		case opAdd:
			jv.Processed += op.processed
			jv.Failed += op.failed
		case opComplete:
			if len(op.errors) > maxCachedErrors {
				delete(c.jobs, op.id) // its slot in the ring is reclaimed when reached
				continue
			}
			jv.Status = op.status
			jv.Errors = nil
			if op.status == events.StatusFailed && len(op.errors) > 0 {
				jv.Errors = slices.Clone(op.errors)
			}
		}
	}
}

// insert adds jv, evicting the oldest entry when full. Called with mu held.
func (c *jobCache) insert(jv *events.JobView) {
	if _, ok := c.jobs[jv.ID]; ok {
		return // a submission is applied once; never replace a live entry
	}
	if len(c.ring) < c.capacity {
		c.ring = append(c.ring, jv.ID)
	} else {
		delete(c.jobs, c.ring[c.next])
		c.ring[c.next] = jv.ID
		c.next = (c.next + 1) % c.capacity
	}
	c.jobs[jv.ID] = jv
}
