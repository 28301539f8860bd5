package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// hostileServer misbehaves in the ways image hosts do.
type hostileServer struct {
	*httptest.Server
	mu    sync.Mutex
	count map[string]int
}

func newHostileServer(t *testing.T) *hostileServer {
	t.Helper()
	h := &hostileServer{count: map[string]int{}}
	png := encodeImage(t, 4, 3, "png")
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.count[r.URL.Path]++
		n := h.count[r.URL.Path]
		h.mu.Unlock()
		switch r.URL.Path {
		case "/ok":
			w.Write(png)
		case "/hang": // never answers
			<-r.Context().Done()
		case "/flaky": // fails twice, then serves
			if n <= 2 {
				http.Error(w, "busy", http.StatusInternalServerError)
				return
			}
			w.Write(png)
		case "/429":
			if n == 1 {
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			w.Write(png)
		case "/500":
			http.Error(w, "down", http.StatusInternalServerError)
		case "/reset": // connection dropped mid-body, every time
			w.Header().Set("Content-Length", "1000")
			w.Write(png[:10])
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		case "/truncated":
			w.Write(png[:20])
		case "/bomb": // a PNG header claiming 100000x100000, no pixels
			w.Write(pngHeader(100000, 100000))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hostileServer) requests(path string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count[path]
}

// pngHeader returns a PNG signature and IHDR chunk only.
func pngHeader(w, h uint32) []byte {
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	chunk := append([]byte("IHDR"), ihdr...)
	out := []byte("\x89PNG\r\n\x1a\n")
	out = binary.BigEndian.AppendUint32(out, 13)
	out = append(out, chunk...)
	return binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(chunk))
}

// Every kind of misbehaving host ends in the right image outcome within
// the configured bound, and the job finishes.
func TestService_HostileImageHosts(t *testing.T) {
	srv := newHostileServer(t)
	app := startApp(t, t.TempDir(), "--image-timeout", "3s")
	stores := []string{"S00000001", "S00000002", "S00000003", "S00000004", "S00000005", "S00000006", "S00000007", "S00000008", "S00000009", "S00000010"}
	paths := []string{"/ok", "/flaky", "/429", "/bomb", "/hang", "/500", "/reset", "/truncated"}
	var visits []visit
	for i, p := range paths {
		visits = append(visits, visit{stores[i], []string{srv.URL + p}, "t"})
	}
	start := time.Now()
	got := app.waitDone(t, app.submit(t, jobBody(visits...)))
	if took := time.Since(start); took > 25*time.Second {
		t.Errorf("job took %s with a 3s image bound", took)
	}
	want := map[string]string{ // store -> reason; the first four stores succeed
		stores[4]: "timeout", stores[5]: "http 5xx", stores[6]: "connection failed", stores[7]: "not an image",
	}
	if got.Status != "failed" || len(got.Error) != len(want) {
		t.Fatalf("status %+v", got)
	}
	for _, e := range got.Error {
		reason, ok := want[e.StoreID]
		if !ok || !strings.HasSuffix(e.Error, ": "+reason) {
			t.Errorf("store %s failed with %q, want reason %q", e.StoreID, e.Error, reason)
		}
	}
	if n := srv.requests("/flaky"); n != 3 {
		t.Errorf("/flaky requested %d times, want 3 (two retries)", n)
	}
	if n := srv.requests("/500"); n != 4 {
		t.Errorf("/500 requested %d times, want 4 (three retries)", n)
	}
}

// Beyond capacity, submits answer 503 with Retry-After and store nothing;
// every job that got a 201 completes.
func TestService_OverloadRefusesAndLosesNothing(t *testing.T) {
	img := newImageServer(t)
	app := startApp(t, t.TempDir(), "--max-queued-jobs", "3", "--job-slots", "1", "--gpu-pause", "30ms")
	var accepted []uint64
	refused := 0
	for i := range 12 {
		body := jobBody(visit{storeA, []string{fmt.Sprintf("%s/2x2.png/%d", img.URL, i)}, "t"})
		code, hdr, resp := do(t, "POST", app.url+"/api/submit", body)
		switch code {
		case http.StatusCreated:
			var id uint64
			fmt.Sscanf(resp, `{"job_id":%d}`, &id)
			accepted = append(accepted, id)
		case http.StatusServiceUnavailable:
			refused++
			if hdr.Get("Retry-After") == "" || !strings.Contains(resp, `"error"`) {
				t.Errorf("503 without Retry-After or error: %v %s", hdr, resp)
			}
		default:
			t.Fatalf("submit: %d %s", code, resp)
		}
	}
	if refused == 0 || len(accepted) < 3 {
		t.Fatalf("%d accepted, %d refused", len(accepted), refused)
	}
	for _, id := range accepted {
		if s := app.waitDone(t, id); s.Status != "completed" {
			t.Errorf("job %d: %+v", id, s)
		}
	}
	// Nothing half-created: the log holds exactly the accepted jobs.
	if n := app.jobsInReadModel(t); n != len(accepted) {
		t.Errorf("%d jobs in the log, %d accepted", n, len(accepted))
	}
}

// The same Idempotency-Key and job answer the first job's id, also when
// the retries race the first submit; the same key with another job is
// refused with 422 and creates nothing; replays are counted as such.
func TestService_IdempotencyKey(t *testing.T) {
	img := newImageServer(t)
	app := startApp(t, t.TempDir())
	body := jobBody(visit{storeA, []string{img.URL + "/3x3.png"}, "t"})
	post := func(body, key string) (int, string) {
		req, _ := http.NewRequest("POST", app.url+"/api/submit/", strings.NewReader(body))
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	answers := make([]string, 8)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, b := post(body, "order-7781")
			answers[i] = fmt.Sprint(code, " ", b)
		}()
	}
	wg.Wait()
	for _, a := range answers {
		if a != answers[0] || !strings.HasPrefix(a, "201 ") {
			t.Fatalf("concurrent submits with one key: %q", answers)
		}
	}
	other := jobBody(visit{storeA, []string{img.URL + "/4x4.png"}, "t"})
	if code, b := post(other, "order-7781"); code != http.StatusUnprocessableEntity || !strings.Contains(b, "different job") {
		t.Fatalf("same key, other job: %d %s", code, b)
	}
	jstest.CheckFor(t, 10*time.Second, func() error {
		if n := app.jobsInReadModel(t); n != 1 {
			return fmt.Errorf("%d jobs in the read model, want 1", n)
		}
		return nil
	})
	_, metricsText := getText(t, app.url+"/metrics")
	for _, want := range []string{"retailpulse_jobs_submitted_total 1\n", "retailpulse_jobs_submit_replays_total 7\n"} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// jobsInReadModel counts the jobs in the app's read model database.
func (a *testApp) jobsInReadModel(t testing.TB) int {
	t.Helper()
	n := 0
	if err := a.view.EachJob(context.Background(), func(events.JobView) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func getText(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestService_APIToken(t *testing.T) {
	app := startApp(t, t.TempDir(), "--api-token", "s3cret")
	var unauthorized atomic.Int32
	for _, auth := range []string{"", "Bearer wrong", "Basic czNjcmV0"} {
		req, _ := http.NewRequest("GET", app.url+"/api/status?jobid=1", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized {
			unauthorized.Add(1)
		}
	}
	if unauthorized.Load() != 3 {
		t.Fatalf("%d of 3 bad credentials refused", unauthorized.Load())
	}
	req, _ := http.NewRequest("GET", app.url+"/api/status?jobid=1", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest { // authorized; job 1 does not exist
		t.Fatalf("with token: %d", resp.StatusCode)
	}
	if code, _, _ := do(t, "GET", app.url+"/healthz", ""); code != 200 {
		t.Fatalf("healthz behind the token: %d", code)
	}
}
