package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	"github.com/pb33f/libopenapi/datamodel/high/v3"

	"github.com/retailpulse/retailpulse/docs"
)

// The OpenAPI document is the API's contract: every response the tests of
// this package receive from the service (through do, or a child process's
// client) is checked against docs/openapi.yaml with a maintained OpenAPI
// 3.1 validator, so the document cannot drift from the code. A response to
// a method or path the document does not list must be that 405 or 404.

// contractChecker validates responses against the document; safe for
// concurrent use.
type contractChecker struct {
	mu    sync.Mutex
	v     validator.Validator
	model *v3.Document
}

var contract = sync.OnceValues(func() (*contractChecker, error) {
	doc, err := libopenapi.NewDocument(docs.OpenAPI)
	if err != nil {
		return nil, fmt.Errorf("docs/openapi.yaml: %w", err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		return nil, fmt.Errorf("docs/openapi.yaml: %w", err)
	}
	v, errs := validator.NewValidator(doc, config.WithFormatAssertions())
	if len(errs) > 0 {
		return nil, fmt.Errorf("docs/openapi.yaml: %v", errs)
	}
	return &contractChecker{v: v, model: &model.Model}, nil
})

// contractViolations lists how the response (code, header, body) to req
// breaks the document.
func contractViolations(req *http.Request, code int, header http.Header, body []byte) []string {
	c, err := contract()
	if err != nil {
		return []string{err.Error()}
	}
	resp := &http.Response{StatusCode: code, Header: header, Body: io.NopCloser(bytes.NewReader(body)), Request: req}
	c.mu.Lock()
	_, errs := c.v.ValidateHttpResponse(req, resp)
	c.mu.Unlock()
	var out []string
	for _, e := range errs {
		switch {
		case code == http.StatusMethodNotAllowed && (e.IsOperationMissingError() || e.IsPathMissingError()):
			if header.Get("Allow") == "" {
				out = append(out, "405 without Allow")
			}
		case code == http.StatusNotFound && e.IsPathMissingError() && bytes.Equal(body, []byte(`{"error":"not found"}`)):
		case code == http.StatusNotFound && e.IsPathMissingError() && !strings.HasPrefix(req.URL.Path, "/api/"):
			// Not the service's answer (an image server's).
		default:
			out = append(out, e.Error())
		}
	}
	if len(out) > 0 {
		return []string{fmt.Sprintf("%s %s answered %d %q:\n  %s", req.Method, req.URL, code, truncate(body, 300), strings.Join(out, "\n  "))}
	}
	return nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// Violations found by clients that have no testing.T (child processes'),
// reported by TestMain after the tests.
var (
	lateViolationsMu sync.Mutex
	lateViolations   []string
)

func recordViolations(v []string) {
	if len(v) == 0 {
		return
	}
	lateViolationsMu.Lock()
	lateViolations = append(lateViolations, v...)
	lateViolationsMu.Unlock()
}

// checkLateViolations fails a passing run (code 0) whose child processes
// answered outside docs/openapi.yaml; TestMain calls it after the tests.
func checkLateViolations(code int) int {
	lateViolationsMu.Lock()
	defer lateViolationsMu.Unlock()
	if len(lateViolations) > 0 {
		fmt.Fprintf(os.Stderr, "responses of child processes that break docs/openapi.yaml:\n%s\n", strings.Join(lateViolations, "\n"))
		if code == 0 {
			code = 1
		}
	}
	return code
}

// The document is valid OpenAPI 3.1, served as is at /api/openapi.yaml, and
// every operation it lists exists and answers as it says.
func TestOpenAPI_DocumentMatchesTheService(t *testing.T) {
	c, err := contract()
	if err != nil {
		t.Fatal(err)
	}
	if ok, errs := c.v.ValidateDocument(); !ok {
		t.Fatalf("docs/openapi.yaml is not valid OpenAPI: %v", errs)
	}
	if c.model.Version != "3.1.0" {
		t.Fatalf("OpenAPI %s, want 3.1.0", c.model.Version)
	}
	onDisk, err := os.ReadFile(filepath.Join("..", "..", "docs", "openapi.yaml"))
	if err != nil || !bytes.Equal(onDisk, docs.OpenAPI) {
		t.Fatalf("docs.OpenAPI is not docs/openapi.yaml: %v", err)
	}

	img := newImageServer(t)
	app := startApp(t, t.TempDir())
	id := app.submit(t, jobBody(visit{storeA, []string{img.URL + "/3x3.png", img.URL + "/404"}, "2026-11-23"}))
	app.waitDone(t, id)
	code, hdr, body := do(t, "GET", app.url+"/api/openapi.yaml", "")
	if code != 200 || hdr.Get("Content-Type") != "application/yaml" || body != string(docs.OpenAPI) {
		t.Fatalf("GET /api/openapi.yaml: %d %q, %d bytes", code, hdr.Get("Content-Type"), len(body))
	}

	// Each operation of the document, with plausible parameters: do checks
	// the answer against the document; here each must also be no 404/405.
	var paths []string
	for p := range c.model.Paths.PathItems.KeysFromOldest() {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		item := c.model.Paths.PathItems.GetOrZero(p)
		target := strings.ReplaceAll(strings.ReplaceAll(p, "{store_id}", storeA), "{id}", fmt.Sprint(id))
		switch strings.TrimSuffix(p, "/") {
		case "/api/status", "/api/results":
			target += fmt.Sprintf("?jobid=%d", id)
		case "/api/visits":
			target += "?area=710006&startdate=2026-11-01&enddate=2026-11-30&limit=1"
		case "/api/jobs":
			target += "?status=failed&limit=1"
		}
		for method, op := range map[string]*v3.Operation{"GET": item.Get, "HEAD": item.Head, "POST": item.Post} {
			if op == nil {
				continue
			}
			send := ""
			if method == "POST" {
				send = jobBody(visit{storeB, []string{img.URL + "/2x2.png"}, "t"})
			}
			code, _, _ := do(t, method, app.url+target, send)
			if code == 404 || code == 405 || code >= 500 {
				t.Errorf("%s %s (documented as %s): %d", method, target, op.OperationId, code)
			}
		}
	}
}
