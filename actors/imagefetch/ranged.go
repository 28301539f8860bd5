package imagefetch

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// How an image's body was requested: the mode label of the fetch metrics.
const (
	// ModeRanged: byte ranges (206 answers), grown until the header decoded.
	ModeRanged = "ranged"
	// ModeWhole: the whole body (200 answers), read until the header decoded,
	// because the host ignored Range or its ranged answers were refused.
	ModeWhole = "whole"
)

// Observer receives one observation per Dimensions call that read a body:
// how the body was requested (ModeRanged or ModeWhole, as of the last
// attempt) and the body bytes read over all its attempts, drained bytes
// included. Implementations must be safe for concurrent use.
type Observer interface {
	ImageFetched(mode string, bytesRead int64)
}

// rangeGrowth multiplies the bytes held to give the end of the next range.
const rangeGrowth = 4

// maxRangeRequests bounds the ranged requests of one attempt, so a host
// that answers each with a sliver cannot keep the fetcher asking: the
// fetcher then falls back to the whole body.
const maxRangeRequests = 8

// errRangeFallback means the ranged answers cannot be trusted (416, a
// Content-Range that does not match what was asked, a resource that
// changed between ranges): fetch the whole body instead.
var errRangeFallback = errors.New("ranged answer refused; falling back to the whole body")

// fetch is one Dimensions call's state, carried across its attempts.
type fetch struct {
	url        string        // as submitted
	host       string        // per-host limit key
	whole      bool          // ranged answers were refused: whole bodies from now on
	mode       string        // how the last body read was requested; "" = none read
	bytesRead  int64         // body bytes read, every request of every attempt
	retryAfter time.Duration // of the last 429/503 answer, else -1
}

// countingBody adds what is read from a response body to the fetch's total.
type countingBody struct {
	r  io.Reader
	st *fetch
}

func (c countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.st.bytesRead += int64(n)
	return n, err
}

// get sends one GET for url under ctx. A non-empty rng is sent as the Range
// header, with Accept-Encoding: identity so the range counts the bytes that
// arrive, and ifRange, if any, as If-Range. Redirects are followed and
// checked, and every dial passes the address guard, as for any request.
func (f *Fetcher) get(ctx context.Context, url, rng, ifRange string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, newError(ClassInvalidURL, err)
	}
	req.Header.Set("User-Agent", f.cfg.UserAgent)
	req.Header.Set("Accept", "image/*")
	if rng != "" {
		req.Header.Set("Range", rng)
		req.Header.Set("Accept-Encoding", "identity")
		if ifRange != "" {
			req.Header.Set("If-Range", ifRange)
		}
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, attemptErr(ctx, err)
	}
	return resp, nil
}

// statusErr closes resp and returns its status as an error, remembering
// the Retry-After of a 429 or 503.
func (f *Fetcher) statusErr(resp *http.Response, st *fetch) error {
	resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		st.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), f.now())
	}
	return statusError(resp.StatusCode, resp.Status)
}

// fetchRanged asks for the first bytes of the image (as many as the
// host's recent headers took: rangeSizer) and decodes from ranged
// answers, asking for more only while the header is incomplete. A
// host that ignores Range (200) is read as a whole body. errRangeFallback
// means: ask again for the whole body.
func (f *Fetcher) fetchRanged(ctx context.Context, st *fetch) (width, height int, err error) {
	limit := f.cfg.MaxBytes + 1 // decodeHeader reads one byte past MaxBytes to see it exceeded
	want := min(f.ranges.first(st.host), limit)
	resp, err := f.get(ctx, st.url, rangeHeader(0, want), "")
	if err != nil {
		return 0, 0, err
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent:
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		return 0, 0, errRangeFallback
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return 0, 0, f.statusErr(resp, st)
	default: // Range ignored: this is the whole body
		return f.decodeWhole(ctx, resp, st)
	}
	b := &rangedBody{f: f, ctx: ctx, st: st, url: resp.Request.URL.String(), limit: limit, total: -1, requests: 1}
	if !b.accept(resp, 0, want) {
		resp.Body.Close()
		return 0, 0, errRangeFallback
	}
	b.ifRange = validator(resp.Header)
	st.mode = ModeRanged
	width, height, end, err := decodeHeaderEnd(b, f.cfg.MaxBytes)
	if err != nil {
		b.close()
		return 0, 0, attemptErr(ctx, err)
	}
	f.ranges.observe(st.host, end)
	b.finish()
	return width, height, nil
}

// fetchWhole asks for the whole body, without Range.
func (f *Fetcher) fetchWhole(ctx context.Context, st *fetch) (width, height int, err error) {
	resp, err := f.get(ctx, st.url, "", "")
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return 0, 0, f.statusErr(resp, st)
	}
	return f.decodeWhole(ctx, resp, st)
}

// decodeWhole decodes the header from a whole-body answer, then drains a
// small rest so the connection is reused, or closes it mid-body.
func (f *Fetcher) decodeWhole(ctx context.Context, resp *http.Response, st *fetch) (width, height int, err error) {
	// Closing before EOF drops the connection rather than draining the rest
	// of a large body we have no use for; a small one is drained below so
	// the connection goes back to the pool.
	defer resp.Body.Close()
	st.mode = ModeWhole
	body := countingBody{r: resp.Body, st: st}
	width, height, err = decodeHeader(body, f.cfg.MaxBytes)
	if err != nil {
		return 0, 0, attemptErr(ctx, err)
	}
	if resp.ContentLength <= drainLimit { // includes unknown (-1): drain at most drainLimit
		drain(body, drainLimit)
	}
	return width, height, nil
}

