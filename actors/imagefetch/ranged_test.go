package imagefetch

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// photo is a camera-like JPEG of w x h: SOI, metadata APP1 segments of
// metaBytes in all (as EXIF blocks come before the frame header), the
// frame header and scan of a real w x h JPEG, then random bytes up to size.
func photo(tb testing.TB, w, h, metaBytes, size int) []byte {
	tb.Helper()
	jpg := encodeJPEG(tb, w, h)
	rng := rand.New(rand.NewPCG(uint64(w), uint64(metaBytes)))
	b := append([]byte(nil), jpg[:2]...) // SOI
	for left := metaBytes; left > 0; {
		seg := min(left, 65535+2) - 2 // marker, then a length that counts itself
		if seg < 2 {
			seg = 2
		}
		b = append(b, 0xFF, 0xE1)
		b = binary.BigEndian.AppendUint16(b, uint16(seg))
		payload := make([]byte, seg-2)
		for i := range payload {
			payload[i] = byte(rng.Uint32())
		}
		b = append(b, payload...)
		left -= seg + 2
	}
	b = append(b, jpg[2:]...)
	for len(b) < size {
		b = append(b, byte(rng.Uint32()))
	}
	return b
}

// rangeHost serves body honouring Range as S3 and nginx do
// (http.ServeContent: 206 with Content-Range, 416, If-Range against its
// Last-Modified), and records the Range of each request and the body bytes
// it wrote.
type rangeHost struct {
	body    []byte
	modTime time.Time

	mu       sync.Mutex
	ranges   []string // Range of each request; "" = none
	ifRanges []string
	written  atomic.Int64
}

func newRangeHost(body []byte) *rangeHost {
	return &rangeHost{body: body, modTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (h *rangeHost) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.record(r)
	w.Header().Set("Content-Type", "image/jpeg")
	http.ServeContent(byteCounter{w, &h.written}, r, "", h.modTime, bytes.NewReader(h.body))
}

func (h *rangeHost) record(r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ranges = append(h.ranges, r.Header.Get("Range"))
	h.ifRanges = append(h.ifRanges, r.Header.Get("If-Range"))
}

func (h *rangeHost) asked() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.ranges...)
}

// waitWritten fails unless the host's handlers have written want body
// bytes once they finish: the client can hold the last bytes before the
// handler's Write returns and is counted.
func (h *rangeHost) waitWritten(tb testing.TB, want int64) {
	tb.Helper()
	checkFor(tb, 5*time.Second, time.Millisecond, func() error {
		if got := h.written.Load(); got != want {
			return fmt.Errorf("bytes written by the host = %d, want %d", got, want)
		}
		return nil
	})
}

// byteCounter counts the body bytes a handler writes.
type byteCounter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c byteCounter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// fetchRecorder is an Observer that keeps what it is told.
type fetchRecorder struct {
	mu    sync.Mutex
	modes []string
	bytes []int64
}

func (r *fetchRecorder) ImageFetched(mode string, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.modes = append(r.modes, mode)
	r.bytes = append(r.bytes, n)
}

func (r *fetchRecorder) get() ([]string, []int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.modes...), append([]int64(nil), r.bytes...)
}

// rangedFetcher is a test fetcher whose observations go to the returned
// recorder.
func rangedFetcher(tb testing.TB, cfg Config) (*Fetcher, *fetchRecorder) {
	rec := &fetchRecorder{}
	cfg.Observer = rec
	return MustNewFetcher(tb, cfg), rec
}

