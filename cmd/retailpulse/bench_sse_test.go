package main

import "testing"

func TestBench_HoldsEventStreamsOpen(t *testing.T) {
	code, res, stderr := runBenchCommand(t, "--jobs", "3", "--visits", "2", "--images", "4", "--gpu-pause", "0", "--sse-streams", "10", "--json")
	if code != exitOK {
		t.Fatalf("exit %d; failures %v\nstderr: %s", code, res.Failures, stderr)
	}
	// 10 streams over 3 jobs (4, 3, 3); each job: submitted, started, 8
	// outcomes, completed (more if an owner's work is redone).
	if res.SSEOpened != 10 || res.SSECompleted != 10 || res.SSEOverflows != 0 || res.SSEEvents < 10*11 {
		t.Fatalf("streams opened %d, completed %d, overflows %d, events %d", res.SSEOpened, res.SSECompleted, res.SSEOverflows, res.SSEEvents)
	}
}
