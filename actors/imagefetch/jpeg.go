package imagefetch

import (
	"bufio"
	"errors"
	"io"
)

// JPEG markers read by jpegHeader (ITU T.81, Table B.1).
const (
	markerSOF0  = 0xc0 // baseline
	markerSOF1  = 0xc1 // extended sequential
	markerSOF2  = 0xc2 // progressive
	markerDHT   = 0xc4
	markerRST0  = 0xd0
	markerRST7  = 0xd7
	markerSOI   = 0xd8
	markerEOI   = 0xd9
	markerSOS   = 0xda
	markerDQT   = 0xdb
	markerDRI   = 0xdd
	markerAPP0  = 0xe0
	markerAPP14 = 0xee
	markerAPP15 = 0xef
	markerCOM   = 0xfe
)

var (
	errJPEGNoSOI       = errors.New("jpeg: missing SOI marker")
	errJPEGShortSeg    = errors.New("jpeg: short segment length")
	errJPEGMultiSOF    = errors.New("jpeg: multiple SOF markers")
	errJPEGNoSOF       = errors.New("jpeg: missing SOF marker")
	errJPEGNoSOS       = errors.New("jpeg: missing SOS marker")
	errJPEGUnknown     = errors.New("jpeg: unknown marker")
	errJPEGUnsupported = errors.New("jpeg: unsupported marker")
	errJPEGComponents  = errors.New("jpeg: unsupported number of components")
	errJPEGPrecision   = errors.New("jpeg: unsupported precision")
	errJPEGSOFLength   = errors.New("jpeg: SOF has wrong length")
	errJPEGRepeatedID  = errors.New("jpeg: repeated component identifier")
	errJPEGTq          = errors.New("jpeg: bad Tq value")
	errJPEGSubsampling = errors.New("jpeg: unsupported luma/chroma subsampling ratio")
)

// jpegHeader returns the dimensions in a JPEG's frame header, reading r
// only up to the header. It accepts exactly the files image/jpeg's
// DecodeConfig accepts, with the same dimensions (FuzzJPEGHeader checks
// this against the standard library), without allocating: DecodeConfig
// allocates a whole decoder, about 14 KB, per call. As DecodeConfig does,
// it returns at the frame header when a JFIF APP0 segment came first, and
// otherwise reads on to the first scan, so a second frame header or an
// unknown marker before it fails the file. A body that ends early returns
// io.ErrUnexpectedEOF (or r's own error).
func jpegHeader(r *bufio.Reader) (width, height int, err error) {
	var tmp [2]byte
	if err := readFull(r, tmp[:]); err != nil {
		return 0, 0, err
	}
	if tmp[0] != 0xff || tmp[1] != markerSOI {
		return 0, 0, errJPEGNoSOI
	}
	nComp, jfif := 0, false
	for {
		if err := readFull(r, tmp[:]); err != nil {
			return 0, 0, err
		}
		for tmp[0] != 0xff { // extraneous bytes between segments are skipped
			tmp[0] = tmp[1]
			if tmp[1], err = readByte(r); err != nil {
				return 0, 0, err
			}
		}
		marker := tmp[1]
		if marker == 0 {
			continue // "\xff\x00" is extraneous data too
		}
		for marker == 0xff { // fill bytes before a marker
			if marker, err = readByte(r); err != nil {
				return 0, 0, err
			}
		}
		if marker == markerEOI {
			return 0, 0, errJPEGNoSOS
		}
		if markerRST0 <= marker && marker <= markerRST7 {
			continue // a stray restart marker has no length
		}
		if err := readFull(r, tmp[:]); err != nil {
			return 0, 0, err
		}
		n := int(tmp[0])<<8 + int(tmp[1]) - 2
		if n < 0 {
			return 0, 0, errJPEGShortSeg
		}
		switch {
		case marker == markerSOF0 || marker == markerSOF1 || marker == markerSOF2:
			if nComp != 0 {
				return 0, 0, errJPEGMultiSOF
			}
			if width, height, nComp, err = jpegSOF(r, n); err != nil {
				return 0, 0, err
			}
			if jfif {
				return width, height, nil
			}
		case marker == markerSOS:
			if nComp == 0 {
				return 0, 0, errJPEGNoSOF
			}
			return width, height, nil
		case marker == markerDHT || marker == markerDQT || marker == markerDRI:
			err = skip(r, n)
		case marker == markerAPP0 && n >= 5:
			var id [5]byte
			if err := readFull(r, id[:]); err != nil {
				return 0, 0, err
			}
			jfif = id == [5]byte{'J', 'F', 'I', 'F', 0}
			err = skip(r, n-5)
		case markerAPP0 <= marker && marker <= markerAPP15 || marker == markerCOM:
			err = skip(r, n) // APP14 (Adobe) only tells the color model apart
		case marker < markerSOF0:
			err = errJPEGUnknown
		default:
			err = errJPEGUnsupported
		}
		if err != nil {
			return 0, 0, err
		}
	}
}

