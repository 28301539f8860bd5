package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
	"github.com/retailpulse/retailpulse/events/sqlview"
)

// heldView is the app's real read model database, with a gate in front of
// its writes: while held, the projection cannot apply anything, as when it
// is catching up on a long log or lags another instance.
type heldView struct {
	*sqlview.View
	mu   sync.Mutex
	gate chan struct{} // closed = open
}

func (h *heldView) hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.gate:
		h.gate = make(chan struct{})
	default:
	}
}

func (h *heldView) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.gate:
	default:
		close(h.gate)
	}
}

func (h *heldView) ApplyMessages(ctx context.Context, msgs []events.Message) (events.ApplyReport, error) {
	h.mu.Lock()
	gate := h.gate
	h.mu.Unlock()
	select {
	case <-gate:
	case <-ctx.Done():
		return events.ApplyReport{}, ctx.Err()
	}
	return h.View.ApplyMessages(ctx, msgs)
}

// startHeldApp starts the service like startApp, with its projection's
// writes held until release; it does not wait for readiness.
func startHeldApp(t testing.TB, dataDir string, extra ...string) (*testApp, *heldView) {
	t.Helper()
	app, log := newTestApp(t, dataDir, extra...)
	held := &heldView{View: app.view, gate: make(chan struct{})}
	p := jsstore.NewProjection(app.eventLog, held, log, app.applied)
	p.Linearizable, p.ReadWait = app.projection.Linearizable, app.projection.ReadWait
	app.projection = p
	return runApp(t, app), held
}

// expectNotOlder reads job id's status and accepts only want (byte for
// byte) or a 503 with Retry-After: never an older state, never "unknown".
// It returns whether the answer was want.
func expectNotOlder(t testing.TB, a *testApp, id uint64, want string) bool {
	t.Helper()
	code, hdr, body := do(t, "GET", fmt.Sprintf("%s/api/status?jobid=%d", a.url, id), "")
	switch {
	case code == 200 && body == want:
		return true
	case code == http.StatusServiceUnavailable && hdr.Get("Retry-After") != "":
		var e struct{ Error string }
		if json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
			t.Fatalf("503 body %q", body)
		}
		return false
	}
	t.Fatalf("job %d answered %d %s (Retry-After %q), older than %s, which was answered before", id, code, body, hdr.Get("Retry-After"), want)
	return false
}

// After a crash and restart, a projection that is catching up never
// answers older than what was answered before the crash: reads wait, then
// answer 503 with Retry-After, and /readyz says 503, until it has reached
// the log's end.
func TestService_MonotonicReadsWhileCatchingUp(t *testing.T) {
	img := newImageServer(t)
	dir := t.TempDir()
	app := startApp(t, dir)
	first := app.submit(t, jobBody(visit{storeA, []string{img.URL + "/4x4.png"}, "t"}))
	app.waitDone(t, first)
	app.stop()
	// The database as a crash would leave it: behind the log.
	lagging := filepath.Join(t.TempDir(), "lagging.db")
	copyFile(t, filepath.Join(dir, readModelFile), lagging)

	app = startApp(t, dir)
	second := app.submit(t, jobBody(visit{storeB, []string{img.URL + "/404"}, "t"}))
	app.waitDone(t, second)
	answered := app.statusBodies(t, first, second)
	app.stop()
	copyFile(t, lagging, filepath.Join(dir, readModelFile))

	app, held := startHeldApp(t, dir, "--submit-timeout", "400ms")
	for range 3 {
		// The first job is completed in the lagging database: a terminal
		// answer is final, so it may be given at once (never older).
		expectNotOlder(t, app, first, answered[first])
		if expectNotOlder(t, app, second, answered[second]) {
			t.Fatalf("job %d answered before the projection applied anything", second)
		}
	}
	if code, _, _ := do(t, "GET", app.url+"/readyz", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz while catching up: %d", code)
	}
	held.release()
	jstest.CheckFor(t, 10*time.Second, func() error {
		if !expectNotOlder(t, app, second, answered[second]) {
			return fmt.Errorf("job %d not answered yet", second)
		}
		return nil
	})
	if got := app.statusBodies(t, first, second); fmt.Sprint(got) != fmt.Sprint(answered) {
		t.Fatalf("after catching up %v, before %v", got, answered)
	}
}

// Two instances share one log: the one whose projection lags never answers
// older than the other already did; it waits, then answers 503 with
// Retry-After, and serves the read once it has reached the log's end as
// of the read, also after it had caught up once.
func TestService_MonotonicReadsAcrossInstances(t *testing.T) {
	img := newImageServer(t)
	ns, err := jsstore.StartServer(jsstore.ServerConfig{Name: "shared", StoreDir: t.TempDir(), SyncAlways: true, Listen: true, Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	url := ns.ClientURL()
	// A pause long enough to see a job ongoing on both instances.
	flags := []string{"--nats-url", url, "--gpu-pause", "500ms"}
	ahead := startApp(t, t.TempDir(), flags...)
	behind, held := startHeldApp(t, t.TempDir(), append(flags, "--submit-timeout", "400ms")...)

	id := ahead.submit(t, jobBody(visit{storeA, []string{img.URL + "/4x4.png"}, "t"}))
	ahead.waitDone(t, id)
	want := ahead.statusBodies(t, id)[id]
	start := time.Now()
	if expectNotOlder(t, behind, id, want) {
		t.Fatal("the held instance answered")
	}
	t.Logf("503 after %s", time.Since(start).Round(time.Millisecond))
	held.release()
	jstest.CheckFor(t, 10*time.Second, func() error {
		if !behind.Ready() {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	if !expectNotOlder(t, behind, id, want) {
		t.Fatal("not answered after catching up")
	}

	// Caught up, then behind again: the lagging instance has the job as
	// ongoing when the other answers completed; it must not answer ongoing.
	next := ahead.submit(t, jobBody(visit{storeB, []string{img.URL + "/4x4.png/2"}, "t"}))
	ongoing := fmt.Sprintf(`{"status":"ongoing","job_id":"%d"}`, next)
	if got := behind.statusBodies(t, next)[next]; got != ongoing {
		t.Fatalf("job %d on the instance behind: %s, want it ongoing", next, got)
	}
	held.hold()
	ahead.waitDone(t, next)
	wantNext := ahead.statusBodies(t, next)[next]
	if expectNotOlder(t, behind, next, wantNext) {
		t.Fatalf("job %d answered by an instance that has not applied its completion", next)
	}
	held.release()
	jstest.CheckFor(t, 10*time.Second, func() error {
		if !expectNotOlder(t, behind, next, wantNext) {
			return fmt.Errorf("job %d not answered yet", next)
		}
		return nil
	})
}

// copyFile copies the database at from, with its WAL if it has one, to to.
func copyFile(t testing.TB, from, to string) {
	t.Helper()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(to + suffix); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		b, err := os.ReadFile(from + suffix)
		if os.IsNotExist(err) && suffix != "" {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
