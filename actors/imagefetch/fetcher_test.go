package imagefetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestFetcher_Formats(t *testing.T) {
	tests := []struct {
		name, contentType string
		body              []byte
		w, h              int
	}{
		{"jpeg", "image/jpeg", encodeJPEG(t, 640, 480), 640, 480},
		{"png", "image/png", encodePNG(t, 300, 200), 300, 200},
		{"gif", "image/gif", encodeGIF(t, 50, 40), 50, 40},
		{"bmp", "image/bmp", encodeBMP(t, 33, 22), 33, 22},
		{"tiff", "image/tiff", encodeTIFF(t, 70, 10), 70, 10},
		{"webp", "image/webp", webpFixture(t), 3, 2},
		// The content type is not trusted either way: the bytes decide.
		{"png served as text", "text/plain", encodePNG(t, 9, 8), 9, 8},
	}
	f := MustNewFetcher(t, testConfig())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := MustServe(t, serveBytes(tt.contentType, tt.body))
			w, h, err := f.Dimensions(t.Context(), ts.URL+"/image")
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "width", w, tt.w)
			equal(t, "height", h, tt.h)
			equal(t, "requests", ts.requests.Load(), 1)
		})
	}
}

func TestFetcher_HTTPS(t *testing.T) {
	var proto atomic.Value
	ts := MustServeUnstarted(t, func(w http.ResponseWriter, r *http.Request) {
		proto.Store(r.Proto)
		w.Write(encodePNG(t, 4, 3))
	})
	ts.EnableHTTP2 = true
	ts.StartTLS()

	f := MustNewFetcher(t, testConfig())
	f.transport.TLSClientConfig = &tls.Config{RootCAs: ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	w, h, err := f.Dimensions(t.Context(), ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "size", [2]int{w, h}, [2]int{4, 3})
	equal(t, "protocol", proto.Load(), any("HTTP/2.0"))
}

func TestFetcher_Bodies(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBytes = 64 << 10
	f := MustNewFetcher(t, cfg)

	t.Run("header-only bomb", func(t *testing.T) {
		ts := MustServe(t, serveBytes("image/png", pngHeaderOnly(100000, 100000)))
		start := time.Now()
		w, h, err := f.Dimensions(t.Context(), ts.URL)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "size", [2]int{w, h}, [2]int{100000, 100000})
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("took %v", d)
		}
	})

	t.Run("body larger than MaxBytes, header first", func(t *testing.T) {
		body := append(encodePNG(t, 12, 13), make([]byte, 4*cfg.MaxBytes)...)
		ts := MustServe(t, serveBytes("image/png", body))
		w, h, err := f.Dimensions(t.Context(), ts.URL)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "size", [2]int{w, h}, [2]int{12, 13})
	})

	t.Run("junk past MaxBytes before the header", func(t *testing.T) {
		jpg := encodeJPEG(t, 8, 8)
		body := append(append(append([]byte{}, jpg[:2]...), make([]byte, 2*cfg.MaxBytes)...), jpg[2:]...)
		ts := MustServe(t, serveBytes("image/jpeg", body))
		_, _, err := f.Dimensions(t.Context(), ts.URL)
		wantClass(t, err, ClassTooLarge)
		equal(t, "requests", ts.requests.Load(), 1)
	})
}

func TestFetcher_FinalFailures(t *testing.T) {
	png := encodePNG(t, 10, 10)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		class   string
	}{
		{"404", status(http.StatusNotFound), "http 404"},
		{"403", status(http.StatusForbidden), "http 403"},
		{"410", status(http.StatusGone), "http 410"},
		{"400", status(http.StatusBadRequest), "http 400"},
		{"304", status(http.StatusNotModified), ClassHTTP3xx},
		{"302 without location", status(http.StatusFound), ClassHTTP3xx},
		{"html", serveBytes("text/html", []byte("<!doctype html><title>not found</title>")), ClassNotImage},
		{"empty 200", serveBytes("image/png", nil), ClassNotImage},
		{"truncated png", serveBytes("image/png", png[:10]), ClassNotImage},
	}
	f := MustNewFetcher(t, testConfig())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := MustServe(t, tt.handler)
			_, _, err := f.Dimensions(t.Context(), ts.URL)
			wantClass(t, err, tt.class)
			equal(t, "requests (never retried)", ts.requests.Load(), 1)
		})
	}
}

