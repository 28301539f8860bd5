package loadgen

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// imageSpec describes the one image the host serves.
type imageSpec struct {
	size        int  // bytes in all (at least what the header needs)
	photo       bool // a camera-like 4032x3024 JPEG with a high-entropy body; else a 640x480 JPEG padded with zeros
	headerBytes int  // metadata (APP1 segments) between SOI and the frame header
}

// imageHost serves one JPEG at /img/<n>.jpg for every n and answers 404
// at /missing/<n>.jpg, on one or more loopback ports (each a distinct host
// to the service's per-host download limit). It honours Range as S3 and
// nginx do (206 with Content-Range, 416, If-Range against its ETag and
// Last-Modified) unless told to ignore it, and counts the body bytes it
// wrote.
type imageHost struct {
	spec         imageSpec
	urls         []string
	body         []byte
	etag         string
	modTime      time.Time
	ignoreRange  bool
	srv          *http.Server
	requests     atomic.Int64
	bytesWritten atomic.Int64
}

// startImageHost starts a host on hosts loopback ports of its choosing.
func startImageHost(spec imageSpec, hosts int, ignoreRange bool) (*imageHost, error) {
	return listenImageHost(spec, slices.Repeat([]string{"127.0.0.1:0"}, hosts), ignoreRange)
}

// listenImageHost starts a host listening on each of addrs.
func listenImageHost(spec imageSpec, addrs []string, ignoreRange bool) (*imageHost, error) {
	body, err := makeImage(spec)
	if err != nil {
		return nil, err
	}
	b := &imageHost{spec: spec, body: body, ignoreRange: ignoreRange, modTime: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		etag: fmt.Sprintf(`"%08x-%x"`, crc32.ChecksumIEEE(body), len(body))}
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serve), ReadHeaderTimeout: 10 * time.Second}
	for _, addr := range addrs {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			b.close()
			return nil, fmt.Errorf("image server: %w", err)
		}
		b.urls = append(b.urls, "http://"+l.Addr().String())
		go b.srv.Serve(l)
	}
	return b, nil
}

// statsPath is where a host reports its counters (hostStats as JSON);
// requests to it are not counted.
const statsPath = "/_stats"

// hostStats is what an image host reports at statsPath: its counters and
// the image it serves.
type hostStats struct {
	Requests       int64 `json:"requests"`
	BytesServed    int64 `json:"bytes_served"`
	ImageBytes     int   `json:"image_bytes"`
	Photo          bool  `json:"photo"`
	HeaderOffsetKB int   `json:"header_offset_kb"`
	HonoursRange   bool  `json:"honours_range"`
}

func (b *imageHost) stats() hostStats {
	return hostStats{Requests: b.requests.Load(), BytesServed: b.bytesWritten.Load(), ImageBytes: len(b.body),
		Photo: b.spec.photo, HeaderOffsetKB: b.spec.headerBytes >> 10, HonoursRange: !b.ignoreRange}
}

func (b *imageHost) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == statsPath {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(b.stats())
		return
	}
	b.requests.Add(1)
	if !strings.HasPrefix(r.URL.Path, "/img/") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	cw := &countingWriter{ResponseWriter: w, n: &b.bytesWritten}
	if b.ignoreRange {
		w.Header().Set("Content-Length", strconv.Itoa(len(b.body)))
		cw.writeChunked(b.body)
		return
	}
	w.Header().Set("ETag", b.etag)
	http.ServeContent(cw, r, "", b.modTime, bytes.NewReader(b.body))
}

func (b *imageHost) close() { b.srv.Close() }

// countingWriter counts the body bytes a handler wrote.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// copyBufs are ReadFrom's buffers, one range's worth each.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// ReadFrom copies src through a pooled 64 KiB buffer. http.ServeContent
// sends a range with io.CopyN, which would otherwise allocate a 32 KiB
// buffer per request and write the range in 32 KiB pieces: most of the
// image host's cost at thousands of ranges a second.
func (c *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{c}, src, *bp)
}

// writeChunked writes p 32 KiB at a time, stopping at the first error, so
// a client that hangs up is charged about what it was sent, not all of p.
func (c *countingWriter) writeChunked(p []byte) {
	for len(p) > 0 {
		n := min(len(p), 32<<10)
		if _, err := c.Write(p[:n]); err != nil {
			return
		}
		p = p[n:]
	}
}

