package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/retailpulse/retailpulse/events"
)

// fuzzLimits are small so the fuzzer reaches every limit.
var fuzzLimits = Limits{MaxVisits: 4, MaxImages: 6, MaxURLLength: 40}

// fuzzCheckURL refuses URLs containing "bad", so the fuzzer reaches the
// checkURL path.
func fuzzCheckURL(u string) error {
	if strings.Contains(u, "bad") {
		return errors.New("refused")
	}
	return nil
}

// FuzzDecodeSubmit checks that DecodeSubmit never panics, and that a job it
// accepts satisfies every invariant the engine relies on and survives a
// round trip through its own JSON encoding. Seeds live in
// testdata/fuzz/FuzzDecodeSubmit.
func FuzzDecodeSubmit(f *testing.F) {
	f.Add([]byte(specPayload))
	f.Fuzz(func(t *testing.T, data []byte) {
		job, err := DecodeSubmit(bytes.NewReader(data), fuzzLimits, fuzzCheckURL)
		if err != nil {
			if job != nil {
				t.Fatalf("job %+v returned with error %v", job, err)
			}
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		checkJobInvariants(t, job, fuzzLimits)

		// What was accepted, encoded again, decodes to the same job.
		again, err := json.Marshal(job)
		if err != nil {
			t.Fatalf("marshal accepted job: %v", err)
		}
		job2, err := DecodeSubmit(bytes.NewReader(again), fuzzLimits, fuzzCheckURL)
		if err != nil {
			t.Fatalf("re-encoded job %s refused: %v", again, err)
		}
		if !reflect.DeepEqual(job, job2) {
			t.Fatalf("round trip changed the job:\n%+v\n%+v", job, job2)
		}
	})
}

// checkJobInvariants fails unless j is a job the engine can take.
func checkJobInvariants(t *testing.T, j *events.JobSubmitted, lim Limits) {
	t.Helper()
	if j.Count != len(j.Visits) || j.Count <= 0 {
		t.Fatalf("count %d with %d visits", j.Count, len(j.Visits))
	}
	if len(j.Visits) > lim.MaxVisits {
		t.Fatalf("%d visits over the limit %d", len(j.Visits), lim.MaxVisits)
	}
	if n := j.Images(); n > lim.MaxImages || n < len(j.Visits) {
		t.Fatalf("%d images with %d visits, limit %d", n, len(j.Visits), lim.MaxImages)
	}
	for i, v := range j.Visits {
		if strings.TrimSpace(v.StoreID) == "" || strings.TrimSpace(v.VisitTime) == "" {
			t.Fatalf("visits[%d] has a blank store_id or visit_time: %+v", i, v)
		}
		if len(v.ImageURLs) == 0 {
			t.Fatalf("visits[%d] has no images", i)
		}
		for k, u := range v.ImageURLs {
			if strings.TrimSpace(u) == "" || len(u) > lim.MaxURLLength || fuzzCheckURL(u) != nil {
				t.Fatalf("visits[%d].image_url[%d] = %q accepted", i, k, u)
			}
		}
	}
	if !j.SubmittedAt.IsZero() {
		t.Fatalf("SubmittedAt set by DecodeSubmit: %v", j.SubmittedAt)
	}
}
