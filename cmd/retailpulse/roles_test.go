package main

import (
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// TestService_WorkerOnlyInstanceServesNoAPI runs the split deployment of
// one machine: an API instance on the embedded server with its client port
// open (--job-slots 0 --nats-listen), and a worker on that port
// (--worker-only). The worker processes the job; it answers only health,
// readiness and metrics, and creates nothing in its data dir.
func TestService_WorkerOnlyInstanceServesNoAPI(t *testing.T) {
	img := newImageServer(t)
	const password = "service-pw-1"
	api := startApp(t, t.TempDir(), "--job-slots", "0", "--nats-listen", "127.0.0.1:0",
		"--nats-password", password, "--subscriber-password", "subscriber-pw-1")
	unused := filepath.Join(t.TempDir(), "unused")
	worker := startApp(t, unused, "--worker-only", "--nats-url", api.NATSClientURL(), "--nats-password", password)

	id := api.submit(t, jobBody(visit{storeA, []string{img.URL + "/4x4.png"}, "t"}))
	if got := api.waitDone(t, id); got.Status != "completed" {
		t.Fatalf("job %d: %+v, want completed", id, got)
	}
	if n := img.requests("/4x4.png"); n != 1 {
		t.Fatalf("image downloaded %d times, want 1", n)
	}

	for _, tt := range []struct {
		path string
		want int
	}{
		{"/healthz", http.StatusOK},
		{"/readyz", http.StatusOK},
		{"/metrics", http.StatusOK},
		{"/api/status?jobid=" + strconv.FormatUint(id, 10), http.StatusNotFound},
		{"/api/submit/", http.StatusNotFound},
		{"/api/jobs/" + strconv.FormatUint(id, 10) + "/events", http.StatusNotFound},
		{"/", http.StatusNotFound},
	} {
		resp, err := http.Get(worker.url + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("worker GET %s: %d %s, want %d", tt.path, resp.StatusCode, body, tt.want)
		}
		if tt.path == "/metrics" && !strings.Contains(string(body), "retailpulse_images_processed_total") {
			t.Errorf("worker /metrics lacks the engine's counters:\n%.500s", body)
		}
	}
	if _, err := os.Stat(unused); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("worker data dir: %v, want it never created", err)
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

// The systemd units of deploy/systemd start serve with flags it accepts,
// given the secrets their environment files hold, in the roles they name;
// the worker and the streams instance run below the API.
func TestDeploySystemd_UnitsStartTheSplit(t *testing.T) {
	// What the units' environment files hold, as their comments say.
	apiEnv := map[string]string{"RETAILPULSE_NATS_PASSWORD": "service-pw-1", "RETAILPULSE_SUBSCRIBER_PASSWORD": "subscriber-pw-1"}
	workerEnv := map[string]string{"RETAILPULSE_NATS_PASSWORD": "service-pw-1"}
	unit := func(name string) (args []string, nice string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "\\\n", " ")
		for _, line := range strings.Split(text, "\n") {
			if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
				fields := strings.Fields(v)
				if len(fields) < 2 || fields[1] != "serve" {
					t.Fatalf("%s: ExecStart %q does not run serve", name, v)
				}
				args = fields[2:]
			}
			if v, ok := strings.CutPrefix(line, "Nice="); ok {
				nice = v
			}
		}
		return args, nice
	}

	apiArgs, apiNice := unit("retailpulse-api.service")
	api, err := parseConfig(apiArgs, apiEnv)
	if err != nil {
		t.Fatalf("API unit: %v", err)
	}
	if api.JobSlots != 0 || api.NATSURL != "" || api.NATSListen == "" || api.NATSPassword == "" || api.soleConsumer() {
		t.Errorf("API unit: job slots %d, nats url %q, listen %q, password set %v: want an API instance open to a worker",
			api.JobSlots, api.NATSURL, api.NATSListen, api.NATSPassword != "")
	}
	workerArgs, workerNice := unit("retailpulse-worker.service")
	worker, err := parseConfig(workerArgs, workerEnv)
	if err != nil {
		t.Fatalf("worker unit: %v", err)
	}
	if !worker.WorkerOnly || worker.NATSURL != "nats://"+api.NATSListen || worker.NATSPassword != api.NATSPassword || worker.SchedLatencyTarget != 0 {
		t.Errorf("worker unit: worker only %v, nats url %q (API listens on %q), same password %v, governor target %v",
			worker.WorkerOnly, worker.NATSURL, api.NATSListen, worker.NATSPassword == api.NATSPassword, worker.SchedLatencyTarget)
	}
	streamsArgs, streamsNice := unit("retailpulse-streams.service")
	streams, err := parseConfig(streamsArgs, workerEnv)
	if err != nil {
		t.Fatalf("streams unit: %v", err)
	}
	if streams.TakeStreams == "" || streams.TakeStreams != api.HandOffStreams || streams.JobSlots != 0 || streams.NATSURL != worker.NATSURL {
		t.Errorf("streams unit: takes %q (the API hands to %q), job slots %d, nats url %q (the worker's %q)",
			streams.TakeStreams, api.HandOffStreams, streams.JobSlots, streams.NATSURL, worker.NATSURL)
	}
	if apiNice != "" || workerNice != "10" || streamsNice != "15" {
		t.Errorf("Nice: API %q, worker %q, streams %q; want the API at the default, the worker at 10, the streams at 15", apiNice, workerNice, streamsNice)
	}
}
