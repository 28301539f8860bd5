package ui_test

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/retailpulse/retailpulse/httpapi/ui"
)

func get(t *testing.T, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	ui.Handler().ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

// Every answer carries the strict policy; the page and its files have
// their types.
func TestHandler_ServesUIFilesWithContentSecurityPolicy(t *testing.T) {
	for _, tt := range []struct{ target, ctype, contains string }{
		{"/", "text/html; charset=utf-8", `<script src="/ui/app.js" defer></script>`},
		{"/ui/", "text/html; charset=utf-8", "<title>"},
		{"/ui/index.html", "text/html; charset=utf-8", "<title>"},
		{"/ui/app.js", "text/javascript; charset=utf-8", "use strict"},
		{"/ui/app.css", "text/css; charset=utf-8", ":root"},
	} {
		rec := get(t, http.MethodGet, tt.target)
		h := rec.Header()
		if rec.Code != 200 || h.Get("Content-Type") != tt.ctype || !strings.Contains(rec.Body.String(), tt.contains) {
			t.Errorf("GET %s: %d %q, body has %q: %v", tt.target, rec.Code, h.Get("Content-Type"), tt.contains, strings.Contains(rec.Body.String(), tt.contains))
		}
		if got := h.Get("Content-Security-Policy"); got != ui.ContentSecurityPolicy {
			t.Errorf("GET %s: Content-Security-Policy %q", tt.target, got)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("GET %s: headers %v", tt.target, h)
		}
	}
	for _, target := range []string{"/ui/nope.js", "/ui/static/app.js", "/other", "/ui/../go.mod"} {
		rec := get(t, http.MethodGet, target)
		if rec.Code != 404 || rec.Header().Get("Content-Security-Policy") != ui.ContentSecurityPolicy {
			t.Errorf("GET %s: %d", target, rec.Code)
		}
	}
	if rec := get(t, http.MethodHead, "/"); rec.Code != 200 || rec.Body.Len() != 0 {
		t.Errorf("HEAD /: %d, %d bytes", rec.Code, rec.Body.Len())
	}
}

// The policy allows the page's own origin only: no inline script or
// style, no other origin for anything.
func TestContentSecurityPolicy_UIIsSelfOnly(t *testing.T) {
	p := ui.ContentSecurityPolicy
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(p, want) {
			t.Errorf("policy lacks %q: %s", want, p)
		}
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "http:", "https:", "*"} {
		if strings.Contains(p, bad) {
			t.Errorf("policy allows %q: %s", bad, p)
		}
	}
}

// The files need nothing the policy forbids, and the script never parses
// server data as HTML: every string reaches the page as text.
func TestFiles_UIHasNoInlineCodeNorHTMLParsing(t *testing.T) {
	read := func(name string) string {
		b, err := fs.ReadFile(ui.Files, name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	html := read("index.html")
	if m := regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]`).FindString(html); m != "" {
		t.Errorf("index.html has an inline script: %q", m)
	}
	if m := regexp.MustCompile(`(?i)\s(on[a-z]+|style)\s*=|<style|https?://|javascript:`).FindString(html); m != "" {
		t.Errorf("index.html has inline code, style or another origin: %q", m)
	}
	js := read("app.js")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute(\"style\"", "EventSource"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	if m := regexp.MustCompile(`url\(|@import|https?://`).FindString(read("app.css")); m != "" {
		t.Errorf("app.css loads from elsewhere: %q", m)
	}
}
