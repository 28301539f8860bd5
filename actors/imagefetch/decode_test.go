package imagefetch

import (
	"bytes"
	"errors"
	"image"
	"io"
	"testing"
	"testing/iotest"

	"golang.org/x/image/webp"
)

func TestWebPFixture(t *testing.T) {
	// The committed fixture must be a real WebP, not just a plausible header.
	img, err := webp.Decode(bytes.NewReader(webpFixture(t)))
	if err != nil {
		t.Fatalf("full decode: %v", err)
	}
	equal(t, "bounds", img.Bounds(), image.Rect(0, 0, 3, 2))
}

func TestDecodeHeader(t *testing.T) {
	const maxBytes = 1 << 20
	tests := []struct {
		name string
		body []byte
		w, h int
	}{
		{"jpeg", encodeJPEG(t, 640, 480), 640, 480},
		{"png", encodePNG(t, 320, 200), 320, 200},
		{"gif", encodeGIF(t, 17, 9), 17, 9},
		{"bmp", encodeBMP(t, 31, 7), 31, 7},
		{"tiff", encodeTIFF(t, 12, 34), 12, 34},
		{"webp", webpFixture(t), 3, 2},
		{"png header claiming 100000x100000", pngHeaderOnly(100000, 100000), 100000, 100000},
		{"gif header claiming 65535x65535", gifHeaderOnly(65535, 65535), 65535, 65535},
		{"png followed by more than maxBytes", append(encodePNG(t, 5, 6), make([]byte, 2*maxBytes)...), 5, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, h, err := decodeHeader(bytes.NewReader(tt.body), maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "width", w, tt.w)
			equal(t, "height", h, tt.h)
		})
	}
}

func TestDecodeHeader_ReadsOnlyTheHeader(t *testing.T) {
	// A 100000x100000 header followed by an endless body: decoding must stop
	// after the header, reading a few KiB at most (bufio's read-ahead).
	body := &countingReader{r: io.MultiReader(bytes.NewReader(pngHeaderOnly(100000, 100000)), zeros{})}
	w, h, err := decodeHeader(body, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "width", w, 100000)
	equal(t, "height", h, 100000)
	if body.n > 64<<10 {
		t.Fatalf("read %d bytes for a 33-byte header", body.n)
	}
}

func TestDecodeHeader_Errors(t *testing.T) {
	const maxBytes = 64 << 10
	jpg := encodeJPEG(t, 8, 8)
	// JPEG decoders skip non-marker bytes after SOI, so a long run of junk
	// keeps the decoder reading: the cap must stop it.
	junkJPEG := append(append(append([]byte{}, jpg[:2]...), make([]byte, 2*maxBytes)...), jpg[2:]...)

	tests := []struct {
		name  string
		body  []byte
		class string
	}{
		{"html", []byte("<!doctype html><html><body>hello</body></html>"), ClassNotImage},
		{"empty", nil, ClassNotImage},
		{"truncated png", encodePNG(t, 10, 10)[:10], ClassNotImage},
		{"truncated jpeg", jpg[:20], ClassNotImage},
		{"zero width png", pngHeaderOnly(0, 10), ClassNotImage},
		{"zero size gif", gifHeaderOnly(0, 0), ClassNotImage},
		{"junk past the cap", junkJPEG, ClassTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := decodeHeader(bytes.NewReader(tt.body), maxBytes)
			wantClass(t, err, tt.class)
		})
	}
}

func TestDecodeHeader_BodyErrorIsNotClassed(t *testing.T) {
	// A body that breaks is the transport's failure (retryable), not a
	// malformed image.
	broken := errors.New("connection reset")
	body := io.MultiReader(bytes.NewReader(encodePNG(t, 4, 4)[:12]), iotest.ErrReader(broken))
	_, _, err := decodeHeader(body, 1<<20)
	if !errors.Is(err, broken) || isClassed(err) {
		t.Fatalf("err = %v, want the body's own error", err)
	}
}

func TestDecodeHeader_DecoderPanic(t *testing.T) {
	// A format registered only in this test binary whose decoder panics,
	// standing in for a decoder bug that hostile bytes could trigger.
	image.RegisterFormat("panics", "PANIC!", nil, func(io.Reader) (image.Config, error) {
		panic("decoder bug")
	})
	_, _, err := decodeHeader(bytes.NewReader([]byte("PANIC!....")), 1<<20)
	wantClass(t, err, ClassNotImage)
}

// FuzzDecodeHeader: no input makes decodeHeader panic or return anything but
// positive dimensions or a not-an-image / too-large class.
func FuzzDecodeHeader(f *testing.F) {
	for _, b := range [][]byte{
		encodeJPEG(f, 16, 9), encodePNG(f, 4, 3), encodeGIF(f, 5, 5), encodeBMP(f, 3, 1),
		encodeTIFF(f, 2, 2), webpFixture(f), pngHeaderOnly(100000, 100000), gifHeaderOnly(1, 1),
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		w, h, err := decodeHeader(bytes.NewReader(b), 1<<16)
		if err == nil {
			if w <= 0 || h <= 0 {
				t.Fatalf("accepted %dx%d", w, h)
			}
			return
		}
		if c := Reason(err); c != ClassNotImage && c != ClassTooLarge {
			t.Fatalf("class %q (%v)", c, err)
		}
	})
}

func BenchmarkDecodeConfig(b *testing.B) {
	formats := []struct {
		name string
		body []byte
	}{
		{"jpeg", encodeJPEG(b, 640, 480)},
		{"png", encodePNG(b, 640, 480)},
		{"gif", encodeGIF(b, 640, 480)},
		{"webp", webpFixture(b)},
	}
	for _, fm := range formats {
		b.Run(fm.name, func(b *testing.B) {
			b.ReportAllocs()
			r := bytes.NewReader(fm.body)
			for b.Loop() {
				r.Reset(fm.body)
				if _, _, err := image.DecodeConfig(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
