package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
	"github.com/retailpulse/retailpulse/httpapi"
	"github.com/retailpulse/retailpulse/httpapi/ui"
)

// The dashboard, tested in a real browser: headless Chromium driven over
// the DevTools protocol against the real service.
//
// Chromium must be installed (`chromium` on PATH; .ci/run installs Debian's
// package). When it is missing or cannot start, the browser tests fail,
// unless RETAILPULSE_SKIP_BROWSER=1 asks to skip them. On failure a test
// saves a screenshot and the page's console log in a directory it names
// (RETAILPULSE_BROWSER_ARTIFACTS, else a new one under the system's temp
// dir). With RETAILPULSE_SCREENSHOTS=DIR the scenario also writes the
// screenshots of the README (docs/dashboard-*.png) to DIR.

// Without a browser: the dashboard's JSON routes, through the contract
// checker.
func TestService_DashboardRoutes(t *testing.T) {
	img := newImageServer(t)
	app := startApp(t, t.TempDir())
	id := app.submit(t, jobBody(
		visit{storeA, []string{img.URL + "/3x4.png", img.URL + "/404"}, "2026-11-23"},
		visit{unknown, []string{img.URL + "/1x1.png"}, "2026-11-23"},
		visit{storeA, []string{img.URL + "/5x5.png"}, "2026-11-24"},
	))
	app.waitDone(t, id)
	code, _, body := do(t, "GET", fmt.Sprintf("%s/api/jobs/%d/stores", app.url, id), "")
	var js struct {
		Status string            `json:"status"`
		Stores []events.JobStore `json:"stores"`
	}
	if err := json.Unmarshal([]byte(body), &js); code != 200 || err != nil {
		t.Fatalf("stores: %d %s %v", code, body, err)
	}
	if js.Status != "failed" || len(js.Stores) != 2 || js.Stores[0].StoreID != storeA || js.Stores[0].Visits != 2 || js.Stores[0].Images != 3 ||
		js.Stores[0].Processed != 2 || js.Stores[0].FirstFailure == nil || js.Stores[0].FirstFailure.Reason != "http 404" ||
		js.Stores[1].StoreID != unknown || js.Stores[1].FirstFailure == nil || js.Stores[1].FirstFailure.Reason != events.ReasonUnknownStore {
		t.Fatalf("stores: %s", body)
	}
	if code, _, body := do(t, "GET", app.url+"/api/jobs/999999/stores", ""); code != 404 {
		t.Fatalf("unknown job: %d %s", code, body)
	}
	// The statistics count what the event streams' tail read: every image.
	jstest.CheckFor(t, 10*time.Second, func() error {
		_, _, body := do(t, "GET", app.url+"/api/stats", "")
		var s httpapi.StatsSnapshot
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			return err
		}
		settled, failed := 0, 0
		for _, p := range s.Samples {
			settled += p.Processed + p.Failed
			failed += p.Failed
		}
		if settled != 4 || failed != 2 || len(s.FailuresByReason) != 2 || s.Jobs != (httpapi.JobCounts{}) {
			return fmt.Errorf("stats %s", body)
		}
		return nil
	})
	code, hdr, page := do(t, "GET", app.url+"/", "")
	if code != 200 || hdr.Get("Content-Security-Policy") != ui.ContentSecurityPolicy || !strings.Contains(page, "/ui/app.js") {
		t.Fatalf("GET /: %d %v", code, hdr)
	}
}

// browserPath finds Chromium (or Chrome) on PATH.
func browserPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browserPage is one tab of headless Chromium with its console log.
type browserPage struct {
	t       *testing.T
	ctx     context.Context
	base    string
	mu      sync.Mutex
	console []string
}