func TestFetcher_RangedRequests(t *testing.T) {
	const photoSize = 2_500_000
	small := encodeJPEG(t, 64, 48)
	tests := []struct {
		name     string
		body     []byte
		maxBytes int64
		ranges   []string
		written  int64  // body bytes the host wrote; -1 = not checked
		class    string // "" = 64x48
	}{
		{"small image: one range holds it all", small, 0,
			[]string{"bytes=0-65535"}, int64(len(small)), ""},
		{"photo with the header in the first range", photo(t, 64, 48, 24<<10, photoSize), 0,
			[]string{"bytes=0-65535"}, 65536, ""},
		{"header past the first range: the next continues where it ended", photo(t, 64, 48, 100<<10, photoSize), 0,
			[]string{"bytes=0-65535", "bytes=65536-262143"}, 262144, ""},
		{"header at 1.5 MB: ranges grow to the end of the resource", photo(t, 64, 48, 1500<<10, photoSize), 0,
			[]string{"bytes=0-65535", "bytes=65536-262143", "bytes=262144-1048575", "bytes=1048576-2499999"}, -1, ""},
		{"header past MaxBytes", photo(t, 64, 48, 400<<10, 1<<20), 256 << 10,
			[]string{"bytes=0-65535", "bytes=65536-262143", "bytes=262144-262144"}, 262145, ClassTooLarge},
		{"resource ends before the header", photo(t, 64, 48, 30000, 0)[:30000], 0,
			[]string{"bytes=0-65535"}, 30000, ClassNotImage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxBytes = tt.maxBytes
			f, rec := rangedFetcher(t, cfg)
			host := newRangeHost(tt.body)
			ts := MustServe(t, host.ServeHTTP)
			w, h, err := f.Dimensions(t.Context(), ts.URL+"/photo.jpg")
			if tt.class != "" {
				wantClass(t, err, tt.class)
			} else {
				if err != nil {
					t.Fatal(err)
				}
				equal(t, "size", [2]int{w, h}, [2]int{64, 48})
			}
			equal(t, "ranges asked", fmt.Sprint(host.asked()), fmt.Sprint(tt.ranges))
			if tt.written >= 0 {
				host.waitWritten(t, tt.written)
			}
			modes, read := rec.get()
			equal(t, "modes", fmt.Sprint(modes), "[ranged]")
			if tt.written >= 0 {
				equal(t, "bytes read", read[0], tt.written)
			}
		})
	}
}

// A host that ignores Range answers 200 with the whole body: the fetcher
// reads it up to the header, as without ranges.
func TestFetcher_RangeIgnored(t *testing.T) {
	body := photo(t, 64, 48, 24<<10, 2_500_000)
	var ranges atomic.Value
	ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
		ranges.Store(r.Header.Get("Range"))
		w.Header().Set("Content-Type", "image/jpeg")
		w.Write(body)
	})
	f, rec := rangedFetcher(t, testConfig())
	w, h, err := f.Dimensions(t.Context(), ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "size", [2]int{w, h}, [2]int{64, 48})
	equal(t, "requests", ts.requests.Load(), 1)
	equal(t, "range asked", ranges.Load(), any("bytes=0-65535"))
	modes, _ := rec.get()
	equal(t, "modes", fmt.Sprint(modes), "[whole]")
}

func TestFetcher_RangeNotSatisfiable(t *testing.T) {
	body := encodeJPEG(t, 64, 48)
	unsatisfiable := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes */"+strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
	}
	// unlessRanged answers requests with a Range with ranged, others with whole.
	unlessRanged := func(ranged, whole http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Range") != "" {
				ranged(w, r)
				return
			}
			whole(w, r)
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		class   string
		ranges  string
	}{
		{"416, then the whole body", unlessRanged(unsatisfiable, serveBytes("image/jpeg", body)), "", "[bytes=0-65535 ]"},
		{"416 to everything", unsatisfiable, "http 416", "[bytes=0-65535 ]"},
		// Go's file server answers 200 rather than 416 for an empty file.
		{"empty resource", newRangeHost(nil).ServeHTTP, ClassNotImage, "[bytes=0-65535]"},
		// Once fallen back, retries ask for the whole body straight away.
		{"416, then the whole body after a 503", unlessRanged(unsatisfiable, failFirst(1, status(503), serveBytes("image/jpeg", body))), "", "[bytes=0-65535  ]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var ranges []string
			ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				ranges = append(ranges, r.Header.Get("Range"))
				mu.Unlock()
				tt.handler(w, r)
			})
			f, rec := rangedFetcher(t, testConfig())
			w, h, err := f.Dimensions(t.Context(), ts.URL)
			if tt.class != "" {
				wantClass(t, err, tt.class)
			} else {
				if err != nil {
					t.Fatal(err)
				}
				equal(t, "size", [2]int{w, h}, [2]int{64, 48})
				modes, _ := rec.get()
				equal(t, "modes", fmt.Sprint(modes), "[whole]")
			}
			mu.Lock()
			defer mu.Unlock()
			equal(t, "ranges asked", fmt.Sprint(ranges), tt.ranges)
		})
	}
}

