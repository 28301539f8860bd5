package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

func TestAcceptedJobs_RecordsUntilApplied(t *testing.T) {
	type step struct {
		add     []uint64 // jobs added, with images = id*10
		applied uint64   // then appliedThrough(applied), when non-zero
		holds   []uint64
		absent  []uint64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"recorded until applied", []step{
			{add: []uint64{3, 9, 5}, holds: []uint64{3, 5, 9}, absent: []uint64{1, 4, 10}},
			{applied: 5, holds: []uint64{9}, absent: []uint64{3, 5}},
			{applied: 9, absent: []uint64{9}},
		}},
		{"a job already applied is not recorded", []step{
			{applied: 20},
			{add: []uint64{12, 20, 21}, holds: []uint64{21}, absent: []uint64{12, 20}},
		}},
		{"an older report forgets nothing newer", []step{
			{add: []uint64{7, 8}, applied: 7, holds: []uint64{8}},
			{applied: 2, holds: []uint64{8}},
			{add: []uint64{6}, absent: []uint64{6}},
		}},
		{"adding twice keeps one entry", []step{
			{add: []uint64{4, 4}, holds: []uint64{4}},
			{applied: 3, holds: []uint64{4}},
			{applied: 4, absent: []uint64{4}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a acceptedJobs
			for i, s := range tt.steps {
				for _, id := range s.add {
					a.add(id, int(id)*10)
				}
				if s.applied != 0 {
					a.appliedThrough(s.applied)
				}
				for _, id := range s.holds {
					if images, ok := a.lookup(id); !ok || images != int(id)*10 {
						t.Fatalf("step %d: lookup(%d) = %d, %v; want %d, true", i, id, images, ok, id*10)
					}
				}
				for _, id := range s.absent {
					if _, ok := a.lookup(id); ok {
						t.Fatalf("step %d: lookup(%d) found a job", i, id)
					}
				}
			}
		})
	}
}

func TestAcceptedJobs_Bounded(t *testing.T) {
	var a acceptedJobs
	for id := uint64(1); id <= maxAcceptedJobs+10; id++ {
		a.add(id, 1)
	}
	if n := a.len(); n != maxAcceptedJobs {
		t.Fatalf("%d jobs recorded, want the bound %d", n, maxAcceptedJobs)
	}
	if _, ok := a.lookup(maxAcceptedJobs + 1); ok {
		t.Fatal("a job past the bound was recorded")
	}
	a.appliedThrough(maxAcceptedJobs)
	if n := a.len(); n != 0 {
		t.Fatalf("%d jobs recorded after the projection passed them all", n)
	}
}

// A job this instance accepted is answered as ongoing at once, while the
// projection has not applied its submission.
// Without the record the read would wait for the projection and answer
// 503 after --submit-timeout.
func TestService_StatusOfAcceptedJobWhileProjectionHeld(t *testing.T) {
	img := newImageServer(t)
	app, held := startHeldApp(t, t.TempDir(), "--submit-timeout", "400ms")
	jstest.CheckFor(t, time.Minute, func() error {
		if !app.Ready() {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	id := app.submit(t, jobBody(visit{storeA, []string{img.URL + "/4x4.png"}, "t"}))
	want := fmt.Sprintf(`{"status":"ongoing","job_id":"%d"}`, id)
	for range 3 {
		start := time.Now()
		code, _, body := do(t, "GET", fmt.Sprintf("%s/api/status?jobid=%d", app.url, id), "")
		if code != http.StatusOK || body != want {
			t.Fatalf("status while the projection is held: %d %s, want 200 %s", code, body, want)
		}
		if d := time.Since(start); d >= 400*time.Millisecond {
			t.Fatalf("status took %v: it waited for the projection", d)
		}
	}
	// An id never accepted is not answered from the record: it waits for
	// the held projection like any read the read model cannot answer yet.
	if code, _, body := do(t, "GET", fmt.Sprintf("%s/api/status?jobid=%d", app.url, id+1000), ""); code != http.StatusServiceUnavailable {
		t.Fatalf("status of an id never accepted while held: %d %s, want 503", code, body)
	}
	if n := app.accepted.len(); n != 1 {
		t.Fatalf("%d jobs recorded while held, want 1", n)
	}
	held.release()
	if got := app.waitDone(t, id); got.Status != "completed" {
		t.Fatalf("job ended %+v", got)
	}
	if code, _, body := do(t, "GET", fmt.Sprintf("%s/api/status?jobid=%d", app.url, id+1000), ""); code != http.StatusBadRequest || body != "{}" {
		t.Fatalf("status of an id never accepted: %d %s, want 400 {}", code, body)
	}
	jstest.CheckFor(t, 10*time.Second, func() error {
		if n := app.accepted.len(); n != 0 {
			return fmt.Errorf("%d jobs still recorded after the projection applied them", n)
		}
		return nil
	})
}