// newBrowserPage starts headless Chromium at 1280x800 for the test, or
// fails it (skips with RETAILPULSE_SKIP_BROWSER=1) when Chromium cannot
// start. When the test fails, the page's screenshot and console log are
// saved.
func newBrowserPage(t *testing.T, base string) *browserPage {
	t.Helper()
	unavailable := func(msg string) {
		t.Helper()
		if os.Getenv("RETAILPULSE_SKIP_BROWSER") == "1" {
			t.Skip(msg + " (skipped: RETAILPULSE_SKIP_BROWSER=1)")
		}
		t.Fatal(msg + ": install Chromium (apt-get install chromium), or set RETAILPULSE_SKIP_BROWSER=1 to skip the browser tests")
	}
	path := browserPath()
	if path == "" {
		unavailable("no Chromium on PATH")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 800), chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("hide-scrollbars", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	p := &browserPage{t: t, ctx: ctx, base: base}
	if err := chromedp.Do(ctx); err != nil {
		unavailable(fmt.Sprintf("Chromium (%s) cannot start: %v", path, err))
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			line := m.String()
			if m.URL != "" {
				line += fmt.Sprintf(" (%s:%d)", m.URL, m.Line)
			}
			p.mu.Lock()
			p.console = append(p.console, line)
			p.mu.Unlock()
		}
	}()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.saveOnFailure) // runs before the browser stops
	return p
}

// saveOnFailure writes the page's screenshot and console log when the
// test failed.
func (p *browserPage) saveOnFailure() {
	if !p.t.Failed() {
		return
	}
	dir := os.Getenv("RETAILPULSE_BROWSER_ARTIFACTS")
	var err error
	if dir == "" {
		dir, err = os.MkdirTemp("", "retailpulse-browser-")
	} else {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		p.t.Logf("cannot save the browser's state: %v", err)
		return
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(p.t.Name())
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		_ = os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
	} else {
		p.t.Logf("screenshot: %v", err)
	}
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	p.mu.Lock()
	log := "location: " + loc + "\n" + strings.Join(p.console, "\n") + "\n"
	p.mu.Unlock()
	_ = os.WriteFile(filepath.Join(dir, name+".console.log"), []byte(log), 0o644)
	p.t.Logf("browser screenshot and console log saved in %s (%s.png, %s.console.log)", dir, name, name)
}

// do runs actions with a bound.
func (p *browserPage) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// eval returns a JavaScript expression's value.
func eval[T any](p *browserPage, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// wait polls a JavaScript expression until it is truthy.
func (p *browserPage) wait(what, expr string, timeout time.Duration) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		p.t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

// text returns the text of the first element matching a CSS selector ("" if none).
func (p *browserPage) text(sel string) string {
	p.t.Helper()
	return eval[string](p, fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel))
}

// navigate loads a path of the service.
func (p *browserPage) navigate(path string) {
	p.t.Helper()
	p.do("navigate to "+path, chromedp.Navigate(p.base+path))
}

