package loadgen

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// imageHost serves one JPEG at /img/<n>.jpg for every n and answers 404
// at /missing/<n>.jpg, on one or more loopback ports (each a distinct host
// to the service's per-host download limit).
type imageHost struct {
	urls     []string
	body     []byte
	srv      *http.Server
	requests atomic.Int64
}

func startImageHost(size, hosts int) (*imageHost, error) {
	body, err := makeJPEG(640, 480, size)
	if err != nil {
		return nil, err
	}
	b := &imageHost{body: body}
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serve), ReadHeaderTimeout: 10 * time.Second}
	for range hosts {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.close()
			return nil, fmt.Errorf("image server: %w", err)
		}
		b.urls = append(b.urls, "http://"+l.Addr().String())
		go b.srv.Serve(l)
	}
	return b, nil
}

func (b *imageHost) serve(w http.ResponseWriter, r *http.Request) {
	b.requests.Add(1)
	if !strings.HasPrefix(r.URL.Path, "/img/") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	w.Header().Set("Content-Length", strconv.Itoa(len(b.body)))
	w.Write(b.body)
}

func (b *imageHost) close() { b.srv.Close() }

// makeJPEG encodes a w x h JPEG and pads it to size bytes after its end
// marker, so a header reader stops long before the padding.
func makeJPEG(w, h, size int) ([]byte, error) {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
		return nil, fmt.Errorf("encode image: %w", err)
	}
	if pad := size - buf.Len(); pad > 0 {
		buf.Write(make([]byte, pad))
	}
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(buf.Bytes()))
	if err != nil || cfg.Width != w || cfg.Height != h {
		return nil, fmt.Errorf("generated image does not decode: %v", err)
	}
	return buf.Bytes(), nil
}
