package imagefetch

import (
	"bufio"
	"errors"
	"fmt"
	"image"
	"io"
	"sync"

	// Formats whose headers DecodeConfig can read.
	_ "image/gif"
	_ "image/jpeg"
	_ "image/png"

	_ "golang.org/x/image/bmp"
	_ "golang.org/x/image/tiff"
	_ "golang.org/x/image/webp"
)

// limitedBody feeds a response body to the decoder. It hands out at most
// limit+1 bytes (one more than allowed, so running past the limit is visible)
// and remembers the first error the body itself returned, so a connection
// that breaks mid-body is told apart from an image that is malformed.
type limitedBody struct {
	r     io.Reader
	limit int64
	n     int64 // bytes handed out
	err   error // first non-EOF error from r
}

func (b *limitedBody) Read(p []byte) (int, error) {
	left := b.limit + 1 - b.n
	if left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if err != nil && !errors.Is(err, io.EOF) && b.err == nil {
		b.err = err
	}
	return n, err
}

// exceeded reports whether the body had more than limit bytes.
func (b *limitedBody) exceeded() bool { return b.n > b.limit }

// headerReaders buffer bodies for decodeHeader; DecodeConfig would
// allocate a 4 KiB reader per image otherwise.
var headerReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// decodeHeader reads only as much of body as the format's header needs and
// returns the image dimensions. It never decodes pixels, so a header claiming
// 100000x100000 costs nothing. The returned error is either the body's own
// (transport) error, to be classed by the caller, or an *Error of class
// ClassTooLarge or ClassNotImage.
//
// A decoder that panics on hostile input fails this image, not the process.
func decodeHeader(body io.Reader, maxBytes int64) (width, height int, err error) {
	width, height, _, err = decodeHeaderEnd(body, maxBytes)
	return width, height, err
}

// decodeHeaderEnd is decodeHeader that also returns where in body the
// header ended: the bytes the decoder consumed (read ahead not counted).
func decodeHeaderEnd(body io.Reader, maxBytes int64) (width, height int, end int64, err error) {
	defer func() {
		if r := recover(); r != nil {
			width, height, end, err = 0, 0, 0, newError(ClassNotImage, fmt.Errorf("decoder panic: %v", r))
		}
	}()
	lb := &limitedBody{r: body, limit: maxBytes}
	br := headerReaders.Get().(*bufio.Reader)
	br.Reset(lb)
	defer func() { br.Reset(nil); headerReaders.Put(br) }()
	defer func() { end = lb.n - int64(br.Buffered()) }()
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0xff && magic[1] == markerSOI {
		width, height, err = jpegHeader(br)
	} else {
		var cfg image.Config
		cfg, _, err = image.DecodeConfig(br)
		width, height = cfg.Width, cfg.Height
	}
	switch {
	case err == nil && (width <= 0 || height <= 0):
		return 0, 0, 0, newError(ClassNotImage, errors.New("non-positive dimensions"))
	case err == nil:
		return width, height, 0, nil
	case lb.err != nil:
		return 0, 0, 0, lb.err
	case lb.exceeded():
		return 0, 0, 0, newError(ClassTooLarge, err)
	default:
		return 0, 0, 0, newError(ClassNotImage, err)
	}
}