// A 206 whose Content-Range is not what was asked is not trusted: the
// fetcher asks again for the whole body.
func TestFetcher_RangeMismatch(t *testing.T) {
	body := photo(t, 64, 48, 24<<10, 200_000)
	size := strconv.Itoa(len(body))
	// partial answers a ranged request with a 206 carrying contentRange
	// (none if "") and n bytes of the body; others with the whole body.
	partial := func(contentRange string, n int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Range") == "" {
				w.Write(body)
				return
			}
			if contentRange != "" {
				w.Header().Set("Content-Range", contentRange)
			}
			w.Header().Set("Content-Length", strconv.Itoa(n))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(body[:n])
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"wrong start", partial("bytes 100-65635/"+size, 65536)},
		{"garbage", partial("bytes lots", 65536)},
		{"missing", partial("", 65536)},
		{"unsatisfied form in a 206", partial("bytes */"+size, 65536)},
		{"more than asked", partial("bytes 0-99999/"+size, 100000)},
		{"last past the total", partial("bytes 0-65535/1000", 65536)},
		{"negative start", partial("bytes -5-65535/"+size, 65536)},
		{"other unit", partial("items 0-65535/"+size, 65536)},
		{"length disagrees with the range", partial("bytes 0-65535/"+size, 1000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var ranges []string
			ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				ranges = append(ranges, r.Header.Get("Range"))
				mu.Unlock()
				tt.handler(w, r)
			})
			f, rec := rangedFetcher(t, testConfig())
			w, h, err := f.Dimensions(t.Context(), ts.URL)
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "size", [2]int{w, h}, [2]int{64, 48})
			mu.Lock()
			equal(t, "ranges asked", fmt.Sprint(ranges), "[bytes=0-65535 ]")
			mu.Unlock()
			modes, _ := rec.get()
			equal(t, "modes", fmt.Sprint(modes), "[whole]")
		})
	}

	t.Run("wrong continuation", func(t *testing.T) {
		far := photo(t, 64, 48, 100<<10, 300_000)
		host := newRangeHost(far)
		ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
			if rg := r.Header.Get("Range"); rg != "" && rg != "bytes=0-65535" {
				host.record(r)
				w.Header().Set("Content-Range", "bytes 0-196607/"+strconv.Itoa(len(far))) // from the start again
				w.WriteHeader(http.StatusPartialContent)
				w.Write(far[:196608])
				return
			}
			host.ServeHTTP(w, r)
		})
		f, _ := rangedFetcher(t, testConfig())
		w, h, err := f.Dimensions(t.Context(), ts.URL)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "size", [2]int{w, h}, [2]int{64, 48})
		equal(t, "ranges asked", fmt.Sprint(host.asked()), "[bytes=0-65535 bytes=65536-262143 ]")
	})

	t.Run("the whole-body answer is no image either", func(t *testing.T) {
		ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "garbage")
			w.WriteHeader(http.StatusPartialContent)
			w.Write([]byte("<html>not an image</html>"))
		})
		f, _ := rangedFetcher(t, testConfig())
		_, _, err := f.Dimensions(t.Context(), ts.URL)
		wantClass(t, err, ClassNotImage)
		equal(t, "requests", ts.requests.Load(), 2)
	})
}

// A host that answers each range with a sliver is given up on after
// maxRangeRequests, for the whole body.
func TestFetcher_RangeSlivers(t *testing.T) {
	body := photo(t, 64, 48, 24<<10, 100_000)
	var ranged atomic.Int64
	ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
		var start int
		if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &start); err != nil {
			w.Write(body)
			return
		}
		ranged.Add(1)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start, len(body)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(body[start : start+1])
	})
	f, rec := rangedFetcher(t, testConfig())
	w, h, err := f.Dimensions(t.Context(), ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "size", [2]int{w, h}, [2]int{64, 48})
	equal(t, "ranged requests", ranged.Load(), maxRangeRequests)
	equal(t, "requests", ts.requests.Load(), maxRangeRequests+1)
	modes, _ := rec.get()
	equal(t, "modes", fmt.Sprint(modes), "[whole]")
}

