package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"runtime/debug"
	"strings"
)

// allowMethods answers 405 with an Allow header to any method but methods.
func allowMethods(next http.HandlerFunc, methods ...string) http.Handler {
	allow := strings.Join(methods, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range methods {
			if r.Method == m {
				next(w, r)
				return
			}
		}
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use "+allow)
	})
}

// requireToken answers 401 unless the request carries one of the configured
// bearer tokens. With no tokens configured it is a no-op. Tokens are compared
// as SHA-256 digests with subtle.ConstantTimeCompare, against every
// configured token, so neither the length nor the position of a match shows
// in the timing.
func (h *handler) requireToken(next http.Handler) http.Handler {
	if len(h.tokens) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		given, ok := bearerToken(r.Header.Get("Authorization"))
		if !ok {
			h.reject("unauthorized")
			w.Header().Set("WWW-Authenticate", `Bearer realm="retailpulse"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token")
			return
		}
		sum := sha256.Sum256([]byte(given))
		match := 0
		for i := range h.tokens {
			match |= subtle.ConstantTimeCompare(sum[:], h.tokens[i][:])
		}
		if match != 1 {
			h.reject("unauthorized")
			w.Header().Set("WWW-Authenticate", `Bearer realm="retailpulse", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "invalid bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearerToken returns the token of an "Authorization: Bearer <token>"
// header. The scheme is case-insensitive (RFC 9110, 11.1).
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// notFound answers 404 JSON. Under /api/ it asks for the token first, so an
// unauthenticated client learns nothing about which API paths exist.
func (h *handler) notFound(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/api/") || r.URL.Path == "/api" {
		h.requireToken(http.HandlerFunc(writeNotFound)).ServeHTTP(w, r)
		return
	}
	writeNotFound(w, r)
}

func writeNotFound(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusNotFound, "not found")
}

// recoverPanics turns a panic in next into a logged 500. The response is
// written only if next had not started one. http.ErrAbortHandler is passed
// on: it is how a handler asks the server to drop the connection.
func (h *handler) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackingWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			h.log.Error("panic in http handler", "method", r.Method, "path", r.URL.Path,
				"panic", v, "stack", string(debug.Stack()))
			if !tw.wrote {
				writeError(w, http.StatusInternalServerError, "internal error")
			}
		}()
		next.ServeHTTP(tw, r)
	})
}

// trackingWriter records whether a response has been started.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *trackingWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackingWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
