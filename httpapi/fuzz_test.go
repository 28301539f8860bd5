package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/retailpulse/retailpulse/events"
)

// fuzzLimits are small so the fuzzer reaches every limit.
var fuzzLimits = Limits{MaxVisits: 4, MaxImages: 6, MaxURLLength: 40, MaxStoreIDLength: 10, MaxVisitTimeLength: 24}

// fuzzCheckURL refuses URLs containing "bad", so the fuzzer reaches the
// checkURL path.
func fuzzCheckURL(u string) error {
	if strings.Contains(u, "bad") {
		return errors.New("refused")
	}
	return nil
}

// FuzzDecodeSubmit checks that DecodeSubmit never panics, that its object
// scanner finds the members encoding/json finds, and that a job it accepts
// satisfies every invariant the engine relies on and survives a round trip
// through its own JSON encoding. Seeds live in testdata/fuzz/FuzzDecodeSubmit.
func FuzzDecodeSubmit(f *testing.F) {
	f.Add([]byte(specPayload))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFieldsAgree(t, data)
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

// checkFieldsAgree fails unless objectFields finds, in data and in each
// object of its visits array, the members encoding/json finds (which keeps
// the last value of a repeated key). It checks nothing when data is not one
// JSON object.
func checkFieldsAgree(t *testing.T, data []byte) {
	t.Helper()
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil || top == nil {
		return
	}
	compareFields(t, "body", data, top)
	var visits []json.RawMessage
	if json.Unmarshal(top["visits"], &visits) != nil {
		return
	}
	for i, raw := range visits {
		var v map[string]json.RawMessage
		if json.Unmarshal(raw, &v) == nil && v != nil {
			compareFields(t, fmt.Sprintf("visits[%d]", i), raw, v)
		}
	}
}

func compareFields(t *testing.T, where string, raw []byte, want map[string]json.RawMessage) {
	t.Helper()
	fields, err := objectFields(raw, nil)
	if err != nil {
		t.Fatalf("%s: objectFields: %v", where, err)
	}
	got := make(map[string]json.RawMessage, len(fields))
	for _, f := range fields {
		got[string(f.key)] = f.val
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d distinct keys, encoding/json finds %d", where, len(got), len(want))
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || !bytes.Equal(bytes.TrimSpace(g), bytes.TrimSpace(w)) {
			t.Fatalf("%s: key %q = %q, encoding/json finds %q", where, k, g, w)
		}
	}
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
		if strings.TrimSpace(v.StoreID) != v.StoreID {
			t.Fatalf("visits[%d].store_id = %q has leading or trailing whitespace", i, v.StoreID)
		}
		if utf8.RuneCountInString(v.StoreID) > lim.MaxStoreIDLength || utf8.RuneCountInString(v.VisitTime) > lim.MaxVisitTimeLength {
			t.Fatalf("visits[%d] has a store_id or visit_time over its limit: %+v", i, v)
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
