// Package ui is retailpulse's dashboard: static HTML, CSS and JavaScript
// embedded in the binary (no build step, nothing fetched from elsewhere),
// served by httpapi at / and under /ui/ (httpapi.Config.UI).
//
// The page reads the same /api/ routes as any client: job lists, status,
// results, a job's stores, visits, statistics, and the event streams,
// which it reads with fetch() so that the bearer token travels in the
// Authorization header, never in a URL. With --api-token the page asks
// for the token once and keeps it in the tab's sessionStorage.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// Files are the dashboard's files (index.html, app.js, app.css).
var Files, _ = fs.Sub(static, "static")

// ContentSecurityPolicy is sent with every response of Handler: the page
// loads scripts, styles and data from its own origin only, runs no inline
// script or style, and cannot be framed.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"

// Handler serves the dashboard: index.html at / and /ui/, the other files
// under /ui/. Any other path is 404.
func Handler() http.Handler {
	files := http.FileServerFS(Files)
	index, err := fs.ReadFile(Files, "index.html")
	if err != nil {
		panic("ui: index.html is not embedded: " + err.Error())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		switch p := r.URL.Path; {
		case p == "/" || p == "/ui/" || p == "/ui/index.html":
			h.Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusOK)
			if r.Method != http.MethodHead {
				w.Write(index)
			}
		case strings.HasPrefix(p, "/ui/") && !strings.HasSuffix(p, "/"):
			http.StripPrefix("/ui", files).ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}
