package loadgen

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// The sampler keeps the largest lag the target reported, and reports none
// for a target without the metric.
func TestLagSampler_KeepsTheLargestLag(t *testing.T) {
	var scrapes atomic.Int64
	lags := []float64{0.02, 0.7, 0.1}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := scrapes.Add(1)
		fmt.Fprintf(w, "# TYPE retailpulse_projection_lag_seconds gauge\nretailpulse_projection_lag_seconds %g\n", lags[min(int(n)-1, len(lags)-1)])
	}))
	defer srv.Close()
	c := newAPIClient(srv.URL)
	defer c.close()
	s := startLagSampler(context.Background(), c)
	deadline := time.Now().Add(10 * time.Second)
	for scrapes.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.finish(); got == nil || *got != 0.7 {
		t.Fatalf("max lag %v, want 0.7", got)
	}

	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "go_goroutines 7")
	}))
	defer bare.Close()
	c2 := newAPIClient(bare.URL)
	defer c2.close()
	s2 := startLagSampler(context.Background(), c2)
	time.Sleep(2 * lagSampleInterval)
	if got := s2.finish(); got != nil {
		t.Fatalf("lag %v from a target without the metric", *got)
	}
}