func TestFetcher_Retries(t *testing.T) {
	png := encodePNG(t, 7, 5)
	ok := serveBytes("image/png", png)
	f := MustNewFetcher(t, testConfig())

	t.Run("500 always", func(t *testing.T) {
		ts := MustServe(t, status(http.StatusInternalServerError))
		_, _, err := f.Dimensions(t.Context(), ts.URL)
		wantClass(t, err, ClassHTTP5xx)
		equal(t, "requests", ts.requests.Load(), 4)
		if !errors.Is(err, ErrHTTP5xx) {
			t.Fatal("not ErrHTTP5xx")
		}
	})

	t.Run("502 always, retries disabled", func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxRetries = -1
		f := MustNewFetcher(t, cfg)
		ts := MustServe(t, status(http.StatusBadGateway))
		_, _, err := f.Dimensions(t.Context(), ts.URL)
		wantClass(t, err, ClassHTTP5xx)
		equal(t, "requests", ts.requests.Load(), 1)
	})

	for _, code := range []int{500, 502, 503, 504, 429} {
		t.Run(fmt.Sprintf("%d twice then ok", code), func(t *testing.T) {
			ts := MustServe(t, failFirst(2, status(code), ok))
			w, h, err := f.Dimensions(t.Context(), ts.URL)
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "size", [2]int{w, h}, [2]int{7, 5})
			equal(t, "requests", ts.requests.Load(), 3)
		})
	}

	t.Run("429 always", func(t *testing.T) {
		ts := MustServe(t, status(http.StatusTooManyRequests))
		_, _, err := f.Dimensions(t.Context(), ts.URL)
		wantClass(t, err, "http 429")
		equal(t, "requests", ts.requests.Load(), 4)
	})
}

func TestFetcher_Backoff(t *testing.T) {
	cfg := testConfig()
	cfg.BackoffBase = 10 * time.Millisecond
	cfg.BackoffMax = 50 * time.Millisecond
	cfg.MaxRetries = 5

	t.Run("capped exponential", func(t *testing.T) {
		f := MustNewFetcher(t, cfg)
		var rec sleepRecorder
		f.sleep = rec.sleep
		f.jitter = func(n int64) int64 { return n - 1 } // always the ceiling
		ts := MustServe(t, status(http.StatusInternalServerError))
		_, _, err := f.Dimensions(t.Context(), ts.URL)
		wantClass(t, err, ClassHTTP5xx)
		equal(t, "requests", ts.requests.Load(), 6)
		ms := time.Millisecond
		equal(t, "delays", fmt.Sprint(rec.get()), fmt.Sprint([]time.Duration{10 * ms, 20 * ms, 40 * ms, 50 * ms, 50 * ms}))
	})

	t.Run("full jitter stays within the ceiling", func(t *testing.T) {
		f := New(cfg)
		for n := range 70 {
			ceiling := min(cfg.BackoffMax, cfg.BackoffBase<<min(n, 20))
			var seenLow bool
			for range 200 {
				d := f.backoff(n)
				if d < 0 || d > ceiling {
					t.Fatalf("backoff(%d) = %v, want within [0, %v]", n, d, ceiling)
				}
				seenLow = seenLow || d < ceiling/2
			}
			if !seenLow {
				t.Fatalf("backoff(%d) never below half the ceiling: not full jitter", n)
			}
		}
	})
}

