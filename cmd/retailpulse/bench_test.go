package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/cmd/retailpulse/internal/loadgen"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// runBenchCommand runs `retailpulse bench args...` and decodes its --json
// output.
func runBenchCommand(t *testing.T, args ...string) (int, loadgen.Result, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	m := &Main{Stdout: &stdout, Stderr: &stderr}
	code := m.Run(ctx, append([]string{"bench"}, args...))
	var res loadgen.Result
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
	if _, err := os.Stat("/proc/stat"); err == nil {
		if res.MachineSeconds == nil || res.MachineBusySeconds == nil || res.MachineStealSeconds == nil || res.MachineCPUs < 1 ||
			*res.MachineBusySeconds <= 0 || *res.MachineBusySeconds > float64(res.MachineCPUs)**res.MachineSeconds+0.5 {
			t.Errorf("machine: cpus %d over %v s busy %v steal %v", res.MachineCPUs, res.MachineSeconds, res.MachineBusySeconds, res.MachineStealSeconds)
		}
	}
	if res.ImagesProcessed == nil || res.ImagesFailed == nil || int(*res.ImagesProcessed+*res.ImagesFailed) != 30 {
		t.Errorf("service counted processed %v failed %v, want 30 in all", res.ImagesProcessed, res.ImagesFailed)
	}
	if res.ImagesFailed != nil && int(*res.ImagesFailed) != res.FailingImages {
		t.Errorf("service failed %v images, workload had %d failing", *res.ImagesFailed, res.FailingImages)
	}
	// The 404s read no body; every other image came by one ranged request
	// of its 100 KB padded JPEG: the first 64 KiB while the host's headers
	// were unknown, 4 KiB once they were (the header ends within 1 KiB).
	if res.ImagesFetchedRanged == nil || int(*res.ImagesFetchedRanged) != 30-res.FailingImages || res.BytesReadPerImage == nil || *res.BytesReadPerImage < 4096 || *res.BytesReadPerImage > 65536 {
		t.Errorf("fetched ranged %v, bytes read per image %v; want %d and 4-64 KiB", res.ImagesFetchedRanged, res.BytesReadPerImage, 30-res.FailingImages)
	}
}

// W2: camera photos whose header follows 24 KiB of metadata cost one
// range of at most 64 KiB each from a host that honours Range; from one that ignores
// it, whole bodies cut off after the header.
func TestBench_Photo(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		mode      string
		maxServed float64
	}{
		{"host honours Range", nil, "ranged", 65536},
		{"host ignores Range", []string{"--host-ignores-range"}, "whole", 2_500_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--photo", "--header-offset", "24", "--jobs", "2", "--visits", "2", "--images", "5", "--gpu-pause", "0", "--json"}, tt.args...)
			code, res, stderr := runBenchCommand(t, args...)
			if code != exitOK || !res.Pass {
				t.Fatalf("exit %d; failures %v\nstderr: %s", code, res.Failures, stderr)
			}
			if !res.Photo || res.HeaderOffsetKB != 24 || res.ImageBytes < 2_500_000 || res.HostRange != (tt.mode == "ranged") {
				t.Fatalf("workload not described: photo %v offset %d bytes %d range %v", res.Photo, res.HeaderOffsetKB, res.ImageBytes, res.HostRange)
			}
			fetched := res.ImagesFetchedWhole
			if tt.mode == "ranged" {
				fetched = res.ImagesFetchedRanged
			}
			if fetched == nil || *fetched != 20 {
				t.Errorf("images fetched %s: %v, want 20", tt.mode, fetched)
			}
			if res.ImageBytesServedPerImage <= 24<<10 || res.ImageBytesServedPerImage > tt.maxServed {
				t.Errorf("%.0f bytes served per image, want more than the metadata and at most %.0f", res.ImageBytesServedPerImage, tt.maxServed)
			}
		})
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
		{"negative header offset", []string{"--header-offset", "-1"}, exitUsage},
		{"header offset too large", []string{"--header-offset", "1000000"}, exitUsage},
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

// The image host as a process of its own: `bench --serve-images` serves
// W2's photos, and a run against it with --image-host takes the image's
// description and the bytes served from the host's counters.
func TestBench_ImageHostInItsOwnProcess(t *testing.T) {
	bin := procBuild(t)
	host := procSpawn(t, "image host", 0, bin, "bench", "--serve-images", "127.0.0.1:0,127.0.0.1:0", "--photo", "--header-offset", "24")
	var urls []string
	jstest.CheckFor(t, time.Minute, func() error {
		out := host.out.String()
		_, rest, ok := strings.Cut(out, " at [")
		list, _, ok2 := strings.Cut(rest, "]")
		if !ok || !ok2 {
			if host.exited() {
				t.Fatalf("image host exited: %s", out)
			}
			return fmt.Errorf("no URLs printed yet: %q", out)
		}
		urls = strings.Fields(list)
		return nil
	})
	if len(urls) != 2 {
		t.Fatalf("image host URLs %v, want 2", urls)
	}
	args := []string{"--image-host", strings.Join(urls, ","), "--jobs", "2", "--visits", "2", "--images", "5", "--gpu-pause", "0", "--fail-rate", "0.2", "--json"}
	for range 2 { // the second run counts only its own requests
		code, res, stderr := runBenchCommand(t, args...)
		if code != exitOK || !res.Pass {
			t.Fatalf("exit %d; failures %v\nstderr: %s", code, res.Failures, stderr)
		}
		if !res.Photo || res.HeaderOffsetKB != 24 || res.ImageBytes != benchPhotoBytes || !res.HostRange || res.ImageHosts != 2 || res.HostProcess != "own" {
			t.Fatalf("image host not described: %+v", res)
		}
		if res.ImageRequests != 20 {
			t.Errorf("image host counted %d requests, want 20 (one per image, 404s included)", res.ImageRequests)
		}
		// One range each: 64 KiB while the hosts' headers were unknown,
		// 32 KiB once they were (24 KiB of metadata before the header).
		if res.ImageBytesServedPerImage < 32768 || res.ImageBytesServedPerImage > 65536 {
			t.Errorf("%.0f bytes served per image, want one range of 32-64 KiB", res.ImageBytesServedPerImage)
		}
	}
	for _, args := range [][]string{
		{"--image-host", urls[0], "--photo"},
		{"--image-host", "ftp://x"},
		{"--serve-images", "127.0.0.1:0", "--url", "http://127.0.0.1:1"},
		{"--serve-images", "127.0.0.1:0", "--gpu-pause", "0"},
	} {
		if code, _, stderr := runBenchCommand(t, args...); code != exitUsage {
			t.Errorf("bench %v: exit %d, want %d; stderr: %s", args, code, exitUsage, stderr)
		}
	}
}
