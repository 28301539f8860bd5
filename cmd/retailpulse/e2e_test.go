package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// Store ids of the sample store master used by these tests.
const (
	storeA  = "S00339218"
	storeB  = "S01408764"
	unknown = "S99999999"
)

// testApp is a running in-process service.
type testApp struct {
	*App
	url    string
	cancel context.CancelFunc
	done   chan error
}

// startApp runs the real service on a temp data dir with embedded NATS,
// loopback images allowed and no GPU pause. extra are serve flags.
func startApp(t testing.TB, dataDir string, extra ...string) *testApp {
	t.Helper()
	app, _ := newTestApp(t, dataDir, extra...)
	ta := runApp(t, app)
	jstest.CheckFor(t, time.Minute, func() error {
		if !ta.Ready() {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	return ta
}

// newTestApp builds (does not run) the service as startApp configures it,
// and the logger it uses.
func newTestApp(t testing.TB, dataDir string, extra ...string) (*App, *slog.Logger) {
	t.Helper()
	var cfg serveConfig
	fs := cfg.flagSet("test", io.Discard)
	args := append([]string{"--addr", "127.0.0.1:0", "--data-dir", dataDir, "--allow-private-networks", "--gpu-pause", "0"}, extra...)
	if err := cfg.parse(fs, args, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	app, err := NewApp(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return app, log
}

// runApp runs app until the test ends (or stop).
func runApp(t testing.TB, app *App) *testApp {
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testApp{App: app, url: "http://" + app.Addr(), cancel: cancel, done: make(chan error, 1)}
	go func() { ta.done <- app.Run(ctx) }()
	t.Cleanup(ta.stop)
	return ta
}

// stop shuts the app down gracefully; safe to call twice.
func (a *testApp) stop() {
	a.cancel()
	if a.done != nil {
		<-a.done
		a.done = nil
	}
}

// imageServer serves generated images: /<w>x<h>.<jpg|png|gif>, /webp, /404,
// /500, /html; it counts requests per path.
type imageServer struct {
	*httptest.Server
	mu    sync.Mutex
	count map[string]int
}

func newImageServer(t testing.TB) *imageServer {
	t.Helper()
	s := &imageServer{count: map[string]int{}}
	webp, err := os.ReadFile(filepath.Join("..", "..", "actors", "imagefetch", "testdata", "3x2.lossless.webp"))
	if err != nil {
		t.Fatal(err)
	}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.count[r.URL.Path]++
		s.mu.Unlock()
		p := strings.TrimPrefix(r.URL.Path, "/")
		switch {
		case p == "404":
			http.NotFound(w, r)
		case p == "500":
			http.Error(w, "boom", http.StatusInternalServerError)
		case p == "html":
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html><body>not an image</body></html>")
		case p == "webp":
			w.Header().Set("Content-Type", "image/webp")
			w.Write(webp)
		default:
			var wd, ht int
			var ext string
			name, _, _ := strings.Cut(p, "/") // allow /640x480.jpg/unique-suffix
			if _, err := fmt.Sscanf(strings.Replace(name, ".", " ", 1), "%dx%d %s", &wd, &ht, &ext); err != nil {
				http.NotFound(w, r)
				return
			}
			w.Write(encodeImage(t, wd, ht, ext))
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *imageServer) requests(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[path]
}

func encodeImage(t testing.TB, w, h int, ext string) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	img.Set(0, 0, color.RGBA{255, 0, 0, 255})
	var buf bytes.Buffer
	var err error
	switch ext {
	case "jpg":
		err = jpeg.Encode(&buf, img, nil)
	case "png":
		err = png.Encode(&buf, img)
	case "gif":
		err = gif.Encode(&buf, img, nil)
	default:
		err = fmt.Errorf("unknown format %q", ext)
	}
	if err != nil {
		t.Error(err)
	}
	return buf.Bytes()
}

type visit struct {
	StoreID   string   `json:"store_id"`
	ImageURL  []string `json:"image_url"`
	VisitTime string   `json:"visit_time"`
}

func jobBody(visits ...visit) string {
	b, _ := json.Marshal(map[string]any{"count": len(visits), "visits": visits})
	return string(b)
}

// do sends a request and returns the answer, which must agree with the
// OpenAPI document (see contract_test.go).
func do(t testing.TB, method, url, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, v := range contractViolations(req, resp.StatusCode, resp.Header, b) {
		t.Errorf("breaks docs/openapi.yaml: %s", v)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// submit posts a job and returns its id, failing the test unless 201.
func (a *testApp) submit(t testing.TB, body string) uint64 {
	t.Helper()
	code, _, resp := do(t, "POST", a.url+"/api/submit/", body)
	if code != http.StatusCreated {
		t.Fatalf("submit: %d %s", code, resp)
	}
	var out struct {
		JobID *uint64 `json:"job_id"`
	}
	if err := json.Unmarshal([]byte(resp), &out); err != nil || out.JobID == nil {
		t.Fatalf("submit body %s: %v", resp, err)
	}
	return *out.JobID
}

type statusBody struct {
	Status string              `json:"status"`
	JobID  string              `json:"job_id"`
	Error  []events.StoreError `json:"error"`
}

func (a *testApp) status(t testing.TB, id uint64) (int, statusBody) {
	t.Helper()
	code, _, body := do(t, "GET", fmt.Sprintf("%s/api/status?jobid=%d", a.url, id), "")
	var s statusBody
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("status body %q: %v", body, err)
		}
	}
	return code, s
}

// waitDone polls a job's status until it is terminal.
func (a *testApp) waitDone(t testing.TB, id uint64) statusBody {
	t.Helper()
	var last statusBody
	jstest.CheckFor(t, 30*time.Second, func() error {
		code, s := a.status(t, id)
		if code != http.StatusOK {
			return fmt.Errorf("status %d", code)
		}
		last = s
		if s.Status == "ongoing" {
			return fmt.Errorf("job %d still ongoing", id)
		}
		return nil
	})
	return last
}

func TestService_SpecExampleCompletes(t *testing.T) {
	img := newImageServer(t)
	app := startApp(t, t.TempDir())
	id := app.submit(t, jobBody(
		visit{storeA, []string{img.URL + "/640x480.jpg", img.URL + "/800x600.jpg"}, "2026-11-23T10:00:00Z"},
		visit{storeB, []string{img.URL + "/640x480.jpg/again"}, "time of store visit"},
	))
	got := app.waitDone(t, id)
	if got.Status != "completed" || got.JobID != fmt.Sprint(id) || got.Error != nil {
		t.Fatalf("status = %+v", got)
	}
	// The per-image results are in the log: the perimeter of a 640x480 image is 2240.
	h, err := app.eventLog.LoadJob(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	perims := map[events.ImageRef]int{}
	for _, r := range h.Records {
		for _, ev := range r.Events {
			if p, ok := ev.(*events.ImageProcessed); ok {
				perims[p.ImageRef] = p.Perimeter
			}
		}
	}
	want := map[events.ImageRef]int{{Visit: 0, Index: 0}: 2240, {Visit: 0, Index: 1}: 2800, {Visit: 1, Index: 0}: 2240}
	for ref, p := range want {
		if perims[ref] != p {
			t.Errorf("perimeter of %+v = %d, want %d", ref, perims[ref], p)
		}
	}
	if len(perims) != 3 {
		t.Errorf("%d images recorded, want 3", len(perims))
	}
	// The same results through the API.
	code, hdr, body := do(t, "GET", fmt.Sprintf("%s/api/results?jobid=%d", app.url, id), "")
	var res struct {
		JobID  string               `json:"job_id"`
		Status string               `json:"status"`
		Images []events.ImageResult `json:"images"`
	}
	if err := json.Unmarshal([]byte(body), &res); code != 200 || err != nil || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("results: %d %q %v", code, body, err)
	}
	if res.Status != "completed" || len(res.Images) != 3 || res.Images[0].Perimeter != 2240 || res.Images[0].State != "processed" || res.Images[1].Width != 800 {
		t.Fatalf("results = %+v", res)
	}
	if code, _, body := do(t, "GET", app.url+"/api/results?jobid=424242", ""); code != 400 || body != "{}" {
		t.Fatalf("results of an unknown job: %d %q", code, body)
	}
}

func TestService_FailuresListEachFailedStoreOnce(t *testing.T) {
	img := newImageServer(t)
	app := startApp(t, t.TempDir())
	good := img.URL + "/640x480.jpg"
	tests := []struct {
		name   string
		visits []visit
		want   []events.StoreError
	}{
		{
			name:   "unknown store fails, listing only it",
			visits: []visit{{unknown, []string{img.URL + "/10x10.png/unknown"}, "t"}, {storeB, []string{good}, "t"}},
			want:   []events.StoreError{{StoreID: unknown, Error: "unknown store"}},
		},
		{
			name:   "404 in store A, good images in store B",
			visits: []visit{{storeA, []string{good, img.URL + "/404"}, "t"}, {storeB, []string{good, good}, "t"}},
			want:   []events.StoreError{{StoreID: storeA, Error: "image " + img.URL + "/404: http 404"}},
		},
		{
			name:   "two bad images in one store list it once",
			visits: []visit{{storeA, []string{img.URL + "/404", img.URL + "/404"}, "t"}, {storeA, []string{img.URL + "/404"}, "t"}},
			want:   []events.StoreError{{StoreID: storeA, Error: "image " + img.URL + "/404: http 404"}},
		},
		{
			name:   "stores in order of first visit, each with its first failing image",
			visits: []visit{{storeB, []string{good}, "t"}, {storeA, []string{img.URL + "/html", img.URL + "/404"}, "t"}, {storeB, []string{img.URL + "/404"}, "t"}},
			want: []events.StoreError{
				{StoreID: storeB, Error: "image " + img.URL + "/404: http 404"},
				{StoreID: storeA, Error: "image " + img.URL + "/html: not an image"},
			},
		},
		{
			name:   "not an image",
			visits: []visit{{storeB, []string{img.URL + "/html"}, "t"}},
			want:   []events.StoreError{{StoreID: storeB, Error: "image " + img.URL + "/html: not an image"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := app.waitDone(t, app.submit(t, jobBody(tt.visits...)))
			if got.Status != "failed" {
				t.Fatalf("status = %+v, want failed", got)
			}
			if fmt.Sprint(got.Error) != fmt.Sprint(tt.want) {
				t.Fatalf("errors = %+v, want %+v", got.Error, tt.want)
			}
		})
	}
	if n := img.requests("/10x10.png/unknown"); n != 0 {
		t.Errorf("image of an unknown store downloaded %d times", n)
	}
}

func TestService_Formats(t *testing.T) {
	img := newImageServer(t)
	app := startApp(t, t.TempDir())
	for _, path := range []string{"/webp", "/300x200.png", "/30x20.gif", "/640x480.jpg"} {
		t.Run(path, func(t *testing.T) {
			id := app.submit(t, jobBody(visit{storeA, []string{img.URL + path}, "t"}))
			if got := app.waitDone(t, id); got.Status != "completed" {
				t.Fatalf("status = %+v", got)
			}
		})
	}
}

func TestService_HTTPContract(t *testing.T) {
	img := newImageServer(t)
	app := startApp(t, t.TempDir(), "--max-store-id-length", "12", "--max-visit-time-length", "8")
	good := jobBody(visit{storeA, []string{img.URL + "/1x1.png"}, "t"})
	tests := []struct {
		name, method, path, body string
		code                     int
		wantBody                 string // exact, if set
		contains                 string
	}{
		{name: "submit with slash", method: "POST", path: "/api/submit/", body: good, code: 201, contains: `"job_id":`},
		{name: "submit without slash", method: "POST", path: "/api/submit", body: good, code: 201, contains: `"job_id":`},
		{name: "not json", method: "POST", path: "/api/submit/", body: "hello", code: 400, contains: `"error":`},
		{name: "count mismatch", method: "POST", path: "/api/submit/", body: `{"count":2,"visits":[{"store_id":"S1","image_url":["http://x/a.jpg"],"visit_time":"t"}]}`, code: 400, contains: "count"},
		{name: "missing store_id", method: "POST", path: "/api/submit/", body: `{"count":1,"visits":[{"image_url":["http://x/a.jpg"],"visit_time":"t"}]}`, code: 400, contains: "visits[0].store_id is required"},
		{name: "count zero", method: "POST", path: "/api/submit/", body: `{"count":0,"visits":[]}`, code: 400, contains: `"error":`},
		{name: "store_id over --max-store-id-length", method: "POST", path: "/api/submit/", body: jobBody(visit{"S0123456789AB", []string{img.URL + "/1x1.png"}, "t"}), code: 400, contains: "visits[0].store_id is 13 characters long; the limit is 12"},
		{name: "visit_time over --max-visit-time-length", method: "POST", path: "/api/submit/", body: jobBody(visit{storeA, []string{img.URL + "/1x1.png"}, "123456789"}), code: 400, contains: "visits[0].visit_time is 9 characters long; the limit is 8"},
		{name: "status unknown job", method: "GET", path: "/api/status?jobid=999999", code: 400, wantBody: "{}"},
		{name: "status missing jobid", method: "GET", path: "/api/status", code: 400, wantBody: "{}"},
		{name: "status non-integer", method: "GET", path: "/api/status?jobid=abc", code: 400, wantBody: "{}"},
		{name: "status wildcard", method: "GET", path: "/api/status?jobid=*", code: 400, wantBody: "{}"},
		{name: "submit wrong method", method: "GET", path: "/api/submit/", code: 405},
		{name: "status wrong method", method: "POST", path: "/api/status?jobid=1", code: 405},
		{name: "health", method: "GET", path: "/healthz", code: 200},
		{name: "metrics", method: "GET", path: "/metrics", code: 200, contains: "retailpulse_jobs_submitted_total"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, hdr, body := do(t, tt.method, app.url+tt.path, tt.body)
			if code != tt.code {
				t.Fatalf("code = %d, want %d (body %s)", code, tt.code, body)
			}
			if tt.wantBody != "" && strings.TrimSpace(body) != tt.wantBody {
				t.Errorf("body = %q, want %q", body, tt.wantBody)
			}
			if !strings.Contains(body, tt.contains) {
				t.Errorf("body %q does not contain %q", body, tt.contains)
			}
			if code == 405 && hdr.Get("Allow") == "" {
				t.Error("405 without Allow header")
			}
			if strings.HasPrefix(tt.path, "/api/") && hdr.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type = %q", hdr.Get("Content-Type"))
			}
		})
	}
}

// A status request right after a 201 never answers 400.
func TestService_ReadYourWrites(t *testing.T) {
	img := newImageServer(t)
	app := startApp(t, t.TempDir())
	for i := range 30 {
		id := app.submit(t, jobBody(visit{storeA, []string{fmt.Sprintf("%s/2x2.png/%d", img.URL, i)}, "t"}))
		if code, s := app.status(t, id); code != 200 || s.JobID != fmt.Sprint(id) {
			t.Fatalf("status right after submit: %d %+v", code, s)
		}
	}
}

// A restarted service answers for every job it ever accepted.
func TestService_RestartReplaysHistory(t *testing.T) {
	img := newImageServer(t)
	dir := t.TempDir()
	app := startApp(t, dir)
	ok := app.submit(t, jobBody(visit{storeA, []string{img.URL + "/4x4.png"}, "t"}))
	bad := app.submit(t, jobBody(visit{unknown, []string{img.URL + "/4x4.png"}, "t"}))
	app.waitDone(t, ok)
	app.waitDone(t, bad)
	app.stop()

	app2 := startApp(t, dir)
	if _, s := app2.status(t, ok); s.Status != "completed" {
		t.Errorf("job %d after restart: %+v", ok, s)
	}
	if _, s := app2.status(t, bad); s.Status != "failed" || len(s.Error) != 1 || s.Error[0].StoreID != unknown {
		t.Errorf("job %d after restart: %+v", bad, s)
	}
	// Job ids keep increasing across restarts.
	if id := app2.submit(t, jobBody(visit{storeA, []string{img.URL + "/4x4.png"}, "t"})); id <= bad {
		t.Errorf("new job id %d not above %d", id, bad)
	}
}

// With the default configuration a loopback image server is refused.
func TestService_PrivateAddressesRefusedByDefault(t *testing.T) {
	img := newImageServer(t)
	app := startApp(t, t.TempDir(), "--allow-private-networks=false")
	got := app.waitDone(t, app.submit(t, jobBody(visit{storeA, []string{img.URL + "/5x5.png"}, "t"})))
	if got.Status != "failed" || len(got.Error) != 1 || !strings.HasSuffix(got.Error[0].Error, "blocked address") {
		t.Fatalf("status = %+v", got)
	}
	if n := img.requests("/5x5.png"); n != 0 {
		t.Errorf("loopback server got %d requests", n)
	}
}

// When a component fails (here the HTTP server, its listener closed under
// it), the whole service shuts down in order and Run returns the error,
// instead of running on without serving.
func TestApp_ComponentFailureStopsTheService(t *testing.T) {
	app := startApp(t, t.TempDir())
	done := app.done
	app.listener.Close()
	select {
	case err := <-done:
		app.done = nil
		if err == nil || !strings.Contains(err.Error(), "http") {
			t.Fatalf("Run returned %v, want the HTTP server's error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the service kept running after its HTTP server failed")
	}
}