func TestFetcher_RetryAfter(t *testing.T) {
	png := encodePNG(t, 2, 2)
	ok := serveBytes("image/png", png)
	retryAfter := func(code int, value string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", value)
			w.WriteHeader(code)
		}
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	tests := []struct {
		name string
		fail http.HandlerFunc
		want time.Duration
	}{
		{"429 zero", retryAfter(429, "0"), 0},
		{"429 one second", retryAfter(429, "1"), time.Second},
		{"503 capped at MaxRetryAfter", retryAfter(503, "30"), 10 * time.Second},
		{"503 http date", retryAfter(503, now.Add(3*time.Second).Format(http.TimeFormat)), 3 * time.Second},
		{"503 date in the past", retryAfter(503, now.Add(-time.Hour).Format(http.TimeFormat)), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxRetryAfter = 10 * time.Second
			cfg.TotalTimeout = time.Minute // the recorded waits are not spent
			f := MustNewFetcher(t, cfg)
			var rec sleepRecorder
			f.sleep = rec.sleep
			f.now = func() time.Time { return now }
			ts := MustServe(t, failFirst(1, tt.fail, ok))
			if _, _, err := f.Dimensions(t.Context(), ts.URL); err != nil {
				t.Fatal(err)
			}
			equal(t, "delays", fmt.Sprint(rec.get()), fmt.Sprint([]time.Duration{tt.want}))
		})
	}

	t.Run("real wait for Retry-After 0", func(t *testing.T) {
		f := MustNewFetcher(t, testConfig())
		ts := MustServe(t, failFirst(1, retryAfter(429, "0"), ok))
		if _, _, err := f.Dimensions(t.Context(), ts.URL); err != nil {
			t.Fatal(err)
		}
		equal(t, "requests", ts.requests.Load(), 2)
	})

	t.Run("longer than the time left", func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxRetryAfter = time.Minute
		cfg.TotalTimeout = 5 * time.Second
		f := MustNewFetcher(t, cfg)
		var rec sleepRecorder
		f.sleep = rec.sleep
		ts := MustServe(t, retryAfter(503, "30"))
		_, _, err := f.Dimensions(t.Context(), ts.URL)
		wantClass(t, err, ClassHTTP5xx)
		equal(t, "requests", ts.requests.Load(), 1)
		equal(t, "sleeps", len(rec.get()), 0)
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                                     -1,
		"0":                                    0,
		"1":                                    time.Second,
		" 120 ":                                2 * time.Minute,
		"-5":                                   -1,
		"1.5":                                  -1,
		"soon":                                 -1,
		"99999999999999999999":                 -1,
		"9999999999999":                        (1 << 20) * time.Second,
		"Sun, 01 Mar 2026 12:00:10 GMT":        10 * time.Second,
		"Sunday, 01-Mar-26 12:01:00 GMT":       time.Minute,
		"Sun Mar  1 12:00:05 2026":             5 * time.Second,
		"Sat, 28 Feb 2026 12:00:00 GMT":        0,
		"Sun, 01 Mar 2026 12:00:10 +0000 junk": -1,
	} {
		equal(t, strconv.Quote(v), parseRetryAfter(v, now), want)
	}
}

