package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/retailpulse/retailpulse/events"
)

// Default limits of a submission.
const (
	DefaultMaxBodyBytes = 10 << 20 // 10 MiB
	DefaultMaxVisits    = 10_000
	DefaultMaxImages    = 100_000
	DefaultMaxURLLength = 2048
)

// Limits bounds the size of a submission. A field that is zero (or
// negative) takes its default: DefaultMaxVisits, DefaultMaxImages,
// DefaultMaxURLLength.
type Limits struct {
	MaxVisits    int // visits per job
	MaxImages    int // images per job, summed over its visits
	MaxURLLength int // bytes per image URL
}

func (l Limits) withDefaults() Limits {
	if l.MaxVisits <= 0 {
		l.MaxVisits = DefaultMaxVisits
	}
	if l.MaxImages <= 0 {
		l.MaxImages = DefaultMaxImages
	}
	if l.MaxURLLength <= 0 {
		l.MaxURLLength = DefaultMaxURLLength
	}
	return l
}

// DecodeSubmit reads one submit request body from r and validates it. It is
// exported for fuzzing and for reuse by other front ends.
//
// The body must hold exactly one JSON object, optionally followed by
// whitespace:
//
//	{"count": 2, "visits": [{"store_id": "...", "image_url": ["..."], "visit_time": "..."}, ...]}
//
// Rules:
//   - count is a JSON integer literal (2.5, "2", 2e0 and null are refused),
//     not negative, and equal to the number of visits. A job needs at least
//     one visit.
//   - visits is an array of objects; each has store_id and visit_time
//     (strings that are not blank) and image_url (a non-empty array of
//     non-blank strings, each at most lim.MaxURLLength bytes and accepted by
//     checkURL when checkURL is not nil).
//   - A job has at most lim.MaxVisits visits and lim.MaxImages images; a
//     zero field of lim takes its default.
//   - Keys are matched exactly (case-sensitive). Unknown keys are ignored, at
//     the top level and in visits, so clients may send extra metadata. A
//     repeated key takes its last value.
//   - Values are stored as sent: blank-checking trims spaces, the stored
//     strings are not trimmed.
//
// The first problem found is reported, in a message meant for the client
// that names the field and the visit and image index, e.g.
// "visits[1].store_id is required". An error
// from reading r is returned wrapped (so errors.As finds an
// *http.MaxBytesError). The returned job has no SubmittedAt; the caller
// sets it.
func DecodeSubmit(r io.Reader, lim Limits, checkURL func(string) error) (*events.JobSubmitted, error) {
	lim = lim.withDefaults()
	dec := json.NewDecoder(r)
	var top map[string]json.RawMessage
	if err := dec.Decode(&top); err != nil {
		return nil, bodyError(err)
	}
	if top == nil {
		return nil, errors.New("request body must be a JSON object")
	}
	if err := expectEOF(io.MultiReader(dec.Buffered(), r)); err != nil {
		return nil, err
	}

	count, err := decodeCount(top)
	if err != nil {
		return nil, err
	}
	visitFields, err := decodeVisits(top)
	if err != nil {
		return nil, err
	}
	if len(visitFields) > lim.MaxVisits {
		return nil, fmt.Errorf("job has %d visits; the limit is %d", len(visitFields), lim.MaxVisits)
	}
	switch {
	case count < 0:
		return nil, fmt.Errorf("count (%d) must not be negative", count)
	case count == 0 && len(visitFields) == 0:
		return nil, errors.New("count is 0 and there are no visits: nothing to process")
	case count != int64(len(visitFields)):
		return nil, fmt.Errorf("count (%d) does not match number of visits (%d)", count, len(visitFields))
	}

	job := &events.JobSubmitted{Count: len(visitFields), Visits: make([]events.Visit, len(visitFields))}
	images := 0
	for i, raw := range visitFields {
		v, err := decodeVisit(i, raw, lim)
		if err != nil {
			return nil, err
		}
		job.Visits[i] = v
		images += len(v.ImageURLs)
	}
	if images > lim.MaxImages {
		return nil, fmt.Errorf("job has %d images; the limit is %d", images, lim.MaxImages)
	}
	// URLs are checked last, once the job is known to be well formed and
	// within its limits, so a large bad job costs no checkURL calls.
	if checkURL != nil {
		for i, v := range job.Visits {
			for j, u := range v.ImageURLs {
				if err := checkURL(u); err != nil {
					return nil, fmt.Errorf("visits[%d].image_url[%d]: %v", i, j, err)
				}
			}
		}
	}
	return job, nil
}

// bodyError turns an error from decoding the top-level value into a client
// message, or wraps a read error.
func bodyError(err error) error {
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return errors.New("request body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("request body is not valid JSON: unexpected end of input")
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("request body is not valid JSON: %v (at byte %d)", syntaxErr, syntaxErr.Offset)
	case errors.As(err, &typeErr):
		return errors.New("request body must be a JSON object")
	default:
		return fmt.Errorf("read request body: %w", err)
	}
}

