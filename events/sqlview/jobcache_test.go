package sqlview

import (
	"reflect"
	"testing"

	"github.com/retailpulse/retailpulse/events"
)

func TestJobCache_FollowsCommittedChanges(t *testing.T) {
	errs := []events.StoreError{{StoreID: "S1", Error: "http 404"}}
	tests := []struct {
		name string
		ops  []cacheOp
		want events.JobView
	}{
		{"submitted", []cacheOp{{id: 1, kind: opInsert, images: 5}},
			events.JobView{ID: 1, Status: events.StatusOngoing, Images: 5}},
		{"settled images add up", []cacheOp{{id: 1, kind: opInsert, images: 5}, {id: 1, kind: opAdd, processed: 2, failed: 1}, {id: 1, kind: opAdd, processed: 1}},
			events.JobView{ID: 1, Status: events.StatusOngoing, Images: 5, Processed: 3, Failed: 1}},
		{"completed", []cacheOp{{id: 1, kind: opInsert, images: 1}, {id: 1, kind: opComplete, status: events.StatusCompleted}, {id: 1, kind: opAdd, processed: 1}},
			events.JobView{ID: 1, Status: events.StatusCompleted, Images: 1, Processed: 1}},
		{"failed, with its list", []cacheOp{{id: 1, kind: opInsert, images: 1}, {id: 1, kind: opComplete, status: events.StatusFailed, errors: errs}, {id: 1, kind: opAdd, failed: 1}},
			events.JobView{ID: 1, Status: events.StatusFailed, Errors: errs, Images: 1, Failed: 1}},
		{"failed with an empty list reads as none", []cacheOp{{id: 1, kind: opInsert, images: 1}, {id: 1, kind: opComplete, status: events.StatusFailed, errors: []events.StoreError{}}},
			events.JobView{ID: 1, Status: events.StatusFailed, Images: 1}},
		{"a second submission of the id does not reset it", []cacheOp{{id: 1, kind: opInsert, images: 1}, {id: 1, kind: opAdd, processed: 1}, {id: 1, kind: opInsert, images: 9}},
			events.JobView{ID: 1, Status: events.StatusOngoing, Images: 1, Processed: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newJobCache(4)
			c.apply(tt.ops)
			got, ok := c.get(1)
			if !ok || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("get = %+v, %v; want %+v", got, ok, tt.want)
			}
		})
	}
}

func TestJobCache_EvictsOldestSubmissionsAndIgnoresUnknownJobs(t *testing.T) {
	c := newJobCache(3)
	for id := uint64(1); id <= 5; id++ {
		c.apply([]cacheOp{{id: id, kind: opInsert, images: int(id)}})
	}
	// Changes to evicted or never-seen jobs are ignored, not cached.
	c.apply([]cacheOp{{id: 1, kind: opAdd, processed: 1}, {id: 2, kind: opComplete, status: events.StatusCompleted}, {id: 9, kind: opAdd, processed: 1}})
	for id, want := range map[uint64]bool{1: false, 2: false, 3: true, 4: true, 5: true, 9: false} {
		if _, ok := c.get(id); ok != want {
			t.Errorf("job %d cached = %v, want %v", id, ok, want)
		}
	}
	if len(c.jobs) != 3 || len(c.ring) != 3 {
		t.Fatalf("%d entries, ring of %d; want 3", len(c.jobs), len(c.ring))
	}
}

func TestJobCache_DropsLongErrorLists(t *testing.T) {
	c := newJobCache(4)
	long := make([]events.StoreError, maxCachedErrors+1)
	c.apply([]cacheOp{{id: 1, kind: opInsert, images: 1}, {id: 1, kind: opComplete, status: events.StatusFailed, errors: long}})
	if jv, ok := c.get(1); ok {
		t.Fatalf("a job with %d errors stayed cached: %+v", len(long), jv)
	}
	// Its ring slot is reused in turn without disturbing the others.
	for id := uint64(2); id <= 6; id++ {
		c.apply([]cacheOp{{id: id, kind: opInsert}})
	}
	for id := uint64(3); id <= 6; id++ {
		if _, ok := c.get(id); !ok {
			t.Errorf("job %d not cached", id)
		}
	}
}

func TestJobCache_GetReturnsACopy(t *testing.T) {
	c := newJobCache(4)
	c.apply([]cacheOp{{id: 1, kind: opInsert, images: 1}, {id: 1, kind: opComplete, status: events.StatusFailed, errors: []events.StoreError{{StoreID: "S1", Error: "e"}}}})
	got, _ := c.get(1)
	got.Errors[0].StoreID = "changed"
	got.Processed = 7
	if again, _ := c.get(1); again.Errors[0].StoreID != "S1" || again.Processed != 0 {
		t.Fatalf("a caller's change reached the cache: %+v", again)
	}
}