func TestFetcher_Timeouts(t *testing.T) {
	t.Run("slow response headers", func(t *testing.T) {
		cfg := testConfig()
		cfg.HeaderTimeout = 100 * time.Millisecond
		cfg.MaxRetries = 1
		f := MustNewFetcher(t, cfg)
		ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) { hang(r) })
		_, _, err := f.Dimensions(t.Context(), ts.URL)
		wantClass(t, err, ClassTimeout)
		equal(t, "requests (timeouts are retried)", ts.requests.Load(), 2)
	})

	t.Run("never answers, bounded by TotalTimeout", func(t *testing.T) {
		cfg := testConfig()
		cfg.HeaderTimeout = time.Minute
		cfg.AttemptTimeout = time.Minute
		cfg.TotalTimeout = 200 * time.Millisecond
		f := MustNewFetcher(t, cfg)
		ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) { hang(r) })
		start := time.Now()
		_, _, err := f.Dimensions(t.Context(), ts.URL)
		wantClass(t, err, ClassTimeout)
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("took %v with TotalTimeout %v", d, cfg.TotalTimeout)
		}
	})

	t.Run("body stalls after the headers", func(t *testing.T) {
		cfg := testConfig()
		cfg.AttemptTimeout = 200 * time.Millisecond
		cfg.MaxRetries = 1
		f := MustNewFetcher(t, cfg)
		png := encodePNG(t, 3, 3)
		ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(png)))
			w.Write(png[:12])
			w.(http.Flusher).Flush()
			hang(r)
		})
		_, _, err := f.Dimensions(t.Context(), ts.URL)
		wantClass(t, err, ClassTimeout)
		equal(t, "requests", ts.requests.Load(), 2)
	})

	t.Run("tls handshake never completes", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var conns []net.Conn
		t.Cleanup(func() {
			l.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		})
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c) // hold it open, say nothing
				mu.Unlock()
			}
		}()
		cfg := testConfig()
		cfg.TLSTimeout = 50 * time.Millisecond
		cfg.MaxRetries = -1
		f := MustNewFetcher(t, cfg)
		_, _, err = f.Dimensions(t.Context(), "https://"+l.Addr().String()+"/")
		wantClass(t, err, ClassTimeout)
	})
}

func TestFetcher_BrokenConnection(t *testing.T) {
	png := encodePNG(t, 6, 4)
	breakConn := func(prefix []byte, reset bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			buf.Write(prefix)
			buf.Flush()
			if reset {
				conn.(*net.TCPConn).SetLinger(0) // close with RST
			}
			conn.Close()
		}
	}
	partial := []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n%s", len(png), png[:16]))
	tests := []struct {
		name string
		fail http.HandlerFunc
	}{
		{"closed mid-body", breakConn(partial, false)},
		{"reset mid-body", breakConn(partial, true)},
		{"closed before the response", breakConn(nil, false)},
		{"reset before the response", breakConn(nil, true)},
	}
	f := MustNewFetcher(t, testConfig())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := MustServe(t, failFirst(1, tt.fail, serveBytes("image/png", png)))
			w, h, err := f.Dimensions(t.Context(), ts.URL)
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "size", [2]int{w, h}, [2]int{6, 4})
			equal(t, "requests", ts.requests.Load(), 2)
		})
	}

	t.Run("always reset", func(t *testing.T) {
		ts := MustServe(t, breakConn(partial, true))
		_, _, err := f.Dimensions(t.Context(), ts.URL)
		wantClass(t, err, ClassConnection)
		equal(t, "requests", ts.requests.Load(), 4)
	})
}

func TestFetcher_ConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now

	f := MustNewFetcher(t, testConfig())
	var rec sleepRecorder
	f.sleep = rec.sleep
	_, _, err = f.Dimensions(t.Context(), "http://"+addr+"/a.png")
	wantClass(t, err, ClassConnection)
	equal(t, "retries", len(rec.get()), 0)
	_, port, _ := net.SplitHostPort(addr)
	if strings.Contains(err.Error(), port) || strings.Contains(Reason(err), port) {
		t.Fatalf("error text %q leaks the port", err)
	}
}

