package loadgen

import (
	"testing"
	"time"
)

func TestLatencyMs_Percentiles(t *testing.T) {
	lat := make([]time.Duration, 100)
	for i := range lat {
		lat[i] = time.Duration(100-i) * time.Millisecond
	}
	p50, p99, worst := latencyMs(lat)
	if p50 != 50 || p99 != 99 || worst != 100 {
		t.Fatalf("p50 %v p99 %v max %v, want 50 99 100", p50, p99, worst)
	}
	if p50, p99, worst := latencyMs([]time.Duration{3 * time.Millisecond}); p50 != 3 || p99 != 3 || worst != 3 {
		t.Fatalf("one sample: %v %v %v", p50, p99, worst)
	}
}