// jpegSOF reads a frame header's n bytes and checks them as image/jpeg
// does: 1, 3 or 4 components of 8-bit precision with distinct identifiers
// and the subsampling ratios it decodes.
func jpegSOF(r *bufio.Reader, n int) (width, height, nComp int, err error) {
	switch n {
	case 6 + 3*1, 6 + 3*3, 6 + 3*4:
		nComp = (n - 6) / 3
	default:
		return 0, 0, 0, errJPEGComponents
	}
	var b [6 + 3*4]byte
	if err := readFull(r, b[:n]); err != nil {
		return 0, 0, 0, err
	}
	if b[0] != 8 {
		return 0, 0, 0, errJPEGPrecision
	}
	height, width = int(b[1])<<8|int(b[2]), int(b[3])<<8|int(b[4])
	if int(b[5]) != nComp {
		return 0, 0, 0, errJPEGSOFLength
	}
	var hs, vs [4]int
	for i := range nComp {
		c := b[6+3*i]
		for j := range i {
			if b[6+3*j] == c {
				return 0, 0, 0, errJPEGRepeatedID
			}
		}
		if b[8+3*i] > 3 {
			return 0, 0, 0, errJPEGTq
		}
		hv := b[7+3*i]
		h, v := int(hv>>4), int(hv&0x0f)
		if h < 1 || h > 4 || v < 1 || v > 4 || h == 3 || v == 3 {
			return 0, 0, 0, errJPEGSubsampling
		}
		switch nComp {
		case 1:
			h, v = 1, 1 // one component is never subsampled
		case 3: // Y's ratio a multiple of the chroma's, Cb's equal to Cr's
			if i == 0 && v == 4 ||
				i == 1 && (hs[0]%h != 0 || vs[0]%v != 0) ||
				i == 2 && (hs[1] != h || vs[1] != v) {
				return 0, 0, 0, errJPEGSubsampling
			}
		case 4: // [0x11 0x11 0x11 0x11] or [0x22 0x11 0x11 0x22]
			if i == 0 && hv != 0x11 && hv != 0x22 ||
				(i == 1 || i == 2) && hv != 0x11 ||
				i == 3 && (hs[0] != h || vs[0] != v) {
				return 0, 0, 0, errJPEGSubsampling
			}
		}
		hs[i], vs[i] = h, v
	}
	return width, height, nComp, nil
}

// readFull reads len(p) bytes; an end before them is io.ErrUnexpectedEOF.
func readFull(r *bufio.Reader, p []byte) error {
	if _, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}

func readByte(r *bufio.Reader) (byte, error) {
	c, err := r.ReadByte()
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return c, err
}

// skip discards n bytes; an end before them is io.ErrUnexpectedEOF.
func skip(r *bufio.Reader, n int) error {
	if _, err := r.Discard(n); err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}