func TestFetcher_BlocksPrivateByDefault(t *testing.T) {
	ts := MustServe(t, serveBytes("image/png", encodePNG(t, 5, 5)))
	port := ts.Listener.Addr().(*net.TCPAddr).Port
	at := func(host string) string { return "http://" + net.JoinHostPort(host, strconv.Itoa(port)) + "/a.png" }

	tests := []struct {
		url string
		// Whether the private-networks option makes it work: the odd
		// spellings are refused before any dial either way.
		class, allowed string
	}{
		{ts.URL, ClassBlocked, ""},
		{at("127.0.0.1"), ClassBlocked, ""},
		{at("localhost"), ClassBlocked, ""},
		{at("::ffff:127.0.0.1"), ClassBlocked, ""},
		{at("::1"), ClassBlocked, "any"}, // ts does not listen on ::1
		{at("127.1"), ClassInvalidURL, ClassInvalidURL},
		{at("0x7f000001"), ClassInvalidURL, ClassInvalidURL},
		{at("2130706433"), ClassInvalidURL, ClassInvalidURL},
		{at("0177.0.0.1"), ClassInvalidURL, ClassInvalidURL},
		{"http://[::ffff:7f00:1]:" + strconv.Itoa(port) + "/", ClassBlocked, ""},
	}
	cfg := Config{TotalTimeout: 10 * time.Second, ConnectTimeout: 2 * time.Second}
	blocking := MustNewFetcher(t, cfg)
	cfg.AllowPrivateNetworks = true
	allowing := MustNewFetcher(t, cfg)
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, _, err := blocking.Dimensions(t.Context(), tt.url)
			wantClass(t, err, tt.class)
			if errors.Is(err, ErrBlocked) != (tt.class == ClassBlocked) {
				t.Fatalf("errors.Is(err, ErrBlocked) wrong for %v", err)
			}
			equal(t, "requests", ts.requests.Load(), 0)
		})
	}
	for _, tt := range tests {
		t.Run("allowed "+tt.url, func(t *testing.T) {
			_, _, err := allowing.Dimensions(t.Context(), tt.url)
			switch tt.allowed {
			case "":
				if err != nil {
					t.Fatal(err)
				}
			case "any":
			default:
				wantClass(t, err, tt.allowed)
			}
		})
	}
}

func TestFetcher_Redirects(t *testing.T) {
	png := encodePNG(t, 8, 3)
	// chain redirects /n to /n-1 until /0, which serves the image.
	chain := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		if n <= 0 {
			w.Write(png)
			return
		}
		http.Redirect(w, r, "/"+strconv.Itoa(n-1), http.StatusFound)
	})
	f := MustNewFetcher(t, testConfig())

	t.Run("three followed", func(t *testing.T) {
		before := chain.requests.Load()
		w, h, err := f.Dimensions(t.Context(), chain.URL+"/3")
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "size", [2]int{w, h}, [2]int{8, 3})
		equal(t, "requests", chain.requests.Load()-before, 4)
	})

	t.Run("four is too many", func(t *testing.T) {
		before := chain.requests.Load()
		_, _, err := f.Dimensions(t.Context(), chain.URL+"/4")
		wantClass(t, err, ClassTooManyRedirects)
		equal(t, "requests", chain.requests.Load()-before, 4)
	})

	t.Run("redirect loop", func(t *testing.T) {
		ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, r.URL.Path, http.StatusMovedPermanently)
		})
		_, _, err := f.Dimensions(t.Context(), ts.URL+"/loop")
		wantClass(t, err, ClassTooManyRedirects)
		equal(t, "requests", ts.requests.Load(), 4)
	})

	t.Run("none allowed", func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxRedirects = -1
		f := MustNewFetcher(t, cfg)
		_, _, err := f.Dimensions(t.Context(), chain.URL+"/1")
		wantClass(t, err, ClassTooManyRedirects)
	})

	for _, target := range []string{"file:///etc/passwd", "ftp://example.com/a.png", "gopher://127.0.0.1:70/", "http://user:pass@" + strings.TrimPrefix(chain.URL, "http://") + "/0", "http://127.1/"} {
		t.Run("to "+target, func(t *testing.T) {
			before := chain.requests.Load()
			ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target, http.StatusFound)
			})
			_, _, err := f.Dimensions(t.Context(), ts.URL)
			wantClass(t, err, ClassInvalidURL)
			equal(t, "requests", ts.requests.Load(), 1)
			equal(t, "requests to the target", chain.requests.Load()-before, 0)
		})
	}
}

