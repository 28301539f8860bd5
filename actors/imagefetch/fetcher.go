// Package imagefetch downloads images from client-supplied URLs and reports
// their dimensions, reading only the image header.
//
// Every URL is untrusted. The fetcher only speaks http and https, checks the
// address it actually dials (so DNS rebinding and odd IP spellings cannot reach
// loopback, private or cloud-metadata addresses), follows a bounded number of
// redirects and re-checks each, has no proxy, bounds every phase with a
// timeout, reads at most a fixed number of bytes per image and never decodes
// pixels. It asks for a byte range first and grows it only while the header
// is incomplete, so a large photo whose header comes early costs a small
// transfer on a connection that stays open for the next image. Failures come back as coarse classes (see Error) that are safe to
// record and show: never raw dial errors, addresses or ports.
package imagefetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config tunes a Fetcher. Zero fields take the documented defaults.
type Config struct {
	// AllowPrivateNetworks permits loopback, private, link-local and the other
	// destinations IsBlocked refuses. For tests and local demos only.
	AllowPrivateNetworks bool

	ConnectTimeout time.Duration // TCP connect; default 5s
	TLSTimeout     time.Duration // TLS handshake; default 5s
	HeaderTimeout  time.Duration // from request sent to response headers; default 10s
	AttemptTimeout time.Duration // one whole attempt, body included; default 30s
	TotalTimeout   time.Duration // all attempts and backoff; default 2m

	// MaxBytes is how much of a body is read looking for the image header
	// before giving up with "too large"; default 16 MiB. A larger body is
	// fine as long as its header comes early.
	MaxBytes int64

	// RangeBytes is the size of the first ranged request (Range: bytes=0-
	// RangeBytes-1) to a host; default 64 KiB. Later images of the host
	// ask for as much as its recent headers took (a quarter more, rounded
	// up to a power of two, at least 4 KiB, at most RangeBytes). While the
	// header is incomplete and the
	// resource longer, the next range continues where the last ended, up to
	// four times the bytes held and at most MaxBytes in all. Hosts
	// that ignore Range are read as whole bodies. Negative sends no Range:
	// whole bodies only.
	RangeBytes int64

	// MaxRetries is the number of retries after the first attempt for
	// transient failures (5xx, 429, timeouts, broken connections); default 3.
	// Negative disables retries.
	MaxRetries int
	// BackoffBase and BackoffMax bound the capped exponential backoff with
	// full jitter between attempts: attempt n waits uniformly in
	// [0, min(BackoffMax, BackoffBase*2^n)]. Defaults 200ms and 5s.
	BackoffBase, BackoffMax time.Duration
	// MaxRetryAfter caps how long a Retry-After on a 429 or 503 is honoured;
	// default 10s.
	MaxRetryAfter time.Duration

	// PerHostConcurrency bounds concurrent requests to one host (name and
	// port of the submitted URL; redirects are served under its slot);
	// default 32. Waiting for a slot counts against TotalTimeout, not
	// AttemptTimeout.
	PerHostConcurrency int
	// MaxRedirects bounds the redirects followed; default 3. Negative
	// follows none.
	MaxRedirects int

	// UserAgent is sent with every request; default "retailpulse-imagefetch/1".
	UserAgent string

	// Observer, if not nil, learns how each image was fetched and how many
	// body bytes that read.
	Observer Observer
}

const defaultUserAgent = "retailpulse-imagefetch/1"

func (c Config) withDefaults() Config {
	setDuration := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	setDuration(&c.ConnectTimeout, 5*time.Second)
	setDuration(&c.TLSTimeout, 5*time.Second)
	setDuration(&c.HeaderTimeout, 10*time.Second)
	setDuration(&c.AttemptTimeout, 30*time.Second)
	setDuration(&c.TotalTimeout, 2*time.Minute)
	setDuration(&c.BackoffBase, 200*time.Millisecond)
	setDuration(&c.BackoffMax, 5*time.Second)
	setDuration(&c.MaxRetryAfter, 10*time.Second)
	if c.MaxBytes <= 0 {
		c.MaxBytes = 16 << 20
	}
	if c.RangeBytes == 0 {
		c.RangeBytes = 64 << 10
	}
	switch {
	case c.MaxRetries == 0:
		c.MaxRetries = 3
	case c.MaxRetries < 0:
		c.MaxRetries = 0
	}
	if c.PerHostConcurrency <= 0 {
		c.PerHostConcurrency = 32
	}
	switch {
	case c.MaxRedirects == 0:
		c.MaxRedirects = 3
	case c.MaxRedirects < 0:
		c.MaxRedirects = 0
	}
	if c.UserAgent == "" {
		c.UserAgent = defaultUserAgent
	}
	return c
}

// Fetcher fetches image headers. It is safe for concurrent use by many
// goroutines; share one per process so connections and per-host limits are
// shared too.
type Fetcher struct {
	cfg       Config
	transport *http.Transport
	client    *http.Client
	hosts     *hostLimiter
	ranges    *rangeSizer
	workers   *workers // run each Dimensions call (see workers)

	// Seams, fixed before first use; tests replace them.
	permit func(netip.Addr) bool                            // may this address be dialled?
	sleep  func(ctx context.Context, d time.Duration) error // backoff wait
	jitter func(n int64) int64                              // uniform in [0, n)
	now    func() time.Time                                 // for Retry-After dates
}

