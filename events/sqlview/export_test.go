package sqlview

import (
	"context"

	"github.com/retailpulse/retailpulse/events"
)

// JobRow reads a job from the database, past the job cache.
func JobRow(ctx context.Context, v *View, id uint64) (events.JobView, error) {
	return v.jobRow(ctx, id)
}

// SetJobCacheCapacity replaces v's job cache with an empty one of capacity
// entries; call it before applying anything.
func SetJobCacheCapacity(v *View, capacity int) { v.cache = newJobCache(capacity) }
