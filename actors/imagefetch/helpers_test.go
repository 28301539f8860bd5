package imagefetch

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
)

// testConfig is a loopback-friendly config with small bounds, so failures
// show up quickly but nothing depends on the machine being fast.
func testConfig() Config {
	return Config{
		AllowPrivateNetworks: true,
		ConnectTimeout:       2 * time.Second,
		TLSTimeout:           2 * time.Second,
		HeaderTimeout:        5 * time.Second,
		AttemptTimeout:       5 * time.Second,
		TotalTimeout:         10 * time.Second,
		BackoffBase:          time.Millisecond,
		BackoffMax:           5 * time.Millisecond,
		MaxRetryAfter:        50 * time.Millisecond,
	}
}

// MustNewFetcher returns a Fetcher closed at the end of the test.
func MustNewFetcher(tb testing.TB, cfg Config) *Fetcher {
	tb.Helper()
	f := New(cfg)
	tb.Cleanup(f.Close)
	return f
}

// testServer is an httptest server that counts requests.
type testServer struct {
	*httptest.Server
	requests atomic.Int64
}

// MustServe starts a loopback server whose handler is h, counting requests.
func MustServe(tb testing.TB, h http.HandlerFunc) *testServer {
	tb.Helper()
	ts := &testServer{}
	ts.Server = httptest.NewUnstartedServer(ts.count(h))
	ts.Start()
	tb.Cleanup(ts.Close)
	return ts
}

// MustServeUnstarted is MustServe for servers that need setup (TLS, HTTP/2)
// before Start.
func MustServeUnstarted(tb testing.TB, h http.HandlerFunc) *testServer {
	tb.Helper()
	ts := &testServer{}
	ts.Server = httptest.NewUnstartedServer(ts.count(h))
	tb.Cleanup(ts.Close)
	return ts
}

// serveOn is MustServe on a given listen address, e.g. "127.0.0.2:0".
func serveOn(tb testing.TB, addr string, h http.HandlerFunc) (*testServer, error) {
	tb.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	ts := &testServer{}
	ts.Server = httptest.NewUnstartedServer(ts.count(h))
	ts.Listener.Close()
	ts.Listener = l
	ts.Start()
	tb.Cleanup(ts.Close)
	return ts, nil
}

func (ts *testServer) count(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ts.requests.Add(1)
		h(w, r)
	}
}

// hang blocks until the client goes away. Tests pass t.Context() to the
// fetcher, so that happens before the server's cleanup waits for handlers;
// the backstop only stops a bug from wedging the suite.
func hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(20 * time.Second):
	}
}

// serveBytes answers every request with body.
func serveBytes(contentType string, body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Write(body)
	}
}

// failFirst answers the first n requests with fail and the rest with ok.
func failFirst(n int64, fail, ok http.HandlerFunc) http.HandlerFunc {
	var seen atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) {
		if seen.Add(1) <= n {
			fail(w, r)
			return
		}
		ok(w, r)
	}
}

func status(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) }
}

// sleepRecorder replaces Fetcher.sleep: it records each wait and returns at
// once, so tests can check backoff without spending it.
type sleepRecorder struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (s *sleepRecorder) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.delays = append(s.delays, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleepRecorder) get() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.delays...)
}

// checkFor polls f every interval until it returns nil or total passes.
func checkFor(tb testing.TB, total, interval time.Duration, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met after %v: %v", total, err)
		}
		time.Sleep(interval)
	}
}

// wantClass fails unless err is an *Error of class want whose text is the
// class alone.
func wantClass(tb testing.TB, err error, want string) {
	tb.Helper()
	var fe *Error
	if !errors.As(err, &fe) {
		tb.Fatalf("error = %v (%T), want *Error of class %q", err, err, want)
	}
	if fe.Class != want || err.Error() != want || Reason(err) != want {
		tb.Fatalf("class = %q, Error() = %q, Reason = %q, want %q (cause: %v)", fe.Class, err.Error(), Reason(err), want, fe.Err)
	}
}

func equal[T comparable](tb testing.TB, name string, got, want T) {
	tb.Helper()
	if got != want {
		tb.Fatalf("%s = %v, want %v", name, got, want)
	}
}

func testImage(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x + y), 0xff})
		}
	}
	return img
}

func encodeJPEG(tb testing.TB, w, h int) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, testImage(w, h), nil); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func encodePNG(tb testing.TB, w, h int) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, testImage(w, h)); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func encodeGIF(tb testing.TB, w, h int) []byte {
	tb.Helper()
	var buf bytes.Buffer
	img := image.NewPaletted(image.Rect(0, 0, w, h), palette.Plan9)
	if err := gif.Encode(&buf, img, nil); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func encodeBMP(tb testing.TB, w, h int) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := bmp.Encode(&buf, testImage(w, h)); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func encodeTIFF(tb testing.TB, w, h int) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := tiff.Encode(&buf, testImage(w, h), nil); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// webpFixture is a 3x2 lossless WebP: golang.org/x/image has no encoder.
func webpFixture(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile("testdata/3x2.lossless.webp")
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// pngHeaderOnly is a PNG signature and IHDR claiming w x h truecolor pixels,
// with no image data at all: a decompression bomb for anything that decodes.
func pngHeaderOnly(w, h uint32) []byte {
	ihdr := make([]byte, 0, 17)
	ihdr = append(ihdr, "IHDR"...)
	ihdr = binary.BigEndian.AppendUint32(ihdr, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, 8, 2, 0, 0, 0) // 8-bit truecolor, deflate, no filter, no interlace

	b := []byte("\x89PNG\r\n\x1a\n")
	b = binary.BigEndian.AppendUint32(b, 13)
	b = append(b, ihdr...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(ihdr))
}

// gifHeaderOnly is a GIF logical screen descriptor claiming w x h, no frames.
func gifHeaderOnly(w, h uint16) []byte {
	b := []byte("GIF89a")
	b = binary.LittleEndian.AppendUint16(b, w)
	b = binary.LittleEndian.AppendUint16(b, h)
	return append(b, 0, 0, 0) // no global color table
}
