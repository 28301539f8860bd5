package imagefetch

import (
	"context"
	"errors"
	"fmt"
)

// Coarse error classes. They are the only text an *Error shows, safe to record
// against an image and to show to the client that supplied the URL: they never
// carry addresses, ports or dial errors, so the fetcher cannot be used to probe
// which hosts and ports exist behind it.
//
// A 4xx status has its own class, "http <code>" (e.g. "http 403"); every 5xx
// status shares ClassHTTP5xx; a 3xx that is not followed (no Location, 304)
// is ClassHTTP3xx.
const (
	ClassBlocked          = "blocked address"
	ClassTimeout          = "timeout"
	ClassConnection       = "connection failed"
	ClassHTTP5xx          = "http 5xx"
	ClassHTTP3xx          = "http 3xx"
	ClassNotImage         = "not an image"
	ClassTooLarge         = "too large"
	ClassInvalidURL       = "invalid url"
	ClassTooManyRedirects = "too many redirects"
)

// Error is the error Dimensions returns for everything but the caller's own
// context ending. Error() is the coarse Class only; the underlying cause stays
// reachable through errors.Unwrap and errors.As for operator logs.
type Error struct {
	// Class is one of the Class constants or "http <code>" for a 4xx status.
	Class string
	// StatusCode is the HTTP status for the http classes, else 0.
	StatusCode int
	// Err is the underlying cause, for logs only. It may be nil.
	Err error
}

// Error returns the coarse class, never the underlying cause.
func (e *Error) Error() string { return e.Class }

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is a class sentinel (an *Error with no cause)
// of the same class, so errors.Is(err, ErrBlocked) works whatever the cause.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Err == nil && t.Class == e.Class && (t.StatusCode == 0 || t.StatusCode == e.StatusCode)
}

// Sentinels for errors.Is, one per class (4xx statuses: compare Error.StatusCode).
var (
	ErrBlocked          = &Error{Class: ClassBlocked}
	ErrTimeout          = &Error{Class: ClassTimeout}
	ErrConnection       = &Error{Class: ClassConnection}
	ErrHTTP3xx          = &Error{Class: ClassHTTP3xx}
	ErrHTTP5xx          = &Error{Class: ClassHTTP5xx}
	ErrNotImage         = &Error{Class: ClassNotImage}
	ErrTooLarge         = &Error{Class: ClassTooLarge}
	ErrInvalidURL       = &Error{Class: ClassInvalidURL}
	ErrTooManyRedirects = &Error{Class: ClassTooManyRedirects}
)

// Reason returns the coarse class of an error returned by Dimensions: the
// Class of an *Error, "canceled" or "timeout" for a context error, "" for nil
// and "error" for anything else. It is what gets recorded for a failed image.
func Reason(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Class
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return ClassTimeout
	default:
		return "error"
	}
}

func newError(class string, cause error) *Error {
	return &Error{Class: class, Err: cause}
}

// statusError classes a non-2xx status.
func statusError(code int, status string) *Error {
	cause := fmt.Errorf("unexpected status %q", status)
	switch {
	case code >= 400 && code < 500:
		return &Error{Class: fmt.Sprintf("http %d", code), StatusCode: code, Err: cause}
	case code >= 500 && code < 600:
		return &Error{Class: ClassHTTP5xx, StatusCode: code, Err: cause}
	case code >= 300 && code < 400:
		// A redirect the client did not follow: no Location, or a 304.
		return &Error{Class: ClassHTTP3xx, StatusCode: code, Err: cause}
	default:
		// A 1xx that escaped the transport, or a nonsense code.
		return &Error{Class: ClassNotImage, StatusCode: code, Err: cause}
	}
}