// TestFetcher_RedirectToBlockedAddress: the first hop is allowed, the
// redirect target is another loopback address that is not, and it must not
// be reached. This holds only because every dial is checked: a guard that
// looked at the submitted URL alone would fetch the target.
func TestFetcher_RedirectToBlockedAddress(t *testing.T) {
	png := encodePNG(t, 4, 4)
	target, err := serveOn(t, "127.0.0.2:0", serveBytes("image/png", png))
	if err != nil {
		target, err = serveOn(t, "[::1]:0", serveBytes("image/png", png))
	}
	if err != nil {
		t.Skipf("no second loopback address to listen on: %v", err)
	}
	first := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/internal", http.StatusFound)
	})
	firstAddr := netip.MustParseAddrPort(first.Listener.Addr().String()).Addr()

	t.Run("refused", func(t *testing.T) {
		f := MustNewFetcher(t, testConfig())
		f.permit = func(ip netip.Addr) bool { return ip == firstAddr }
		_, _, err := f.Dimensions(t.Context(), first.URL)
		wantClass(t, err, ClassBlocked)
		equal(t, "first hop requests", first.requests.Load(), 1)
		equal(t, "target requests", target.requests.Load(), 0)
	})

	t.Run("reachable when allowed", func(t *testing.T) {
		// The control: the same redirect works when the target is allowed,
		// so the refusal above came from the guard.
		f := MustNewFetcher(t, testConfig())
		w, h, err := f.Dimensions(t.Context(), first.URL)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "size", [2]int{w, h}, [2]int{4, 4})
		equal(t, "target requests", target.requests.Load(), 1)
	})
}

func TestFetcher_PerHostLimit(t *testing.T) {
	png := encodePNG(t, 2, 2)
	var inFlight, maxInFlight atomic.Int64
	gate := make(chan struct{})
	slow := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		select {
		case <-gate:
		case <-r.Context().Done():
		}
		// Leave before answering: the client holds its slot until it has
		// read the answer, so the count here never exceeds the slots held.
		inFlight.Add(-1)
		w.Write(png)
	})
	fast := MustServe(t, serveBytes("image/png", png))

	cfg := testConfig()
	cfg.PerHostConcurrency = 2
	f := MustNewFetcher(t, cfg)
	key := hostKey(mustParseURL(t, slow.URL))

	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			_, _, err := f.Dimensions(t.Context(), slow.URL)
			errs <- err
		}()
	}
	checkFor(t, 5*time.Second, time.Millisecond, func() error {
		if _, refs := f.hosts.stats(key); refs != n || inFlight.Load() != 2 {
			return fmt.Errorf("%d holding or waiting, %d in flight", refs, inFlight.Load())
		}
		return nil
	})

	// The saturated host does not hold up another one.
	if _, _, err := f.Dimensions(t.Context(), fast.URL); err != nil {
		t.Fatal(err)
	}

	close(gate)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	equal(t, "max concurrent requests", maxInFlight.Load(), 2)
	equal(t, "requests", slow.requests.Load(), n)
	hosts, _ := f.hosts.stats(key)
	equal(t, "hosts tracked when idle", hosts, 0)
}