// Dimensions of the images makeImage builds.
const (
	plainWidth, plainHeight = 640, 480
	photoWidth, photoHeight = 4032, 3024
)

// makeImage builds the served JPEG: SOI, spec.headerBytes of APP1
// metadata (as a camera's EXIF block comes before the frame header), then
// the frame header. A plain image is a real 640x480 JPEG padded with zeros
// after its end marker; a photo declares 4032x3024 and its scan is random
// bytes (0xFF stuffed as in entropy-coded data) up to spec.size, as
// incompressible as a camera's.
func makeImage(spec imageSpec) ([]byte, error) {
	w, h := plainWidth, plainHeight
	if spec.photo {
		w, h = 64, 48 // encoded small, then declared photo-sized
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
	var enc bytes.Buffer
	if err := jpeg.Encode(&enc, img, &jpeg.Options{Quality: 85}); err != nil {
		return nil, fmt.Errorf("encode image: %w", err)
	}
	jpg := enc.Bytes()
	rng := rand.New(rand.NewChaCha8([32]byte{'r', 'e', 't', 'a', 'i', 'l', 'p', 'u', 'l', 's', 'e'}))

	out := make([]byte, 0, max(spec.size, len(jpg)+spec.headerBytes)+16)
	out = append(out, jpg[:2]...) // SOI
	out = appendMetadata(out, spec.headerBytes, rng)
	if !spec.photo {
		out = append(out, jpg[2:]...)
		out = append(out, make([]byte, max(0, spec.size-len(out)))...)
	} else {
		head := append([]byte(nil), jpg...)
		sos, err := setFrameSize(head, photoWidth, photoHeight)
		if err != nil {
			return nil, err
		}
		out = append(out, head[2:sos]...)
		sosLen := int(binary.BigEndian.Uint16(jpg[sos+2:]))
		out = append(out, head[sos:sos+2+sosLen]...) // the scan header
		for len(out) < spec.size-2 {
			c := byte(rng.Uint32())
			out = append(out, c)
			if c == 0xFF {
				out = append(out, 0x00)
			}
		}
		out = append(out, 0xFF, 0xD9) // EOI
		w, h = photoWidth, photoHeight
	}
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(out))
	if err != nil || cfg.Width != w || cfg.Height != h {
		return nil, fmt.Errorf("generated image does not decode as %dx%d: %v", w, h, err)
	}
	return out, nil
}

// appendMetadata appends n bytes of APP1 segments ("Exif" and random
// bytes), each at most 65537 bytes with its marker. n < 4 appends none.
func appendMetadata(b []byte, n int, rng *rand.Rand) []byte {
	for n >= 4 {
		seg := min(n, 65537) // marker, then a length that counts itself
		if n-seg > 0 && n-seg < 4 {
			seg -= 4 // leave room for a last segment
		}
		b = append(b, 0xFF, 0xE1)
		b = binary.BigEndian.AppendUint16(b, uint16(seg-2))
		payload := make([]byte, seg-4)
		for i := range payload {
			payload[i] = byte(rng.Uint32())
		}
		copy(payload, "Exif\x00\x00")
		b = append(b, payload...)
		n -= seg
	}
	return b
}

// setFrameSize walks the segments of the JPEG jpg, rewrites the
// dimensions in its baseline frame header (SOF0) and returns the offset of
// its scan header (SOS).
func setFrameSize(jpg []byte, w, h int) (sos int, err error) {
	framed := false
	for i := 2; i+4 <= len(jpg); {
		if jpg[i] != 0xFF {
			break
		}
		marker, n := jpg[i+1], int(binary.BigEndian.Uint16(jpg[i+2:]))
		switch {
		case marker == 0xDA && framed:
			return i, nil
		case marker == 0xC0 && n >= 7 && i+9 <= len(jpg):
			binary.BigEndian.PutUint16(jpg[i+5:], uint16(h))
			binary.BigEndian.PutUint16(jpg[i+7:], uint16(w))
			framed = true
		}
		i += 2 + n
	}
	return 0, errors.New("encoded image has no baseline frame header and scan")
}