// expectEOF reads what follows the JSON object and fails on anything but
// JSON whitespace. It stops at the first other byte, so trailing garbage is
// not read to its end.
func expectEOF(r io.Reader) error {
	br := bufio.NewReader(r)
	for {
		c, err := br.ReadByte()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read request body: %w", err)
		}
		switch c {
		case ' ', '\t', '\n', '\r':
		default:
			return errors.New("request body has data after the JSON object")
		}
	}
}

func decodeCount(top map[string]json.RawMessage) (int64, error) {
	raw, ok := top["count"]
	if !ok {
		return 0, errors.New("count is required")
	}
	if !isIntegerLiteral(raw) {
		return 0, errors.New("count must be an integer")
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, errors.New("count is out of range")
	}
	return n, nil
}

// isIntegerLiteral reports whether raw is a JSON number without fraction or
// exponent. raw comes from the decoder, so it is already valid JSON.
func isIntegerLiteral(raw []byte) bool {
	if len(raw) == 0 {
		return false
	}
	s := raw
	if s[0] == '-' {
		s = s[1:]
	}
	if len(s) == 0 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// decodeVisits returns the fields of each visit. Well-formed input is
// decoded in one pass; otherwise the visits are walked one by one to name
// the first that is not an object.
func decodeVisits(top map[string]json.RawMessage) ([]map[string]json.RawMessage, error) {
	raw, ok := top["visits"]
	if !ok {
		return nil, errors.New("visits is required")
	}
	if kind(raw) != "array" {
		return nil, errors.New("visits must be an array")
	}
	var visits []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &visits); err == nil {
		for i, v := range visits {
			if v == nil { // null
				return nil, fmt.Errorf("visits[%d] must be an object", i)
			}
		}
		return visits, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("visits: %v", err)
	}
	for i, elem := range list {
		if kind(elem) != "object" {
			return nil, fmt.Errorf("visits[%d] must be an object", i)
		}
	}
	return nil, errors.New("visits must be an array of objects")
}

func decodeVisit(i int, fields map[string]json.RawMessage, lim Limits) (events.Visit, error) {
	var v events.Visit
	var err error
	if v.StoreID, err = requiredString(fields, i, "store_id"); err != nil {
		return events.Visit{}, err
	}
	if v.ImageURLs, err = imageURLs(fields, i, lim); err != nil {
		return events.Visit{}, err
	}
	if v.VisitTime, err = requiredString(fields, i, "visit_time"); err != nil {
		return events.Visit{}, err
	}
	return v, nil
}

func requiredString(fields map[string]json.RawMessage, i int, name string) (string, error) {
	raw, ok := fields[name]
	if !ok {
		return "", fmt.Errorf("visits[%d].%s is required", i, name)
	}
	s, ok := stringValue(raw)
	if !ok {
		return "", fmt.Errorf("visits[%d].%s must be a string", i, name)
	}
	if isBlank(s) {
		return "", fmt.Errorf("visits[%d].%s must not be empty", i, name)
	}
	return s, nil
}

func imageURLs(fields map[string]json.RawMessage, i int, lim Limits) ([]string, error) {
	raw, ok := fields["image_url"]
	if !ok {
		return nil, fmt.Errorf("visits[%d].image_url is required", i)
	}
	if kind(raw) != "array" {
		return nil, fmt.Errorf("visits[%d].image_url must be an array of strings", i)
	}
	var urls []string
	if err := json.Unmarshal(raw, &urls); err != nil || slices.ContainsFunc(urls, isBlank) {
		return nil, imageURLError(raw, i)
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("visits[%d].image_url must not be empty", i)
	}
	for j, u := range urls {
		if len(u) > lim.MaxURLLength {
			return nil, fmt.Errorf("visits[%d].image_url[%d] is %d bytes long; the limit is %d", i, j, len(u), lim.MaxURLLength)
		}
	}
	return urls, nil
}

// imageURLError names the first element of an image_url array that is not
// a non-blank string. It walks the elements one by one, so it runs only once
// the one-pass decode has failed.
func imageURLError(raw json.RawMessage, i int) error {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("visits[%d].image_url: %v", i, err)
	}
	for j, elem := range list {
		s, ok := stringValue(elem)
		if !ok {
			return fmt.Errorf("visits[%d].image_url[%d] must be a string", i, j)
		}
		if isBlank(s) {
			return fmt.Errorf("visits[%d].image_url[%d] must not be empty", i, j)
		}
	}
	return fmt.Errorf("visits[%d].image_url must be an array of strings", i)
}

func isBlank(s string) bool { return strings.TrimSpace(s) == "" }

// stringValue decodes raw if it is a JSON string.
func stringValue(raw json.RawMessage) (string, bool) {
	if kind(raw) != "string" {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// kind names the JSON type of a raw value by its first byte. raw comes from
// the decoder, so it is valid JSON.
func kind(raw json.RawMessage) string {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 'n':
		return "null"
	case 't', 'f':
		return "boolean"
	default:
		return "number"
	}
}