func TestFetcher_Cancel(t *testing.T) {
	// waitErr returns the result of Dimensions run in the background, failing
	// if it does not return promptly.
	waitErr := func(t *testing.T, errc <-chan error) error {
		t.Helper()
		select {
		case err := <-errc:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("Dimensions did not return after cancel")
			return nil
		}
	}
	wantCanceled := func(t *testing.T, err error) {
		t.Helper()
		if err != context.Canceled {
			t.Fatalf("err = %#v, want context.Canceled itself", err)
		}
	}

	t.Run("already canceled", func(t *testing.T) {
		ts := MustServe(t, serveBytes("image/png", encodePNG(t, 1, 1)))
		f := MustNewFetcher(t, testConfig())
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, _, err := f.Dimensions(ctx, ts.URL)
		wantCanceled(t, err)
		equal(t, "requests", ts.requests.Load(), 0)
	})

	t.Run("during the request", func(t *testing.T) {
		ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) { hang(r) })
		f := MustNewFetcher(t, testConfig())
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { _, _, err := f.Dimensions(ctx, ts.URL); errc <- err }()
		checkFor(t, 5*time.Second, time.Millisecond, func() error {
			if ts.requests.Load() == 0 {
				return errors.New("no request yet")
			}
			return nil
		})
		cancel()
		wantCanceled(t, waitErr(t, errc))
	})

	t.Run("during backoff", func(t *testing.T) {
		cfg := testConfig()
		cfg.BackoffBase, cfg.BackoffMax, cfg.TotalTimeout = time.Hour, time.Hour, 2*time.Hour
		f := MustNewFetcher(t, cfg)
		f.jitter = func(n int64) int64 { return n - 1 }
		ts := MustServe(t, status(http.StatusServiceUnavailable))
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { _, _, err := f.Dimensions(ctx, ts.URL); errc <- err }()
		checkFor(t, 5*time.Second, time.Millisecond, func() error {
			if ts.requests.Load() == 0 {
				return errors.New("no request yet")
			}
			return nil
		})
		cancel()
		wantCanceled(t, waitErr(t, errc))
		equal(t, "requests", ts.requests.Load(), 1)
	})

	t.Run("waiting for a host slot", func(t *testing.T) {
		cfg := testConfig()
		cfg.PerHostConcurrency = 1
		f := MustNewFetcher(t, cfg)
		ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) { hang(r) })
		key := hostKey(mustParseURL(t, ts.URL))

		holderCtx, stopHolder := context.WithCancel(t.Context())
		defer stopHolder()
		go f.Dimensions(holderCtx, ts.URL)
		checkFor(t, 5*time.Second, time.Millisecond, func() error {
			if ts.requests.Load() == 0 {
				return errors.New("no request yet")
			}
			return nil
		})

		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { _, _, err := f.Dimensions(ctx, ts.URL); errc <- err }()
		checkFor(t, 5*time.Second, time.Millisecond, func() error {
			if _, refs := f.hosts.stats(key); refs != 2 {
				return fmt.Errorf("%d holding or waiting", refs)
			}
			return nil
		})
		cancel()
		wantCanceled(t, waitErr(t, errc))
		equal(t, "requests", ts.requests.Load(), 1)
		_, refs := f.hosts.stats(key)
		equal(t, "refs after the waiter left", refs, 1)
	})
}

func TestFetcher_InvalidURL(t *testing.T) {
	f := MustNewFetcher(t, testConfig())
	for _, raw := range []string{"", "ftp://example.com/a.png", "http://user:pw@127.0.0.1/", "http:///x", "https://example.com/a b", "http://127.1/"} {
		_, _, err := f.Dimensions(t.Context(), raw)
		wantClass(t, err, ClassInvalidURL)
	}
}

