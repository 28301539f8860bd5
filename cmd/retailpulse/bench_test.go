package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// runBenchCommand runs `retailpulse bench args...` and decodes its --json
// output.
func runBenchCommand(t *testing.T, args ...string) (int, benchResult, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	m := &Main{Stdout: &stdout, Stderr: &stderr}
	code := m.Run(ctx, append([]string{"bench"}, args...))
	var res benchResult
	if strings.Contains(strings.Join(args, " "), "--json") && code != exitUsage {
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
			t.Fatalf("bench output is not JSON: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
		}
	}
	return code, res, stderr.String()
}

func TestBench_SmallRun(t *testing.T) {
	code, res, stderr := runBenchCommand(t, "--jobs", "3", "--visits", "2", "--images", "5", "--gpu-pause", "0", "--fail-rate", "0.2", "--json")
	if code != exitOK {
		t.Fatalf("exit %d; failures %v\nstderr: %s", code, res.Failures, stderr)
	}
	if res.Images != 30 || !res.Pass {
		t.Fatalf("images %d pass %v failures %v", res.Images, res.Pass, res.Failures)
	}
	if res.JobsCompleted+res.JobsFailed != 3 || res.Mode != "in-process" {
		t.Errorf("jobs completed %d failed %d, mode %q", res.JobsCompleted, res.JobsFailed, res.Mode)
	}
	if res.EventsAppended == nil || res.CPUSeconds == nil || res.PeakRSSBytes == nil {
		t.Errorf("missing measurements: events %v cpu %v rss %v", res.EventsAppended, res.CPUSeconds, res.PeakRSSBytes)
	}
	if res.ImagesProcessed == nil || res.ImagesFailed == nil || int(*res.ImagesProcessed+*res.ImagesFailed) != 30 {
		t.Errorf("service counted processed %v failed %v, want 30 in all", res.ImagesProcessed, res.ImagesFailed)
	}
	if res.ImagesFailed != nil && int(*res.ImagesFailed) != res.FailingImages {
		t.Errorf("service failed %v images, workload had %d failing", *res.ImagesFailed, res.FailingImages)
	}
}

func TestBench_AgainstURL(t *testing.T) {
	app := startApp(t, t.TempDir())
	code, res, stderr := runBenchCommand(t, "--url", app.url, "--jobs", "4", "--visits", "3", "--images", "4",
		"--fail-rate", "0.1", "--status-rps", "100", "--image-hosts", "2", "--json")
	if code != exitOK {
		t.Fatalf("exit %d; failures %v\nstderr: %s", code, res.Failures, stderr)
	}
	if res.Images != 48 || !res.Pass || res.Mode != "url" || res.JobsSubmitted != 4 {
		t.Fatalf("result %+v", res)
	}
	if res.StatusErrors != 0 {
		t.Errorf("%d status requests failed", res.StatusErrors)
	}
	// The test service exposes /metrics, so the process numbers are known.
	if res.CPUSeconds == nil || res.PeakRSSBytes == nil || res.EventsAppended == nil {
		t.Errorf("missing measurements: cpu %v rss %v events %v", res.CPUSeconds, res.PeakRSSBytes, res.EventsAppended)
	}
}

func TestBench_Flags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"unknown flag", []string{"--nope"}, exitUsage},
		{"non-positive jobs", []string{"--jobs", "0"}, exitUsage},
		{"fail rate above 1", []string{"--fail-rate", "1.5"}, exitUsage},
		{"bad service flag", []string{"--gpu-pause", "soon"}, exitUsage},
		{"service flag with --url", []string{"--url", "http://127.0.0.1:1", "--gpu-pause", "0"}, exitUsage},
		{"cpuprofile with --url", []string{"--url", "http://127.0.0.1:1", "--cpuprofile", "x"}, exitUsage},
		{"bad url", []string{"--url", "ftp://x"}, exitUsage},
		{"store not in the sample", []string{"--store-ids", "S99999999"}, exitUsage},
		{"help", []string{"-h"}, exitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, _, stderr := runBenchCommand(t, tt.args...); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.code, stderr)
			}
		})
	}
}

// A job that ends differently from what its inputs imply is reported.
func TestBenchJob_Check(t *testing.T) {
	status := func(s, id string, stores ...string) benchStatus {
		st := benchStatus{Status: s, JobID: json.RawMessage(id)}
		for _, id := range stores {
			st.Error = append(st.Error, benchStoreError{StoreID: id, Error: "image x: http 404"})
		}
		return st
	}
	ok := benchJob{id: 7}
	bad := benchJob{id: 7, wantFailed: []string{"S1", "S2"}}
	tests := []struct {
		name    string
		job     benchJob
		st      benchStatus
		wantErr bool
	}{
		{"completed as expected", ok, status("completed", `"7"`), false},
		{"numeric job id accepted", ok, status("completed", `7`), false},
		{"wrong job id", ok, status("completed", `"8"`), true},
		{"failed unexpectedly", ok, status("failed", `"7"`, "S1"), true},
		{"failed as expected, any order", bad, status("failed", `"7"`, "S2", "S1"), false},
		{"store listed twice", bad, status("failed", `"7"`, "S1", "S2", "S1"), true},
		{"store missing", bad, status("failed", `"7"`, "S1"), true},
		{"completed although an image failed", bad, status("completed", `"7"`), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.job.check(tt.st); (err != nil) != tt.wantErr {
				t.Fatalf("check = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestBench_Percentile(t *testing.T) {
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

func TestBench_ParsePromText(t *testing.T) {
	got := parsePromText([]byte(`# HELP x y
# TYPE retailpulse_images_failed_total counter
retailpulse_images_failed_total{reason="http 404"} 3
retailpulse_images_failed_total{reason="odd } brace"} 2
retailpulse_event_batch_events_sum 12.5
process_resident_memory_bytes 1.2e+07 1700000000000
`))
	want := promSample{"retailpulse_images_failed_total": 5, "retailpulse_event_batch_events_sum": 12.5, "process_resident_memory_bytes": 1.2e7}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestBench_JPEGDecodesAtAnySize(t *testing.T) {
	for _, size := range []int{0, 20_000, 100_000} {
		b, err := benchJPEG(640, 480, size)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < size {
			t.Errorf("size %d: got %d bytes", size, len(b))
		}
	}
}

// Jobs that cannot finish within --timeout fail the run with exit 1.
func TestBench_TimeoutFails(t *testing.T) {
	code, res, stderr := runBenchCommand(t, "--jobs", "1", "--visits", "1", "--images", "1",
		"--gpu-pause", "1s", "--timeout", "200ms", "--json")
	if code != exitError || res.Pass {
		t.Fatalf("exit %d pass %v, want exit %d and FAIL\nstderr: %s", code, res.Pass, exitError, stderr)
	}
	if len(res.Failures) == 0 || !strings.Contains(res.Failures[0], "timeout") {
		t.Fatalf("failures %v, want a timeout", res.Failures)
	}
}
