package main

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events/jsstore"
)

// TestService_APIOnlyInstanceTakesNoJobs runs an API-only instance
// (--job-slots 0) and a worker on one log: the API instance accepts and
// answers, never processes; the job completes once a worker runs, and the
// API instance then answers completed.
func TestService_APIOnlyInstanceTakesNoJobs(t *testing.T) {
	img := newImageServer(t)
	ns, err := jsstore.StartServer(jsstore.ServerConfig{Name: "shared", StoreDir: t.TempDir(), SyncAlways: true, Listen: true, Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	api := startApp(t, t.TempDir(), "--nats-url", ns.ClientURL(), "--job-slots", "0")

	id := api.submit(t, jobBody(visit{storeA, []string{img.URL + "/4x4.png"}, "t"}))
	// Nothing processes it: still ongoing after several status reads, and
	// the image host has not been asked for anything.
	for range 5 {
		code, body := api.status(t, id)
		if code != http.StatusOK || body.Status != "ongoing" {
			t.Fatalf("status on the API-only instance: %d %+v, want 200 ongoing", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := img.requests("/4x4.png"); n != 0 {
		t.Fatalf("API-only instance downloaded %d images", n)
	}
	if api.engine.Active() != 0 {
		t.Fatalf("API-only instance owns %d jobs", api.engine.Active())
	}

	startApp(t, t.TempDir(), "--nats-url", ns.ClientURL())
	if got := api.waitDone(t, id); got.Status != "completed" {
		t.Fatalf("job %d on the API-only instance: %+v, want completed", id, got)
	}
}

// --debug-listen serves Go's profiles on its own address, not on the API's.
func TestService_DebugListenServesProfilesApart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	app := startApp(t, t.TempDir(), "--debug-listen", addr)
	for _, tt := range []struct {
		url  string
		want int
	}{
		{"http://" + addr + "/debug/pprof/goroutine?debug=1", http.StatusOK},
		{"http://" + addr + "/debug/pprof/profile?seconds=1", http.StatusOK},
		{app.url + "/debug/pprof/goroutine?debug=1", http.StatusNotFound},
	} {
		resp, err := http.Get(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Fatalf("GET %s: %d, want %d: %.200s", tt.url, resp.StatusCode, tt.want, body)
		}
	}
}