// screenshot writes a PNG of the viewport to $RETAILPULSE_SCREENSHOTS/name.
func (p *browserPage) screenshot(name string) {
	p.t.Helper()
	dir := os.Getenv("RETAILPULSE_SCREENSHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// checkConsole fails on uncaught exceptions and on anything the
// Content-Security-Policy refused.
func (p *browserPage) checkConsole() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, line := range p.console {
		if strings.HasPrefix(line, "exception") || strings.Contains(line, "Content Security Policy") || strings.Contains(line, "Refused to") {
			p.t.Errorf("console: %s", line)
		}
	}
}

// noHorizontalScroll fails when the page is wider than the viewport.
func (p *browserPage) noHorizontalScroll(where string) {
	p.t.Helper()
	dims := eval[[]int](p, `[document.documentElement.scrollWidth, window.innerWidth]`)
	if len(dims) != 2 || dims[0] > dims[1] {
		// Name the elements that stick out.
		wide := eval[[]string](p, `[...document.querySelectorAll("body *")].filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
			.slice(0, 10).map(e => e.tagName + (e.id ? "#" + e.id : "") + "." + e.className + " right=" + e.getBoundingClientRect().right)`)
		p.t.Errorf("%s: horizontal scroll: [scrollWidth innerWidth] = %v; wider: %v", where, dims, wide)
	}
}

// The operator's path through the dashboard: submit a job through the
// form (a refused body first), watch its progress reach 100% without a
// reload, find a failed store's reason on its page, see the job in the
// list, search visits by area and dates and page through them, and read
// the throughput; then the same pages on a 390-pixel-wide phone.
func TestDashboard_OperatorScenario(t *testing.T) {
	img := newImageServer(t)
	// Images wait at the gate, so the pages can be seen between 0 and 100%.
	gate := newPauseGate()
	app, _ := newTestApp(t, t.TempDir())
	app.Pause = gate.pause
	ta := runApp(t, app)
	jstest.CheckFor(t, time.Minute, func() error {
		if !ta.Ready() {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	t.Cleanup(gate.open)

	p := newBrowserPage(t, ta.url)
	start := time.Now()

	// Submit: a refused body shows the API's 400 message next to the input.
	p.navigate("/#/submit")
	p.wait("the submit form", `document.querySelector("#job-json") !== null`, 10*time.Second)
	eval[bool](p, `window.__loadedOnce = true`)
	refused := `{"count":2,"visits":[{"store_id":"S1","image_url":["http://x/a.jpg"],"visit_time":"t"}]}`
	_, _, apiBody := do(t, "POST", ta.url+"/api/submit", refused)
	var apiErr struct{ Error string }
	if err := json.Unmarshal([]byte(apiBody), &apiErr); err != nil || apiErr.Error == "" {
		t.Fatalf("the API's answer to a bad body: %s", apiBody)
	}
	p.do("fill in a refused job", chromedp.SetValue(chromedp.CSS("#job-json"), refused), chromedp.Click(chromedp.CSS("#submit-button")))
	p.wait("the 400 message", `document.querySelector("#submit-error").textContent !== ""`, 10*time.Second)
	if got := p.text("#submit-error"); got != "400: "+apiErr.Error {
		t.Fatalf("submit error shown %q, want %q", got, "400: "+apiErr.Error)
	}
	if !eval[bool](p, `document.querySelector("#job-json").getAttribute("aria-invalid") === "true" && document.activeElement.id === "job-json"`) {
		t.Error("the refused input is not marked invalid and focused")
	}

	// A job with a processed store, a store with a 404 image and an
	// unknown store, uploaded from a file and submitted from the keyboard.
	job := jobBody(
		visit{storeA, []string{img.URL + "/640x480.png", img.URL + "/800x600.jpg", img.URL + "/3x4.gif"}, "2026-11-23T10:00:00Z"},
		visit{storeB, []string{img.URL + "/100x50.png", img.URL + "/404", img.URL + "/7x9.png"}, "2026-11-23T10:05:00Z"},
		visit{unknown, []string{img.URL + "/2x2.png"}, "2026-11-23T10:10:00Z"},
	)
	jobFile := filepath.Join(t.TempDir(), "job.json")
	if err := os.WriteFile(jobFile, []byte(job), 0o644); err != nil {
		t.Fatal(err)
	}
	p.do("upload the job", chromedp.SetUploadFiles(chromedp.CSS("#job-file"), []string{jobFile}))
	p.wait("the uploaded job in the input", fmt.Sprintf(`document.querySelector("#job-json").value === %q`, job), 10*time.Second)
	p.do("submit from the keyboard", chromedp.Focus(chromedp.CSS("#submit-button")), chromedp.KeyEvent("\r"))
	p.wait("the new job's page", `/^#\/jobs\/\d+$/.test(location.hash) && document.querySelector("#job-progress .pct") !== null`, 10*time.Second)
	id := strings.TrimPrefix(eval[string](p, `location.hash`), "#/jobs/")

	// Progress moves: the failures settle at once, two images more get a
	// token; then the rest.
	p.wait("progress above 0%", `document.querySelector("#job-progress .pct").textContent === "28%"`, 15*time.Second) // 2 of 7
	gate.let(2)
	p.wait("progress between 0 and 100%", `document.querySelector("#job-progress .pct").textContent === "57%"`, 15*time.Second) // 4 of 7
	p.wait("the stores' rows moving", `[...document.querySelectorAll("#job-stores tbody tr")].reduce((n, r) => n + Number(r.cells[5].textContent), 0) === 2`, 10*time.Second)
	// The running job has failed images: the failures note says so.
	p.wait("the failures note of a running job", `document.querySelector("#job-failures").textContent.includes("Failed images so far")`, 10*time.Second)
	p.screenshot("dashboard-job.png")
	gate.open()
	p.wait("progress at 100%", `document.querySelector("#job-progress .pct").textContent === "100%" && document.querySelector("#job-status").textContent === "failed"`, 20*time.Second)
	if !eval[bool](p, `window.__loadedOnce === true`) {
		t.Fatal("the page reloaded")
	}
	if got := p.text("#job-progress-text"); !strings.HasPrefix(got, "100% — 7 of 7 images settled; job failed") {
		t.Errorf("progress text %q", got)
	}

	// The job's page: each failed store with its reason, the per-store
	// table, the per-image results, the raw events.
	p.wait("the failures", `document.querySelectorAll("#job-failures li").length === 2`, 10*time.Second)
	failures := p.text("#job-failures")
	if !strings.Contains(failures, storeB+": image "+img.URL+"/404: http 404") || !strings.Contains(failures, unknown+": unknown store") {
		t.Errorf("failures %q", failures)
	}
	p.wait("the stores", `document.querySelectorAll("#job-stores tbody tr").length === 3 && document.querySelector('#job-stores tr[data-store="`+storeB+`"]').textContent.includes("http 404")`, 10*time.Second)
	if row := p.text(`#job-stores tr[data-store="` + storeB + `"]`); !strings.Contains(row, "http 404 — "+img.URL+"/404") {
		t.Errorf("store row %q", row)
	}
	// (Read again when the job completed: earlier pages of results may
	// still be on screen for a moment.)
	p.wait("the results", `document.querySelectorAll("#job-results tbody tr").length === 7 && document.querySelector("#job-results tbody tr").textContent.includes("640 × 480")`, 10*time.Second)
	if row := p.text("#job-results tbody tr"); !strings.Contains(row, "2240") {
		t.Errorf("first result row %q", row)
	}
	p.wait("the raw events", `document.querySelector("#job-events").textContent.includes("job_completed")`, 10*time.Second)
	if ev := p.text("#job-events"); !strings.Contains(ev, "job_submitted") || strings.Count(ev, "  image_processed  ")+strings.Count(ev, "  image_failed  ") != 7 {
		t.Errorf("raw events:\n%s", ev)
	}

	// The job list, reached by the navigation: no reload, the job at 100%,
	// and a job submitted meanwhile appears by itself.
	p.do("open the jobs", chromedp.Click(chromedp.CSS(`a[data-nav="jobs"]`)))
	p.wait("the job in the list", fmt.Sprintf(`(document.querySelector('tr[data-job="%s"] .pct') || {}).textContent === "100%%"`, id), 10*time.Second)
	p.wait("the live indicator", `document.querySelector("#live").textContent === "Live"`, 10*time.Second)
	other := ta.submit(t, jobBody(visit{storeA, []string{img.URL + "/10x10.png"}, "2026-11-23"}))
	p.wait("the new job in the list", fmt.Sprintf(`(document.querySelector('tr[data-job="%d"] .pct') || {}).textContent === "100%%"`, other), 15*time.Second)
	// A job's progress bar moves in the list too.
	gate.shut()
	moving := ta.submit(t, jobBody(visit{storeA, []string{img.URL + "/1x2.png", img.URL + "/404", img.URL + "/3x4.png", img.URL + "/5x6.png", img.URL + "/7x8.png"}, "2026-11-23"}))
	pctOf := func(id uint64) string {
		return fmt.Sprintf(`(document.querySelector('tr[data-job="%d"] .pct') || {}).textContent`, id)
	}
	p.wait("the moving job at 20%", pctOf(moving)+` === "20%"`, 15*time.Second)
	gate.let(2)
	p.wait("the moving job at 60%", pctOf(moving)+` === "60%"`, 15*time.Second)
	gate.open()
	p.wait("the moving job at 100%", pctOf(moving)+fmt.Sprintf(` === "100%%" && document.querySelector('tr[data-job="%d"] .badge').textContent === "failed"`, moving), 15*time.Second)
	if !eval[bool](p, `window.__loadedOnce === true`) {
		t.Fatal("the page reloaded")
	}

	// Visits: 24 visits to the stores of area 400050 over 24 days, and some
	// elsewhere; search the area between two dates and page through.
	var visits []visit
	area400050 := []string{"S00000007", "S00000008", "S00000009", "S00000010"}
	for d := 1; d <= 24; d++ {
		visits = append(visits, visit{area400050[d%4], []string{fmt.Sprintf("%s/%dx%d.png", img.URL, d, d)}, fmt.Sprintf("2026-11-%02dT09:00:00Z", d)})
		visits = append(visits, visit{"S00000001", []string{img.URL + "/4x4.png"}, fmt.Sprintf("2026-11-%02dT09:00:00Z", d)}) // area 560001
	}
	seeded := ta.submit(t, jobBody(visits...))
	ta.waitDone(t, seeded)
	_, _, want := do(t, "GET", ta.url+"/api/visits?area=400050&startdate=2026-11-05&enddate=2026-11-20&limit=1000", "")
	var wantPage struct{ Visits []events.VisitView }
	if err := json.Unmarshal([]byte(want), &wantPage); err != nil || len(wantPage.Visits) != 16 {
		t.Fatalf("visits from the API: %v %s", err, want)
	}
	p.do("open the visits", chromedp.Click(chromedp.CSS(`a[data-nav="visits"]`)))
	p.wait("the visits form", `document.querySelector("#area") !== null`, 10*time.Second)
	p.do("search visits",
		chromedp.SetValue(chromedp.CSS("#area"), "400050"),
		chromedp.SetValue(chromedp.CSS("#startdate"), "2026-11-05"),
		chromedp.SetValue(chromedp.CSS("#enddate"), "2026-11-20"),
		chromedp.Click(chromedp.CSS("#visits-search")))
	rowsOf := func() []string {
		return eval[[]string](p, `[...document.querySelectorAll("#visits-body tbody tr")].map(r => r.dataset.visit + " " + r.cells[0].textContent + " " + r.cells[3].textContent)`)
	}
	var shown []string
	p.wait("page 1 of the visits", `document.querySelectorAll("#visits-body tbody tr").length === 10 && document.querySelector("#visits-next") !== null`, 10*time.Second)
	page1 := rowsOf()
	p.screenshot("dashboard-visits.png")
	p.do("next page", chromedp.Click(chromedp.CSS("#visits-next")))
	p.wait("page 2 of the visits", `document.querySelectorAll("#visits-body tbody tr").length === 6 && document.querySelector("#visits-next") === null && document.querySelector("#visits-page").textContent === "Page 2"`, 10*time.Second)
	shown = append(append(shown, page1...), rowsOf()...)
	for i, v := range wantPage.Visits {
		w := fmt.Sprintf("%d/%d %s 400050", v.JobID, v.Visit, v.VisitTime)
		if i >= len(shown) || shown[i] != w {
			t.Fatalf("visits shown:\n%s\nwant (from the API):\n%v", strings.Join(shown, "\n"), wantPage.Visits)
		}
	}
	p.do("previous page", chromedp.Click(chromedp.CSS("#visits-prev")))
	p.wait("page 1 again", `document.querySelectorAll("#visits-body tbody tr").length === 10 && document.querySelector("#visits-page").textContent === "Page 1"`, 10*time.Second)
	if again := rowsOf(); strings.Join(again, ",") != strings.Join(page1, ",") {
		t.Errorf("page 1 again: %v, first time %v", again, page1)
	}

	// Throughput: the charts draw the images settled.
	p.do("open the throughput", chromedp.Click(chromedp.CSS(`a[data-nav="throughput"]`)))
	p.wait("the charts", `document.querySelectorAll("#chart-rate svg polyline").length === 2 && document.querySelector("#chart-reasons svg") !== null && document.querySelector("#chart-jobs svg") !== null`, 10*time.Second)
	if reasons := eval[string](p, `document.querySelector("#chart-reasons svg").getAttribute("aria-label")`); !strings.Contains(reasons, "http 404 2") || !strings.Contains(reasons, "unknown store 1") {
		t.Errorf("failure chart %q", reasons)
	}
	p.screenshot("dashboard-throughput.png")
	p.do("open the jobs", chromedp.Click(chromedp.CSS(`a[data-nav="jobs"]`)))
	p.wait("the job list", `document.querySelectorAll("#jobs-body tbody tr").length === 4`, 10*time.Second)
	p.screenshot("dashboard-jobs.png")
	eval[string](p, `const s = document.querySelector("#job-status"); s.value = "failed"; s.dispatchEvent(new Event("change")); s.value`)
	p.wait("the failed jobs only", fmt.Sprintf(`location.hash === "#/jobs?status=failed" && document.querySelectorAll("#jobs-body tbody tr").length === 2 && document.querySelector('#jobs-body tr[data-job="%s"]') !== null && document.querySelector('#jobs-body tr[data-job="%d"]') !== null`, id, moving), 10*time.Second)
	if !eval[bool](p, `window.__loadedOnce === true`) {
		t.Fatal("the page reloaded")
	}

	// A phone: 390 px wide, no horizontal scroll on any page.
	p.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	for _, page := range []struct{ hash, ready string }{
		{"#/jobs", `document.querySelectorAll("#jobs-body tbody tr").length === 4`},
		{"#/jobs/" + id, `document.querySelectorAll("#job-stores tbody tr").length === 3 && document.querySelectorAll("#job-results tbody tr").length === 7`},
		{"#/visits?area=400050&startdate=2026-11-05&enddate=2026-11-20&search=1", `document.querySelectorAll("#visits-body tbody tr").length === 10`},
		{"#/throughput", `document.querySelector("#chart-rate svg") !== null`},
		{"#/submit", `document.querySelector("#job-json") !== null`},
	} {
		eval[string](p, fmt.Sprintf(`location.hash = %q`, page.hash))
		p.wait(page.hash+" on a phone", page.ready, 10*time.Second)
		p.noHorizontalScroll(page.hash)
		if page.hash == "#/jobs/"+id {
			p.screenshot("dashboard-phone.png")
		}
	}
	p.checkConsole()
	t.Logf("browser scenario took %v", time.Since(start).Round(time.Millisecond))
}

// With --api-token the page asks for the token once, keeps it for the tab
// (also across a reload), and reads the API and the event streams with
// it: the token never appears in a URL.
func TestDashboard_AsksForTheTokenOnce(t *testing.T) {
	app := startApp(t, t.TempDir(), "--api-token", "s3cret-token")
	p := newBrowserPage(t, app.url)
	p.navigate("/#/jobs")
	p.wait("the token form", `document.querySelector("#token") !== null`, 10*time.Second)
	p.do("a wrong token", chromedp.SetValue(chromedp.CSS("#token"), "wrong"), chromedp.Focus(chromedp.CSS("#token")), chromedp.KeyEvent("\r"))
	p.wait("the refusal", `(document.querySelector("#token-help") || {}).textContent?.startsWith("That token was refused.")`, 10*time.Second)
	p.do("the right token", chromedp.SetValue(chromedp.CSS("#token"), "s3cret-token"), chromedp.Focus(chromedp.CSS("#token")), chromedp.KeyEvent("\r"))
	p.wait("the jobs, and the live stream", `document.querySelector("#jobs-body .state.empty") !== null && document.querySelector("#live").textContent === "Live"`, 10*time.Second)
	p.do("reload", chromedp.Reload())
	p.wait("the jobs after a reload", `document.querySelector("#jobs-body .state.empty") !== null && document.querySelector("#token") === null`, 10*time.Second)
	p.do("open the throughput", chromedp.Click(chromedp.CSS(`a[data-nav="throughput"]`)))
	p.wait("the statistics", `document.querySelector("#stat-active") !== null`, 10*time.Second)
	if stored := eval[string](p, `sessionStorage.getItem("retailpulse.token")`); stored != "s3cret-token" {
		t.Errorf("sessionStorage holds %q", stored)
	}
	if loc := eval[string](p, `location.href`); strings.Contains(loc, "s3cret") {
		t.Errorf("the token is in the URL: %s", loc)
	}
	// Only the 401s of the wrong token and of the first requests, no
	// exception, nothing refused by the policy.
	p.checkConsole()
}

// The page escapes what clients sent: a store id and a URL that are
// markup stay text.
func TestDashboard_ShowsClientTextAsText(t *testing.T) {
	img := newImageServer(t)
	app := startApp(t, t.TempDir())
	hostile := `<img src=x onerror="window.__owned=1">`
	id := app.submit(t, jobBody(visit{hostile, []string{img.URL + "/404?q=<b>bold</b>"}, "2026-11-23"}))
	app.waitDone(t, id)
	p := newBrowserPage(t, app.url)
	p.navigate(fmt.Sprintf("/#/jobs/%d", id))
	p.wait("the failures", `document.querySelectorAll("#job-failures li").length === 1 && document.querySelectorAll("#job-results tbody tr").length === 1 && document.querySelectorAll("#job-stores tbody tr").length === 1`, 15*time.Second)
	if got := p.text("#job-failures li strong"); got != hostile {
		t.Errorf("store id shown as %q", got)
	}
	if eval[bool](p, `window.__owned === 1 || document.querySelector("main img") !== null`) {
		t.Fatal("client text was parsed as HTML")
	}
	if !strings.Contains(p.text("#job-results"), hostile) || !strings.Contains(p.text("#job-results"), "/404?q=<b>bold</b>") {
		t.Errorf("results %q", p.text("#job-results"))
	}
	p.checkConsole()
}

// pauseGate holds processed images back (their pause, as the GPU's): each
// token lets one through; open lets every one through until shut.
type pauseGate struct {
	tokens chan struct{}
	mu     sync.Mutex
	opened chan struct{} // closed while open
}

func newPauseGate() *pauseGate {
	return &pauseGate{tokens: make(chan struct{}, 100), opened: make(chan struct{})}
}

func (g *pauseGate) pause(ctx context.Context) error {
	g.mu.Lock()
	opened := g.opened
	g.mu.Unlock()
	select {
	case <-g.tokens:
	case <-opened:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// let lets n images through.
func (g *pauseGate) let(n int) {
	for range n {
		g.tokens <- struct{}{}
	}
}

func (g *pauseGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.opened:
	default:
		close(g.opened)
	}
}

func (g *pauseGate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.opened:
		g.opened = make(chan struct{})
	default:
	}
}

// The job list pages through older jobs and back, 20 at a time.
func TestDashboard_PagesThroughJobs(t *testing.T) {
	img := newImageServer(t)
	app := startApp(t, t.TempDir())
	var ids []uint64
	for i := range 22 {
		ids = append(ids, app.submit(t, jobBody(visit{storeA, []string{fmt.Sprintf("%s/%dx1.png", img.URL, i+1)}, "2026-11-23"})))
	}
	app.waitDone(t, ids[len(ids)-1])
	p := newBrowserPage(t, app.url)
	p.navigate("/#/jobs")
	firstRow := fmt.Sprintf(`document.querySelector("#jobs-body tbody tr").dataset.job === "%d"`, ids[21])
	p.wait("the first page", `document.querySelectorAll("#jobs-body tbody tr").length === 20 && `+firstRow, 10*time.Second)
	p.do("older", chromedp.Click(chromedp.CSS("#jobs-next")))
	p.wait("the second page", fmt.Sprintf(`document.querySelectorAll("#jobs-body tbody tr").length === 2 && document.querySelector("#jobs-next") === null && document.querySelector("#jobs-body tbody tr").dataset.job === "%d"`, ids[1]), 10*time.Second)
	p.do("newer", chromedp.Click(chromedp.CSS("#jobs-prev")))
	p.wait("the first page again", `document.querySelectorAll("#jobs-body tbody tr").length === 20 && document.querySelector("#jobs-prev") === null && `+firstRow, 10*time.Second)
	p.checkConsole()
}
