package loadgen

import (
	"bytes"
	"image/jpeg"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestMakeImage_Decodes(t *testing.T) {
	tests := []struct {
		name string
		spec imageSpec
		w, h int
	}{
		{"plain, no padding", imageSpec{}, 640, 480},
		{"plain, padded", imageSpec{size: 100_000}, 640, 480},
		{"plain after 24 KiB of metadata", imageSpec{size: 100_000, headerBytes: 24 << 10}, 640, 480},
		{"photo", imageSpec{size: 2_500_000, photo: true}, 4032, 3024},
		{"photo after 24 KiB of metadata", imageSpec{size: 2_500_000, photo: true, headerBytes: 24 << 10}, 4032, 3024},
		{"photo after 200 KiB of metadata", imageSpec{size: 1_000_000, photo: true, headerBytes: 200 << 10}, 4032, 3024},
		{"photo smaller than its header", imageSpec{size: 10, photo: true, headerBytes: 65537 + 3}, 4032, 3024},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := makeImage(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) < tt.spec.size {
				t.Fatalf("%d bytes, want at least %d", len(b), tt.spec.size)
			}
			cfg, err := jpeg.DecodeConfig(bytes.NewReader(b))
			if err != nil || cfg.Width != tt.w || cfg.Height != tt.h {
				t.Fatalf("decodes as %dx%d, %v; want %dx%d", cfg.Width, cfg.Height, err, tt.w, tt.h)
			}
			// The frame header comes after the metadata: the first
			// headerBytes do not hold it.
			if tt.spec.headerBytes > 0 {
				if _, err := jpeg.DecodeConfig(bytes.NewReader(b[:tt.spec.headerBytes])); err == nil {
					t.Fatalf("the first %d bytes already hold the frame header", tt.spec.headerBytes)
				}
			}
		})
	}
}

// A photo's body is incompressible, as a camera's is; a plain image's
// padding is zeros.
func TestMakeImage_PhotoIsHighEntropy(t *testing.T) {
	b, err := makeImage(imageSpec{size: 1 << 20, photo: true})
	if err != nil {
		t.Fatal(err)
	}
	var seen [256]int
	for _, c := range b[len(b)/2:] {
		seen[c]++
	}
	for c, n := range seen {
		if n < len(b)/2/256/2 {
			t.Fatalf("byte %#x appears %d times in the second half", c, n)
		}
	}
}

func TestImageHost_Range(t *testing.T) {
	get := func(t *testing.T, url string, header ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}
	spec := imageSpec{size: 300_000, photo: true, headerBytes: 24 << 10}

	t.Run("honours Range", func(t *testing.T) {
		h, err := startImageHost(spec, 1, false)
		if err != nil {
			t.Fatal(err)
		}
		defer h.close()
		url := h.urls[0] + "/img/1.jpg"
		resp, body := get(t, url, "Range", "bytes=0-65535")
		size := strconv.Itoa(len(h.body))
		if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != "bytes 0-65535/"+size || !bytes.Equal(body, h.body[:65536]) {
			t.Fatalf("%s, Content-Range %q, %d bytes", resp.Status, resp.Header.Get("Content-Range"), len(body))
		}
		resp, body = get(t, url, "Range", "bytes=65536-262143", "If-Range", resp.Header.Get("ETag"))
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, h.body[65536:262144]) {
			t.Fatalf("continuation: %s, %d bytes", resp.Status, len(body))
		}
		if resp, _ := get(t, url, "Range", "bytes=65536-262143", "If-Range", `"other"`); resp.StatusCode != http.StatusOK {
			t.Fatalf("stale If-Range: %s, want the whole body", resp.Status)
		}
		if resp, _ := get(t, h.urls[0]+"/missing/1.jpg"); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("missing: %s", resp.Status)
		}
		waitWritten(t, h, int64(65536+196608+len(h.body)))
		if resp, _ := get(t, url, "Range", "bytes=999999999-"); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			t.Fatalf("past the end: %s", resp.Status)
		}
	})

	t.Run("ignores Range when told to", func(t *testing.T) {
		h, err := startImageHost(spec, 1, true)
		if err != nil {
			t.Fatal(err)
		}
		defer h.close()
		resp, body := get(t, h.urls[0]+"/img/1.jpg", "Range", "bytes=0-65535")
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, h.body) {
			t.Fatalf("%s, %d bytes", resp.Status, len(body))
		}
		waitWritten(t, h, int64(len(h.body)))
	})
}

// waitWritten fails unless the host has written want body bytes once its
// handlers finish: a client can hold the last bytes before the handler's
// Write returns and is counted.
func waitWritten(t *testing.T, h *imageHost, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.bytesWritten.Load() != want {
		if time.Now().After(deadline) {
			t.Fatalf("bytes written %d, want %d", h.bytesWritten.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}
