package imagefetch

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"image/jpeg"
	"testing"
)

// seg is a JPEG marker segment: 0xFF, marker, length, payload.
func seg(marker byte, payload ...byte) []byte {
	b := []byte{0xff, marker}
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)+2))
	return append(b, payload...)
}

// sof is a frame header segment of the given marker, precision and size,
// with comps as (id, h<<4|v, tq) triples.
func sof(marker, precision byte, w, h int, comps ...[3]byte) []byte {
	p := []byte{precision, byte(h >> 8), byte(h), byte(w >> 8), byte(w), byte(len(comps))}
	for _, c := range comps {
		p = append(p, c[:]...)
	}
	return seg(marker, p...)
}

func jpegOf(parts ...[]byte) []byte {
	b := []byte{0xff, markerSOI}
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

var (
	ycc420 = [][3]byte{{1, 0x22, 0}, {2, 0x11, 1}, {3, 0x11, 1}}
	sos    = seg(markerSOS, 3, 1, 0, 2, 0x11, 3, 0x11, 0, 63, 0)
	jfif   = seg(markerAPP0, 'J', 'F', 'I', 'F', 0, 1, 2, 0, 0, 1, 0, 1, 0, 0)
	exif   = seg(0xe1, append([]byte("Exif\x00\x00"), bytes.Repeat([]byte{0xab}, 5000)...)...)
)

// stdJPEG is image/jpeg's answer for b; a panic is a refusal.
func stdJPEG(b []byte) (w, h int, ok bool) {
	defer func() {
		if recover() != nil {
			w, h, ok = 0, 0, false
		}
	}()
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(b))
	return cfg.Width, cfg.Height, err == nil
}

func ourJPEG(b []byte) (w, h int, ok bool) {
	w, h, err := jpegHeader(bufio.NewReader(bytes.NewReader(b)))
	return w, h, err == nil
}

// agree fails t unless jpegHeader and image/jpeg accept the same b with
// the same dimensions; it returns whether they accepted it.
func agree(t testing.TB, name string, b []byte) bool {
	t.Helper()
	w, h, ok := ourJPEG(b)
	sw, sh, sok := stdJPEG(b)
	if ok != sok || w != sw || h != sh {
		t.Fatalf("%s: jpegHeader %dx%d accepted=%v; image/jpeg %dx%d accepted=%v", name, w, h, ok, sw, sh, sok)
	}
	return ok
}