// The first request is redirected to a host that honours Range; later
// ranges go straight to where the redirect led.
func TestFetcher_RangedRedirect(t *testing.T) {
	host := newRangeHost(photo(t, 64, 48, 100<<10, 2_500_000))
	target := MustServe(t, host.ServeHTTP)
	first := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/photo.jpg", http.StatusFound)
	})
	f, _ := rangedFetcher(t, testConfig())
	w, h, err := f.Dimensions(t.Context(), first.URL+"/p")
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "size", [2]int{w, h}, [2]int{64, 48})
	equal(t, "first hop requests", first.requests.Load(), 1)
	equal(t, "ranges asked of the target", fmt.Sprint(host.asked()), "[bytes=0-65535 bytes=65536-262143]")
	host.waitWritten(t, 262144)
}

// Every request of an attempt, the later ranges too, is checked, bounded
// and retried as the first is.
func TestFetcher_RangedContinuations(t *testing.T) {
	far := photo(t, 64, 48, 100<<10, 2_500_000)
	// firstRange serves the first range from host and answers later ones
	// with later.
	firstRange := func(host *rangeHost, later http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Range") != "bytes=0-65535" {
				host.record(r)
				later(w, r)
				return
			}
			host.ServeHTTP(w, r)
		}
	}

	t.Run("redirect to a blocked address", func(t *testing.T) {
		png := encodePNG(t, 4, 4)
		blocked, err := serveOn(t, "127.0.0.2:0", serveBytes("image/png", png))
		if err != nil {
			blocked, err = serveOn(t, "[::1]:0", serveBytes("image/png", png))
		}
		if err != nil {
			t.Skipf("no second loopback address to listen on: %v", err)
		}
		host := newRangeHost(far)
		ts := MustServe(t, firstRange(host, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, blocked.URL+"/internal", http.StatusFound)
		}))
		allowed := netip.MustParseAddrPort(ts.Listener.Addr().String()).Addr()
		f, _ := rangedFetcher(t, testConfig())
		f.permit = func(ip netip.Addr) bool { return ip == allowed }
		_, _, err = f.Dimensions(t.Context(), ts.URL)
		wantClass(t, err, ClassBlocked)
		equal(t, "blocked target requests", blocked.requests.Load(), 0)
	})

	t.Run("later range hangs", func(t *testing.T) {
		cfg := testConfig()
		cfg.AttemptTimeout = 200 * time.Millisecond
		cfg.MaxRetries = -1
		f, _ := rangedFetcher(t, cfg)
		host := newRangeHost(far)
		ts := MustServe(t, firstRange(host, func(w http.ResponseWriter, r *http.Request) { hang(r) }))
		_, _, err := f.Dimensions(t.Context(), ts.URL)
		wantClass(t, err, ClassTimeout)
		equal(t, "ranges asked", fmt.Sprint(host.asked()), "[bytes=0-65535 bytes=65536-262143]")
	})

	t.Run("later range 503 once: the attempt is retried", func(t *testing.T) {
		f, _ := rangedFetcher(t, testConfig())
		host := newRangeHost(far)
		ts := MustServe(t, firstRange(host, failFirst(1, status(http.StatusServiceUnavailable), host.ServeHTTP)))
		w, h, err := f.Dimensions(t.Context(), ts.URL)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "size", [2]int{w, h}, [2]int{64, 48})
		// The retried continuation is recorded twice: by firstRange and by host.
		equal(t, "ranges asked", fmt.Sprint(host.asked()), "[bytes=0-65535 bytes=65536-262143 bytes=0-65535 bytes=65536-262143 bytes=65536-262143]")
	})

	t.Run("later range 404", func(t *testing.T) {
		f, _ := rangedFetcher(t, testConfig())
		host := newRangeHost(far)
		ts := MustServe(t, firstRange(host, status(http.StatusNotFound)))
		_, _, err := f.Dimensions(t.Context(), ts.URL)
		wantClass(t, err, "http 404")
		equal(t, "requests", ts.requests.Load(), 2)
	})

	t.Run("per-host limit holds across ranges", func(t *testing.T) {
		cfg := testConfig()
		cfg.PerHostConcurrency = 1
		f, _ := rangedFetcher(t, cfg)
		host := newRangeHost(far)
		var inFlight, maxInFlight atomic.Int64
		ts := MustServe(t, func(w http.ResponseWriter, r *http.Request) {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for {
				m := maxInFlight.Load()
				if n <= m || maxInFlight.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			host.ServeHTTP(w, r)
		})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				if _, _, err := f.Dimensions(t.Context(), ts.URL); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		equal(t, "requests", ts.requests.Load(), 8)
		equal(t, "max concurrent requests", maxInFlight.Load(), 1)
	})
}