var (
	errTooManyRedirects = errors.New("too many redirects")
	errBadRedirect      = errors.New("redirect target refused")
)

// New returns a Fetcher for cfg; zero fields take defaults.
func New(cfg Config) *Fetcher {
	cfg = cfg.withDefaults()
	f := &Fetcher{
		cfg:     cfg,
		hosts:   newHostLimiter(cfg.PerHostConcurrency),
		ranges:  newRangeSizer(cfg.RangeBytes),
		workers: newWorkers(workerIdle),
		permit:  permitPublic,
		sleep:   sleepCtx,
		jitter:  rand.Int64N,
		now:     time.Now,
	}
	if cfg.AllowPrivateNetworks {
		f.permit = permitAll
	}
	dialer := &net.Dialer{
		Timeout:   cfg.ConnectTimeout,
		KeepAlive: 30 * time.Second,
		// Every address dialled, first hop or redirect, passes the guard.
		Control: dialControl(func(ip netip.Addr) bool { return f.permit(ip) }),
	}
	f.transport = &http.Transport{
		Proxy:                  nil, // never route through an environment proxy
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    cfg.TLSTimeout,
		ResponseHeaderTimeout:  cfg.HeaderTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    min(cfg.PerHostConcurrency, 32),
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	f.client = &http.Client{Transport: f.transport, CheckRedirect: f.checkRedirect}
	return f
}

// Close closes idle connections. It does not interrupt requests in flight,
// and the Fetcher stays usable afterwards.
func (f *Fetcher) Close() { f.transport.CloseIdleConnections() }

// Dimensions fetches rawURL and returns the width and height from the image
// header (JPEG, PNG, GIF, WebP, BMP or TIFF), reading no more of the body than
// the header needs and never decoding pixels.
//
// It asks for a byte range first (Config.RangeBytes) and for further ranges
// only while the header is incomplete. A host that ignores Range is read as
// a whole body up to the header. A 416, or a 206 whose Content-Range does
// not match what was asked, is not trusted: the call falls back to asking
// for the whole body, for this and any later attempt. Every request, ranged
// or not, is checked as below.
//
// Transient failures (5xx, 429, timeouts, connections broken mid-response) are
// retried up to Config.MaxRetries times with jittered exponential backoff,
// honouring Retry-After on 429 and 503; other failures are final. The whole
// call is bounded by Config.TotalTimeout.
//
// If ctx ends first, Dimensions returns promptly with ctx.Err() itself,
// unwrapped. Every other error is an *Error whose Error() is its coarse class.
// Safe for concurrent use.
//
// The call runs on one of the Fetcher's worker goroutines (see workers);
// the caller waits for it.
func (f *Fetcher) Dimensions(ctx context.Context, rawURL string) (width, height int, err error) {
	c := dimsCalls.Get().(*dimsCall)
	c.f, c.ctx, c.url = f, ctx, rawURL
	f.workers.do(c)
	c.wait() // a panic leaves c out of the pool
	width, height, err = c.w, c.h, c.err
	c.f, c.ctx, c.url, c.err = nil, nil, "", nil
	dimsCalls.Put(c)
	return width, height, err
}

// dimsCall is one Dimensions call as a worker runs it. Calls come from a
// pool: the caller's goroutine (an image's) allocates nothing to hand its
// download to a worker.
type dimsCall struct {
	callState
	f    *Fetcher
	ctx  context.Context
	url  string
	w, h int
	err  error
}

var dimsCalls = sync.Pool{New: func() any { return &dimsCall{callState: newCallState()} }}

func (c *dimsCall) run() {
	defer func() { c.finish(recover()) }()
	c.w, c.h, c.err = c.f.dimensions(c.ctx, c.url)
}

func (f *Fetcher) dimensions(ctx context.Context, rawURL string) (width, height int, err error) {
	u, err := parseURL(rawURL)
	if err != nil {
		return 0, 0, newError(ClassInvalidURL, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	total, cancel := context.WithTimeout(ctx, f.cfg.TotalTimeout)
	defer cancel()
	st := &fetch{url: rawURL, host: hostKey(u), whole: f.cfg.RangeBytes < 0}
	if f.cfg.Observer != nil {
		defer func() {
			if st.mode != "" {
				f.cfg.Observer.ImageFetched(st.mode, st.bytesRead)
			}
		}()
	}

	for attempt := 0; ; attempt++ {
		w, h, err := f.attempt(total, st)
		if err == nil {
			return w, h, nil
		}
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		ferr, retry := classify(err)
		if total.Err() != nil {
			return 0, 0, newError(ClassTimeout, err)
		}
		if !retry || attempt >= f.cfg.MaxRetries {
			return 0, 0, ferr
		}
		delay := f.backoff(attempt)
		if st.retryAfter >= 0 {
			delay = min(st.retryAfter, f.cfg.MaxRetryAfter)
		}
		if deadline, ok := total.Deadline(); ok && time.Until(deadline) < delay {
			return 0, 0, ferr // the retry could not finish in time anyway
		}
		if err := f.sleep(total, delay); err != nil {
			if ctx.Err() != nil {
				return 0, 0, ctx.Err()
			}
			return 0, 0, newError(ClassTimeout, err)
		}
	}
}

// drainLimit bounds what is read after the header so a keep-alive
// connection can be reused: cheaper than a new connection per image. A body
// (or the rest of a range) declared larger, or one of unknown length that
// turns out larger, is cut off by closing the connection.
const drainLimit = 256 << 10

// drainBufs holds the buffers drain reads into. A 64 KiB read takes what
// a socket holds in one system call; io.Discard's own 8 KiB buffers take
// eight for a 64 KiB range.
var drainBufs = sync.Pool{New: func() any { return new([64 << 10]byte) }}

// drain reads and discards at most n bytes of r, stopping at its first
// error. Safe for concurrent use.
func drain(r io.Reader, n int64) {
	buf := drainBufs.Get().(*[64 << 10]byte)
	defer drainBufs.Put(buf)
	for n > 0 {
		k, err := r.Read(buf[:min(n, int64(len(buf)))])
		n -= int64(k)
		if err != nil {
			return
		}
	}
}

// attempt makes one try under a host slot and AttemptTimeout: the ranged
// requests and, if they are refused, one whole-body request. It sets
// st.retryAfter to the server's Retry-After on a 429 or 503, else -1. err
// is an *Error or a raw transport/context error for classify.
func (f *Fetcher) attempt(ctx context.Context, st *fetch) (width, height int, err error) {
	st.retryAfter = -1
	release, err := f.hosts.acquire(ctx, st.host)
	if err != nil {
		return 0, 0, err
	}
	defer release()

	ctx, cancel := context.WithTimeout(ctx, f.cfg.AttemptTimeout)
	defer cancel()
	if !st.whole {
		width, height, err = f.fetchRanged(ctx, st)
		if !errors.Is(err, errRangeFallback) {
			return width, height, err
		}
		st.whole = true
	}
	return f.fetchWhole(ctx, st)
}

// attemptErr turns a failure that happened because the attempt's deadline
// (its own or TotalTimeout's) passed into a timeout, whatever shape the
// transport gave it ("request canceled", a broken body read). A caller's
// cancellation is left alone: Dimensions returns ctx.Err() for it.
func attemptErr(attemptCtx context.Context, err error) error {
	if errors.Is(context.Cause(attemptCtx), context.DeadlineExceeded) && !isClassed(err) {
		return newError(ClassTimeout, err)
	}
	return err
}

func isClassed(err error) bool {
	var fe *Error
	return errors.As(err, &fe)
}

func (f *Fetcher) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > f.cfg.MaxRedirects {
		return errTooManyRedirects
	}
	if err := checkParsed(req.URL); err != nil {
		return fmt.Errorf("%w: %v", errBadRedirect, err)
	}
	return nil
}

// backoff is capped exponential backoff with full jitter for the wait after
// attempt n (0-based).
func (f *Fetcher) backoff(n int) time.Duration {
	ceiling := f.cfg.BackoffMax
	if n < 62 {
		if d := f.cfg.BackoffBase << n; d > 0 && d>>n == f.cfg.BackoffBase && d < ceiling {
			ceiling = d
		}
	}
	return time.Duration(f.jitter(int64(ceiling) + 1))
}

// classify maps an attempt's error to its coarse class and whether another
// attempt may help.
func classify(err error) (*Error, bool) {
	var fe *Error
	if errors.As(err, &fe) {
		retry := fe.Class == ClassHTTP5xx || fe.Class == ClassTimeout || fe.StatusCode == http.StatusTooManyRequests
		return fe, retry
	}
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, errBlockedDial):
		return newError(ClassBlocked, err), false
	case errors.Is(err, errTooManyRedirects):
		return newError(ClassTooManyRedirects, err), false
	case errors.Is(err, errBadRedirect):
		return newError(ClassInvalidURL, err), false
	case isTimeout(err):
		return newError(ClassTimeout, err), true
	case errors.As(err, &dnsErr):
		return newError(ClassConnection, err), dnsErr.IsTemporary && !dnsErr.IsNotFound
	case errors.Is(err, syscall.ECONNREFUSED):
		return newError(ClassConnection, err), false
	case errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF):
		return newError(ClassConnection, err), true
	default:
		return newError(ClassConnection, err), false
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// parseRetryAfter reads a Retry-After value, delay-seconds or an HTTP date,
// and returns the wait it asks for, or -1 if absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return -1
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return -1
		}
		return time.Duration(min(secs, 1<<20)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return -1
}

// hostKey names the per-host limit bucket: lower-case host and port, with the
// scheme's default port filled in.
func hostKey(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if strings.EqualFold(u.Scheme, "https") {
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
