//go:build unix

package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// TestExampleSubscriber_PrintsEveryImageAcrossItsRestart builds
// cmd/example-subscriber, runs it against the live service's NATS port,
// stops it mid-job and starts it again: between its two runs it prints
// every image of the job exactly once, with the right perimeter.
func TestExampleSubscriber_PrintsEveryImageAcrossItsRestart(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	bin := filepath.Join(t.TempDir(), "example-subscriber")
	if out, err := exec.Command(goTool, "build", "-o", bin, "../example-subscriber").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	imgs := newImageServer(t)
	app := startApp(t, t.TempDir(), "--nats-listen", "127.0.0.1:0", "--subscriber-password", "example-pw",
		"--gpu-pause", "40ms", "--store-concurrency", "1")

	start := func() (*exec.Cmd, *procBuffer, *procBuffer) {
		cmd := exec.Command(bin, "--nats-url", app.NATSClientURL(), "--durable", "example-test")
		cmd.Env = append(procEnv(), "RETAILPULSE_SUBSCRIBER_PASSWORD=example-pw")
		out, errb := &procBuffer{}, &procBuffer{}
		cmd.Stdout, cmd.Stderr = out, errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		jstest.CheckFor(t, 20*time.Second, func() error {
			if !strings.Contains(errb.String(), "following") {
				return fmt.Errorf("not following yet: %s", errb.String())
			}
			return nil
		})
		return cmd, out, errb
	}
	stop := func(cmd *exec.Cmd, errb *procBuffer) {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("example-subscriber on SIGTERM: %v\n%s", err, errb.String())
		}
	}

	// Two stores, 30 images each, one image at a time per store: the job
	// takes over a second.
	var a, b []string
	want := map[string]int{} // "visit index" -> perimeter, -1 for a failure
	for i := range 30 {
		w, h := i+1, 2*i+3
		a = append(a, fmt.Sprintf("%s/%dx%d.png", imgs.URL, w, h))
		want[fmt.Sprintf("0 %d", i)] = 2 * (w + h)
		if i%10 == 9 {
			b = append(b, imgs.URL+"/404")
			want[fmt.Sprintf("1 %d", i)] = -1
		} else {
			b = append(b, fmt.Sprintf("%s/%dx%d.gif", imgs.URL, h, w))
			want[fmt.Sprintf("1 %d", i)] = 2 * (w + h)
		}
	}
	cmd, out1, errb := start()
	id := app.submit(t, jobBody(visit{storeA, a, "t"}, visit{storeB, b, "t"}))
	jstest.CheckFor(t, 20*time.Second, func() error {
		if n := strings.Count(out1.String(), "\n"); n < 5 {
			return fmt.Errorf("%d lines printed", n)
		}
		return nil
	})
	stop(cmd, errb)
	first := strings.Count(out1.String(), "\n")
	if first >= len(want) {
		t.Fatalf("the first run printed all %d images: not stopped mid-job", first)
	}

	cmd, out2, errb := start()
	app.waitDone(t, id)
	jstest.CheckFor(t, 20*time.Second, func() error {
		if n := strings.Count(out1.String()+out2.String(), "\n"); n < len(want) {
			return fmt.Errorf("%d of %d images printed", n, len(want))
		}
		return nil
	})
	stop(cmd, errb)

	line := regexp.MustCompile(`^job (\d+) visit (\d+) image (\d+) store \S+: (?:perimeter (\d+) \(\d+x\d+\)|failed \(http 404\))$`)
	got := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out1.String()+out2.String()), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil || m[1] != strconv.FormatUint(id, 10) {
			t.Fatalf("unexpected line %q", l)
		}
		key := m[2] + " " + m[3]
		if _, dup := got[key]; dup {
			t.Fatalf("image %s printed twice", key)
		}
		got[key] = -1
		if m[4] != "" {
			got[key], _ = strconv.Atoi(m[4])
		}
	}
	for k, p := range want {
		if got[k] != p {
			t.Errorf("image %s: printed %d, want %d", k, got[k], p)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d images printed, want %d", len(got), len(want))
	}
	t.Logf("first run printed %d images, the second %d", first, len(want)-first)
}