// If the resource changes between ranges, If-Range makes the host answer
// 200 and the fetcher reads the new version whole, never a mix of two.
func TestFetcher_RangedResourceChanges(t *testing.T) {
	v1 := newRangeHost(photo(t, 64, 48, 100<<10, 300_000))
	v2 := newRangeHost(photo(t, 32, 16, 100<<10, 300_000))
	v2.modTime = v1.modTime.Add(time.Hour)
	ts := MustServe(t, failFirst(1, v1.ServeHTTP, v2.ServeHTTP))
	f, rec := rangedFetcher(t, testConfig())
	w, h, err := f.Dimensions(t.Context(), ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "size", [2]int{w, h}, [2]int{32, 16})
	equal(t, "ranges asked of the new version", fmt.Sprint(v2.asked()), "[bytes=65536-262143 ]")
	v2.mu.Lock()
	equal(t, "If-Range", v2.ifRanges[0], v1.modTime.Format(http.TimeFormat))
	v2.mu.Unlock()
	modes, _ := rec.get()
	equal(t, "modes", fmt.Sprint(modes), "[whole]")
}

// A ranged answer cut short is a broken connection, retried; if the header
// arrived before the cut, the image is fine.
func TestFetcher_RangedTruncated(t *testing.T) {
	body := photo(t, 64, 48, 24<<10, 2_500_000)
	cut := func(n int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			fmt.Fprintf(buf, "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-65535/%d\r\nContent-Length: 65536\r\n\r\n", len(body))
			buf.Write(body[:n])
			buf.Flush()
			conn.Close()
		}
	}
	ok := newRangeHost(body).ServeHTTP
	tests := []struct {
		name     string
		handler  http.HandlerFunc
		class    string
		requests int64
	}{
		{"cut after the header", cut(40000), "", 1},
		{"cut before the header, once", failFirst(1, cut(10000), ok), "", 2},
		{"cut before the header, always", cut(10000), ClassConnection, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := MustServe(t, tt.handler)
			f, _ := rangedFetcher(t, testConfig())
			w, h, err := f.Dimensions(t.Context(), ts.URL)
			if tt.class != "" {
				wantClass(t, err, tt.class)
			} else {
				if err != nil {
					t.Fatal(err)
				}
				equal(t, "size", [2]int{w, h}, [2]int{64, 48})
			}
			equal(t, "requests", ts.requests.Load(), tt.requests)
		})
	}
}

// Ranged answers are drained to their end, so one connection serves many
// photos; whole 2.5 MB bodies are cut off, a connection each.
func TestFetcher_RangedReusesConnections(t *testing.T) {
	body := photo(t, 64, 48, 24<<10, 2_500_000)
	for _, tt := range []struct {
		name  string
		h     http.HandlerFunc
		conns int32
	}{
		{"host honours Range", newRangeHost(body).ServeHTTP, 1},
		{"host ignores Range", serveBytes("image/jpeg", body), 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var conns atomic.Int32
			ts := MustServeUnstarted(t, tt.h)
			ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			ts.Start()
			f := MustNewFetcher(t, testConfig())
			for i := range 5 {
				if w, h, err := f.Dimensions(t.Context(), fmt.Sprintf("%s/%d.jpg", ts.URL, i)); err != nil || w != 64 || h != 48 {
					t.Fatalf("image %d: %dx%d %v", i, w, h, err)
				}
			}
			equal(t, "connections for 5 images", conns.Load(), tt.conns)
		})
	}
}

