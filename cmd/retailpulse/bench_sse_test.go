package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/cmd/retailpulse/internal/loadgen"
)

func TestBench_HoldsEventStreamsOpen(t *testing.T) {
	code, res, stderr := runBenchCommand(t, "--jobs", "3", "--visits", "2", "--images", "4", "--gpu-pause", "0", "--sse-streams", "10", "--sse-reader", "inline", "--json")
	if code != exitOK {
		t.Fatalf("exit %d; failures %v\nstderr: %s", code, res.Failures, stderr)
	}
	checkBenchStreams(t, res)
}

func checkBenchStreams(t *testing.T, res loadgen.Result) {
	t.Helper()
	// 10 streams over 3 jobs (4, 3, 3); each job: submitted, started, 8
	// outcomes, completed (more if an owner's work is redone).
	if res.SSEOpened != 10 || res.SSECompleted != 10 || res.SSEOverflows != 0 || res.SSEEvents < 10*11 {
		t.Fatalf("streams opened %d, completed %d, overflows %d, events %d", res.SSEOpened, res.SSECompleted, res.SSEOverflows, res.SSEEvents)
	}
}

// By default the streams are read by a `bench --read-streams` process of
// their own, which the generator tells each job as it submits it.
func TestBench_ReadsEventStreamsInAProcessOfTheirOwn(t *testing.T) {
	bin := procBuild(t)
	app := startApp(t, t.TempDir())
	code, stdout, stderr := procRunTool(t, bin, 2*time.Minute, "bench", "--url", app.url, "--jobs", "3", "--visits", "2", "--images", "4", "--sse-streams", "10", "--status-rps", "50", "--json")
	var res loadgen.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("exit %d, output %q: %v\nstderr: %s", code, stdout, err, stderr)
	}
	if code != exitOK || !res.Pass {
		t.Fatalf("exit %d; failures %v\nstderr: %s", code, res.Failures, stderr)
	}
	checkBenchStreams(t, res)
}

// The reader process on its own: "JOB K" lines in, a JSON report out;
// a malformed line fails it, and it takes no other workload flags.
func TestBench_ReadStreams(t *testing.T) {
	app := startApp(t, t.TempDir())
	img := newImageServer(t)
	id := app.submit(t, jobBody(visit{storeA, []string{img.URL + "/4x4.png"}, "t"}))
	app.waitDone(t, id)

	run := func(stdin string, args ...string) (int, string, string) {
		var out, errOut strings.Builder
		m := &Main{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }, Stdin: strings.NewReader(stdin)}
		return m.Run(t.Context(), append([]string{"bench"}, args...)), out.String(), errOut.String()
	}
	code, out, stderr := run(strconv.FormatUint(id, 10)+" 2\n", "--read-streams", app.url, "--timeout", "1m")
	var rep struct {
		Opened, Completed, Events int64
		Failures                  []string
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK {
		t.Fatalf("exit %d, report %q (%v); stderr %s", code, out, err, stderr)
	}
	// Each stream: the finished job's history (submitted, started, one
	// outcome, completed).
	if rep.Opened != 2 || rep.Completed != 2 || rep.Events != 2*4 || len(rep.Failures) != 0 {
		t.Fatalf("report %+v", rep)
	}

	tests := []struct {
		name  string
		stdin string
		args  []string
		code  int
	}{
		{"malformed line", "seven\n", []string{"--read-streams", app.url}, exitError},
		{"negative count", strconv.FormatUint(id, 10) + " -1\n", []string{"--read-streams", app.url}, exitError},
		{"with a workload flag", "", []string{"--read-streams", app.url, "--jobs", "2"}, exitUsage},
		{"bad url", "", []string{"--read-streams", "ftp://x"}, exitUsage},
		{"bad --sse-reader", "", []string{"--sse-reader", "thread"}, exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, out, stderr := run(tt.stdin, tt.args...); code != tt.code {
				t.Fatalf("exit %d, want %d; stdout %q, stderr %s", code, tt.code, out, stderr)
			}
		})
	}
}