func TestReason(t *testing.T) {
	cause := errors.New("dial tcp 10.0.0.1:6379: connect: connection refused")
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{newError(ClassConnection, cause), "connection failed"},
		{fmt.Errorf("image 3: %w", newError(ClassBlocked, cause)), "blocked address"},
		{statusError(404, "404 Not Found"), "http 404"},
		{statusError(418, "418 I'm a teapot"), "http 418"},
		{statusError(503, "503 Service Unavailable"), "http 5xx"},
		{statusError(599, "599"), "http 5xx"},
		{statusError(308, "308"), "http 3xx"},
		{statusError(999, "999"), "not an image"},
		{context.Canceled, "canceled"},
		{context.DeadlineExceeded, "timeout"},
		{errors.New("something"), "error"},
	}
	for _, tt := range tests {
		equal(t, fmt.Sprint(tt.err), Reason(tt.err), tt.want)
	}

	err := newError(ClassConnection, cause)
	equal(t, "Error()", err.Error(), "connection failed")
	if !errors.Is(err, cause) || !errors.Is(err, ErrConnection) || errors.Is(err, ErrBlocked) {
		t.Fatal("errors.Is does not see the cause and the class sentinel")
	}
	notFound := statusError(404, "404 Not Found")
	if !errors.Is(notFound, &Error{Class: "http 404"}) || errors.Is(notFound, &Error{Class: "http 403"}) {
		t.Fatal("errors.Is on 4xx classes")
	}
}

func TestHostKey(t *testing.T) {
	for raw, want := range map[string]string{
		"http://Example.COM/a":       "example.com:80",
		"https://example.com/a":      "example.com:443",
		"HTTPS://example.com:8443/a": "example.com:8443",
		"http://[::1]:8080/":         "[::1]:8080",
	} {
		equal(t, raw, hostKey(mustParseURL(t, raw)), want)
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	want := Config{
		ConnectTimeout: 5 * time.Second, TLSTimeout: 5 * time.Second, HeaderTimeout: 10 * time.Second,
		AttemptTimeout: 30 * time.Second, TotalTimeout: 2 * time.Minute, MaxBytes: 16 << 20, RangeBytes: 64 << 10,
		MaxRetries: 3, BackoffBase: 200 * time.Millisecond, BackoffMax: 5 * time.Second,
		MaxRetryAfter: 10 * time.Second, PerHostConcurrency: 32, MaxRedirects: 3, UserAgent: defaultUserAgent,
	}
	equal(t, "defaults", fmt.Sprintf("%+v", c), fmt.Sprintf("%+v", want))
}

func TestFetcher_SendsUserAgent(t *testing.T) {
	var ua, accept atomic.Value
	ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
		ua.Store(r.UserAgent())
		accept.Store(r.Header.Get("Accept"))
		w.Write(encodePNG(t, 1, 1))
	})
	cfg := testConfig()
	cfg.UserAgent = "retailpulse-test/1"
	f := MustNewFetcher(t, cfg)
	if _, _, err := f.Dimensions(t.Context(), ts.URL); err != nil {
		t.Fatal(err)
	}
	equal(t, "user agent", ua.Load(), any("retailpulse-test/1"))
	equal(t, "accept", accept.Load(), any("image/*"))
}

func mustParseURL(tb testing.TB, raw string) *url.URL {
	tb.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// Small bodies are drained after the header so their connection is reused;
// large ones are cut off rather than downloaded for nothing.
func TestFetcher_ReusesConnectionsForSmallBodies(t *testing.T) {
	small := append(encodeJPEG(t, 64, 48), make([]byte, 100<<10)...)
	large := append(encodeJPEG(t, 64, 48), make([]byte, 2<<20)...)
	for _, tt := range []struct {
		name      string
		body      []byte
		wantConns func(int) bool
	}{
		{"small body: one connection", small, func(n int) bool { return n == 1 }},
		{"large body: a connection per image", large, func(n int) bool { return n == 5 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var conns atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Write(tt.body)
			}))
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			srv.Start()
			defer srv.Close()
			f := New(Config{AllowPrivateNetworks: true})
			defer f.Close()
			for i := range 5 {
				if w, h, err := f.Dimensions(context.Background(), fmt.Sprintf("%s/%d.jpg", srv.URL, i)); err != nil || w != 64 || h != 48 {
					t.Fatalf("image %d: %dx%d %v", i, w, h, err)
				}
			}
			if n := int(conns.Load()); !tt.wantConns(n) {
				t.Fatalf("%d connections for 5 images", n)
			}
		})
	}
}