func TestFetcher_RangesDisabled(t *testing.T) {
	host := newRangeHost(photo(t, 64, 48, 24<<10, 100_000))
	ts := MustServe(t, host.ServeHTTP)
	cfg := testConfig()
	cfg.RangeBytes = -1
	f, rec := rangedFetcher(t, cfg)
	if _, _, err := f.Dimensions(t.Context(), ts.URL); err != nil {
		t.Fatal(err)
	}
	equal(t, "ranges asked", fmt.Sprint(host.asked()), "[]")
	modes, _ := rec.get()
	equal(t, "modes", fmt.Sprint(modes), "[whole]")
}

// The observer hears of calls that read a body, failed ones too, and of no
// others.
func TestFetcher_Observer(t *testing.T) {
	f, rec := rangedFetcher(t, testConfig())
	small := encodeJPEG(t, 8, 8)
	ranged := MustServe(t, newRangeHost(small).ServeHTTP)
	whole := MustServe(t, serveBytes("image/jpeg", small))
	html := MustServe(t, serveBytes("text/html", []byte("<html></html>")))
	missing := MustServe(t, status(http.StatusNotFound))
	for _, u := range []string{ranged.URL, whole.URL, html.URL, missing.URL} {
		f.Dimensions(t.Context(), u)
	}
	modes, read := rec.get()
	equal(t, "modes", fmt.Sprint(modes), "[ranged whole whole]")
	equal(t, "bytes", fmt.Sprint(read), fmt.Sprint([]int64{int64(len(small)), int64(len(small)), 13}))
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in   string
		want contentRange
		ok   bool
	}{
		{"bytes 0-65535/2500000", contentRange{0, 65535, 2500000}, true},
		{"bytes 0-0/1", contentRange{0, 0, 1}, true},
		{"bytes 65536-262143/*", contentRange{65536, 262143, -1}, true},
		{"bytes 0-999999999999999999/*", contentRange{0, 999999999999999999, -1}, true},
		{"bytes */2500000", contentRange{}, false},
		{"bytes 0-65535/65535", contentRange{}, false},
		{"bytes 10-5/100", contentRange{}, false},
		{"bytes 0-65535", contentRange{}, false},
		{"bytes 0-/100", contentRange{}, false},
		{"bytes -5/100", contentRange{}, false},
		{"bytes +0-5/100", contentRange{}, false},
		{"bytes 0-5/-100", contentRange{}, false},
		{"bytes  0-5/100", contentRange{}, false},
		{"Bytes 0-5/100", contentRange{}, false},
		{"bytes 0-5/100 ", contentRange{}, false},
		{"bytes 0-5/1000000000000000000000", contentRange{}, false},
		{"bytes 0x0-5/100", contentRange{}, false},
		{"", contentRange{}, false},
	}
	for _, tt := range tests {
		got, ok := parseContentRange(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseContentRange(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzParseContentRange: whatever is accepted is a sane range, and prints
// back as what was parsed.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-65535/2500000", "bytes 1-2/*", "bytes */10", "bytes 9-3/2", "bytes 0-0/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cr, ok := parseContentRange(s)
		if !ok {
			return
		}
		if cr.first < 0 || cr.last < cr.first || (cr.total >= 0 && cr.last >= cr.total) || cr.total < -1 {
			t.Fatalf("%q accepted as %+v", s, cr)
		}
		total := "*"
		if cr.total >= 0 {
			total = strconv.FormatInt(cr.total, 10)
		}
		back := fmt.Sprintf("bytes %d-%d/%s", cr.first, cr.last, total)
		if !sameDigits(s, back) {
			t.Fatalf("%q parsed as %+v", s, cr)
		}
	})
}

// sameDigits compares two Content-Range values ignoring leading zeros.
func sameDigits(a, b string) bool {
	norm := func(s string) string {
		var out strings.Builder
		num := false
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c >= '0' && c <= '9' {
				if c == '0' && !num && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
					continue
				}
				num = true
			} else {
				num = false
			}
			out.WriteByte(c)
		}
		return out.String()
	}
	return norm(a) == norm(b)
}