func TestJPEGHeader_AgreesWithTheStandardLibrary(t *testing.T) {
	base := sof(markerSOF0, 8, 640, 480, ycc420...)
	tests := []struct {
		name   string
		body   []byte
		accept bool
	}{
		{"encoded by image/jpeg", encodeJPEG(t, 640, 480), true},
		{"baseline", jpegOf(base, sos), true},
		{"extended sequential", jpegOf(sof(markerSOF1, 8, 3, 2, ycc420...), sos), true},
		{"progressive", jpegOf(sof(markerSOF2, 8, 3, 2, ycc420...), sos), true},
		{"lossless is not decoded", jpegOf(sof(0xc3, 8, 3, 2, ycc420...), sos), false},
		{"arithmetic coding is not decoded", jpegOf(sof(0xc9, 8, 3, 2, ycc420...), sos), false},
		{"gray", jpegOf(sof(markerSOF0, 8, 7, 5, [3]byte{1, 0x21, 0}), sos), true},
		{"CMYK", jpegOf(sof(markerSOF0, 8, 7, 5, [3]byte{1, 0x11, 0}, [3]byte{2, 0x11, 0}, [3]byte{3, 0x11, 0}, [3]byte{4, 0x11, 0}), sos), true},
		{"YCbCrK 2211", jpegOf(sof(markerSOF0, 8, 7, 5, [3]byte{1, 0x22, 0}, [3]byte{2, 0x11, 0}, [3]byte{3, 0x11, 0}, [3]byte{4, 0x22, 0}), sos), true},
		{"YCbCrK with K unlike Y", jpegOf(sof(markerSOF0, 8, 7, 5, [3]byte{1, 0x22, 0}, [3]byte{2, 0x11, 0}, [3]byte{3, 0x11, 0}, [3]byte{4, 0x11, 0}), sos), false},
		{"two components", jpegOf(sof(markerSOF0, 8, 7, 5, [3]byte{1, 0x11, 0}, [3]byte{2, 0x11, 0}), sos), false},
		{"12-bit precision", jpegOf(sof(markerSOF0, 12, 3, 2, ycc420...), sos), false},
		{"repeated component id", jpegOf(sof(markerSOF0, 8, 3, 2, [3]byte{1, 0x11, 0}, [3]byte{1, 0x11, 0}, [3]byte{3, 0x11, 0}), sos), false},
		{"bad Tq", jpegOf(sof(markerSOF0, 8, 3, 2, [3]byte{1, 0x11, 4}, [3]byte{2, 0x11, 0}, [3]byte{3, 0x11, 0}), sos), false},
		{"subsampling 3", jpegOf(sof(markerSOF0, 8, 3, 2, [3]byte{1, 0x31, 0}, [3]byte{2, 0x11, 0}, [3]byte{3, 0x11, 0}), sos), false},
		{"Y 4 high", jpegOf(sof(markerSOF0, 8, 3, 2, [3]byte{1, 0x14, 0}, [3]byte{2, 0x11, 0}, [3]byte{3, 0x11, 0}), sos), false},
		{"Cb not dividing Y", jpegOf(sof(markerSOF0, 8, 3, 2, [3]byte{1, 0x11, 0}, [3]byte{2, 0x21, 0}, [3]byte{3, 0x21, 0}), sos), false},
		{"Cr unlike Cb", jpegOf(sof(markerSOF0, 8, 3, 2, [3]byte{1, 0x22, 0}, [3]byte{2, 0x11, 0}, [3]byte{3, 0x21, 0}), sos), false},
		{"component count unlike length", jpegOf(seg(markerSOF0, 8, 0, 2, 0, 3, 1, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0), sos), false},
		{"zero height is read", jpegOf(sof(markerSOF0, 8, 3, 0, ycc420...), sos), true},
		{"metadata first", jpegOf(exif, exif, seg(markerCOM, 'h', 'i'), base, sos), true},
		{"JFIF: done at the frame header", jpegOf(jfif, base), true},
		{"JFIF: what follows the frame is not read", jpegOf(jfif, base, []byte{0xff, 0x01, 0, 2}), true},
		{"no JFIF: a second frame header", jpegOf(base, base, sos), false},
		{"no JFIF: an unknown marker after the frame", jpegOf(base, []byte{0xff, 0x01, 0, 2}, sos), false},
		{"no JFIF: an unsupported marker after the frame", jpegOf(base, seg(0xc8), sos), false},
		{"no JFIF: end of image before the scan", jpegOf(base, []byte{0xff, markerEOI}), false},
		{"no JFIF: the body ends before the scan", jpegOf(base), false},
		{"an APP0 that is not JFIF", jpegOf(seg(markerAPP0, 'J', 'F', 'X', 'X', 0), base, sos), true},
		{"a short APP0", jpegOf(seg(markerAPP0, 'J'), base, sos), true},
		{"Adobe APP14", jpegOf(seg(markerAPP14, 'A', 'd', 'o', 'b', 'e', 0, 100, 0, 0, 0, 0, 1), base, sos), true},
		{"tables before the frame", jpegOf(seg(markerDQT, make([]byte, 65)...), seg(markerDHT, make([]byte, 17)...), seg(markerDRI, 0, 4), base, sos), true},
		{"fill bytes before markers", jpegOf([]byte{0xff, 0xff, 0xff}, base, []byte{0xff}, sos), true},
		{"extraneous bytes between segments", jpegOf([]byte{1, 2, 3}, base, []byte{0xff, 0x00, 9}, sos), true},
		{"a stray restart marker", jpegOf([]byte{0xff, markerRST0 + 3}, base, sos), true},
		{"a scan before the frame", jpegOf(sos, base), false},
		{"a segment length below 2", jpegOf([]byte{0xff, 0xe1, 0, 1}, base, sos), false},
		{"a frame header of the wrong length", jpegOf(seg(markerSOF0, 8, 0, 2, 0, 3, 1), sos), false},
		{"no SOI", append([]byte{0xff, 0xd9}, base...), false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := agree(t, tt.name, tt.body); got != tt.accept {
				t.Fatalf("accepted = %v, want %v", got, tt.accept)
			}
		})
	}
}

// Every prefix of a valid file is answered as image/jpeg answers it.
func TestJPEGHeader_AgreesOnEveryTruncation(t *testing.T) {
	for i, b := range [][]byte{
		encodeJPEG(t, 33, 17),
		jpegOf(seg(0xe1, []byte("Exif\x00\x00abc")...), []byte{0xff, 0xff}, sof(markerSOF2, 8, 9, 9, ycc420...), sos),
		jpegOf(jfif, sof(markerSOF0, 8, 9, 9, [3]byte{1, 0x11, 0})),
	} {
		for n := range len(b) + 1 {
			agree(t, fmt.Sprintf("file %d cut at %d", i, n), b[:n])
		}
	}
}

// FuzzJPEGHeader checks jpegHeader against image/jpeg on any input.
func FuzzJPEGHeader(f *testing.F) {
	base := sof(markerSOF0, 8, 640, 480, ycc420...)
	for _, b := range [][]byte{
		encodeJPEG(f, 16, 9),
		jpegOf(base, sos),
		jpegOf(jfif, base),
		jpegOf(exif, base, sos),
		jpegOf(base, base, sos),
		jpegOf([]byte{1, 0xff, 0xff, 0xff, 0, markerRST0}, base, sos),
		jpegOf(sof(markerSOF2, 8, 1, 1, [3]byte{1, 0x22, 0}, [3]byte{2, 0x11, 0}, [3]byte{3, 0x11, 0}, [3]byte{4, 0x22, 0}), sos),
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		agree(t, "input", b)
	})
}

func BenchmarkJPEGHeader(b *testing.B) {
	body := encodeJPEG(b, 640, 480)
	r := bytes.NewReader(body)
	br := bufio.NewReader(r)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(body)
		br.Reset(r)
		if _, _, err := jpegHeader(br); err != nil {
			b.Fatal(err)
		}
	}
}