// rangedBody reads an image as consecutive byte ranges. When the current
// answer's range is used up and the decoder wants more, it asks for the
// next range, starting where the last one ended (nothing is fetched twice)
// and ending at rangeGrowth times the bytes held, at most limit and the
// resource's length. Each answer must be a 206 whose Content-Range starts
// where asked; anything else ends the read with errRangeFallback.
type rangedBody struct {
	f        *Fetcher
	ctx      context.Context
	st       *fetch
	url      string // continuations go to the first answer's final URL
	ifRange  string // validator of the first answer, sent as If-Range
	limit    int64  // never ask for bytes at or past this offset
	requests int

	resp  *http.Response // current answer
	r     io.Reader      // its body, counted
	pos   int64          // offset of the next byte
	end   int64          // offset one past the current answer's range
	total int64          // the resource's length; -1 while unknown
}

// accept checks that resp, a 206, carries the range [start, end) or a
// prefix of it, and makes it the current answer.
func (b *rangedBody) accept(resp *http.Response, start, end int64) bool {
	cr, ok := parseContentRange(resp.Header.Get("Content-Range"))
	switch {
	case !ok, cr.first != start, cr.last >= end,
		b.total >= 0 && cr.total >= 0 && cr.total != b.total, // the resource changed
		resp.ContentLength >= 0 && resp.ContentLength != cr.last-cr.first+1:
		return false
	}
	if cr.total >= 0 {
		b.total = cr.total
	}
	b.resp, b.r, b.pos, b.end = resp, countingBody{r: resp.Body, st: b.st}, start, cr.last+1
	return true
}

func (b *rangedBody) Read(p []byte) (int, error) {
	for {
		if b.pos < b.end {
			n, err := b.r.Read(p[:min(int64(len(p)), b.end-b.pos)])
			b.pos += int64(n)
			switch {
			case errors.Is(err, io.EOF) && b.pos < b.end:
				err = io.ErrUnexpectedEOF // the answer was cut short
			case errors.Is(err, io.EOF):
				err = nil
			}
			if n > 0 || err != nil {
				return n, err
			}
			continue
		}
		if b.pos >= b.limit || (b.total >= 0 && b.pos >= b.total) {
			return 0, io.EOF
		}
		if err := b.next(); err != nil {
			return 0, err
		}
	}
}

// next replaces the used-up current answer with the next range.
func (b *rangedBody) next() error {
	b.finish()
	if b.requests >= maxRangeRequests {
		return errRangeFallback
	}
	b.requests++
	end := min(max(b.pos*rangeGrowth, b.pos+1), b.limit)
	if b.total >= 0 {
		end = min(end, b.total)
	}
	resp, err := b.f.get(b.ctx, b.url, rangeHeader(b.pos, end), b.ifRange)
	if err != nil {
		return err
	}
	switch code := resp.StatusCode; {
	case code == http.StatusPartialContent:
		if !b.accept(resp, b.pos, end) {
			resp.Body.Close()
			return errRangeFallback
		}
		return nil
	case code == http.StatusRequestedRangeNotSatisfiable && b.total < 0:
		// Nothing at or past pos: the resource of unknown length ends here.
		resp.Body.Close()
		b.total = b.pos
		return nil
	case code == http.StatusRequestedRangeNotSatisfiable, code >= 200 && code <= 299:
		// A 416 past a known end, or a 200: If-Range failed, the resource
		// changed since the first range.
		resp.Body.Close()
		return errRangeFallback
	default:
		return b.f.statusErr(resp, b.st)
	}
}

// finish drains the rest of the current answer's range if it is small, so
// the connection is reused, and closes it.
func (b *rangedBody) finish() {
	if b.resp == nil {
		return
	}
	if b.end-b.pos <= drainLimit {
		drain(b.r, drainLimit+1)
	}
	b.close()
}

// close closes the current answer without draining it.
func (b *rangedBody) close() {
	if b.resp != nil {
		b.resp.Body.Close()
		b.resp = nil
	}
}

// rangeHeader is the Range value for the bytes [start, end).
func rangeHeader(start, end int64) string {
	return "bytes=" + strconv.FormatInt(start, 10) + "-" + strconv.FormatInt(end-1, 10)
}

// validator returns what a continuation sends as If-Range: a strong ETag,
// else Last-Modified, else "" (no If-Range).
func validator(h http.Header) string {
	if etag := h.Get("ETag"); etag != "" && !strings.HasPrefix(etag, "W/") {
		return etag
	}
	return h.Get("Last-Modified")
}

// contentRange is a parsed 206 Content-Range: bytes first-last/total, total
// -1 when the resource's length is unknown ("*").
type contentRange struct{ first, last, total int64 }

// parseContentRange parses "bytes first-last/total" or "bytes
// first-last/*" strictly: decimal digits only, first <= last, and last <
// total when total is known. The unsatisfied form "bytes */total" is not a
// 206's and is refused.
func parseContentRange(v string) (contentRange, bool) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return contentRange{}, false
	}
	span, size, ok := strings.Cut(rest, "/")
	if !ok {
		return contentRange{}, false
	}
	a, z, ok := strings.Cut(span, "-")
	if !ok {
		return contentRange{}, false
	}
	first, ok1 := parseDigits(a)
	last, ok2 := parseDigits(z)
	total, ok3 := int64(-1), true
	if size != "*" {
		total, ok3 = parseDigits(size)
	}
	if !ok1 || !ok2 || !ok3 || first > last || (total >= 0 && last >= total) {
		return contentRange{}, false
	}
	return contentRange{first, last, total}, true
}

// parseDigits parses a non-negative decimal of at most 18 digits (so it
// fits an int64 with room to add).
func parseDigits(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
