package loadgen

import (
	"math"
	"slices"
	"time"
)

// latencyMs returns the 50th and 99th percentiles and the maximum, in
// milliseconds. It sorts lat.
func latencyMs(lat []time.Duration) (p50, p99, worst float64) {
	if len(lat) == 0 {
		return 0, 0, 0
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return ms(percentile(lat, 50)), ms(percentile(lat, 99)), ms(lat[len(lat)-1])
}

// percentile returns the nearest-rank p-th percentile of sorted, which must
// not be empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}
