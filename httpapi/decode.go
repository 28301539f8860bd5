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
	"unicode/utf8"

	"github.com/retailpulse/retailpulse/events"
)

// Default limits of a submission.
const (
	DefaultMaxBodyBytes = 10 << 20 // 10 MiB
	DefaultMaxVisits    = 10_000
	DefaultMaxImages    = 100_000
	DefaultMaxURLLength = 2048
	// DefaultMaxStoreIDLength and DefaultMaxVisitTimeLength are in
	// characters (Unicode code points).
	DefaultMaxStoreIDLength   = 128
	DefaultMaxVisitTimeLength = 64
)

// Limits bounds the size of a submission. A field that is zero (or
// negative) takes its default: DefaultMaxVisits, DefaultMaxImages,
// DefaultMaxURLLength, DefaultMaxStoreIDLength, DefaultMaxVisitTimeLength.
type Limits struct {
	MaxVisits          int // visits per job
	MaxImages          int // images per job, summed over its visits
	MaxURLLength       int // bytes per image URL
	MaxStoreIDLength   int // characters per store_id
	MaxVisitTimeLength int // characters per visit_time
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
	if l.MaxStoreIDLength <= 0 {
		l.MaxStoreIDLength = DefaultMaxStoreIDLength
	}
	if l.MaxVisitTimeLength <= 0 {
		l.MaxVisitTimeLength = DefaultMaxVisitTimeLength
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
//     (strings that are not blank, at most lim.MaxStoreIDLength and
//     lim.MaxVisitTimeLength characters) and image_url (a non-empty array of
//     non-blank strings, each at most lim.MaxURLLength bytes and accepted by
//     checkURL when checkURL is not nil).
//   - A job has at most lim.MaxVisits visits and lim.MaxImages images; a
//     zero field of lim takes its default.
//   - Keys are matched exactly (case-sensitive), after unescaping. Unknown
//     keys are ignored, at the top level and in visits, so clients may send
//     extra metadata. A key repeated in the top-level object or in a visit
//     is refused (e.g. `visits[0] has duplicate key "store_id"`), so no two
//     JSON parsers can read an accepted body differently; inside ignored
//     values repeats are not checked.
//   - store_id must not start or end with whitespace (unicode.IsSpace): such
//     an id would name no store. Other values are stored as sent:
//     blank-checking trims spaces, the stored strings are not trimmed.
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
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, bodyError(err)
	}
	if kind(raw) != "object" {
		return nil, errors.New("request body must be a JSON object")
	}
	if err := expectEOF(io.MultiReader(dec.Buffered(), r)); err != nil {
		return nil, err
	}
	top, err := objectFields(raw, nil)
	if err != nil {
		return nil, err
	}
	if k, dup := duplicateKey(top); dup {
		return nil, fmt.Errorf("request body has duplicate key %s", quoteKey(k))
	}

	count, err := decodeCount(top)
	if err != nil {
		return nil, err
	}
	visitObjects, err := decodeVisits(top)
	if err != nil {
		return nil, err
	}
	if len(visitObjects) > lim.MaxVisits {
		return nil, fmt.Errorf("job has %d visits; the limit is %d", len(visitObjects), lim.MaxVisits)
	}
	switch {
	case count < 0:
		return nil, fmt.Errorf("count (%d) must not be negative", count)
	case count == 0 && len(visitObjects) == 0:
		return nil, errors.New("count is 0 and there are no visits: nothing to process")
	case count != int64(len(visitObjects)):
		return nil, fmt.Errorf("count (%d) does not match number of visits (%d)", count, len(visitObjects))
	}

	job := &events.JobSubmitted{Count: len(visitObjects), Visits: make([]events.Visit, len(visitObjects))}
	images := 0
	var fields []field // reused: each visit's fields are done with before the next
	for i, raw := range visitObjects {
		var v events.Visit
		v, fields, err = decodeVisit(i, raw, fields[:0], lim)
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

func decodeCount(top []field) (int64, error) {
	raw, ok := lookup(top, "count")
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

// decodeVisits returns the raw object of each visit.
func decodeVisits(top []field) ([]json.RawMessage, error) {
	raw, ok := lookup(top, "visits")
	if !ok {
		return nil, errors.New("visits is required")
	}
	if kind(raw) != "array" {
		return nil, errors.New("visits must be an array")
	}
	visits, err := arrayElems(raw)
	if err != nil {
		return nil, err
	}
	for i, v := range visits {
		if kind(v) != "object" {
			return nil, fmt.Errorf("visits[%d] must be an object", i)
		}
	}
	return visits, nil
}

// decodeVisit decodes visit i from its raw object, using buf for its
// fields; it returns buf for reuse.
func decodeVisit(i int, raw json.RawMessage, buf []field, lim Limits) (events.Visit, []field, error) {
	fields, err := objectFields(raw, buf)
	if err != nil {
		return events.Visit{}, buf, err
	}
	if k, dup := duplicateKey(fields); dup {
		return events.Visit{}, fields, fmt.Errorf("visits[%d] has duplicate key %s", i, quoteKey(k))
	}
	var v events.Visit
	if v.StoreID, err = requiredString(fields, i, "store_id", lim.MaxStoreIDLength); err != nil {
		return events.Visit{}, fields, err
	}
	if strings.TrimSpace(v.StoreID) != v.StoreID {
		return events.Visit{}, fields, fmt.Errorf("visits[%d].store_id has leading or trailing whitespace", i)
	}
	if v.ImageURLs, err = imageURLs(fields, i, lim); err != nil {
		return events.Visit{}, fields, err
	}
	if v.VisitTime, err = requiredString(fields, i, "visit_time", lim.MaxVisitTimeLength); err != nil {
		return events.Visit{}, fields, err
	}
	return v, fields, nil
}

// requiredString returns the string field name of visit i: present, a
// string, not blank, and at most maxLen characters.
func requiredString(fields []field, i int, name string, maxLen int) (string, error) {
	raw, ok := lookup(fields, name)
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
	// A string of at most maxLen bytes has at most maxLen characters.
	if len(s) > maxLen {
		if n := utf8.RuneCountInString(s); n > maxLen {
			return "", fmt.Errorf("visits[%d].%s is %d characters long; the limit is %d", i, name, n, maxLen)
		}
	}
	return s, nil
}

func imageURLs(fields []field, i int, lim Limits) ([]string, error) {
	raw, ok := lookup(fields, "image_url")
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

// The functions below walk JSON that json.Decoder has already validated, to
// see every member of an object (encoding/json keeps only the last of a
// repeated key) without decoding values the decoder does not need. On
// malformed input they return errMalformed rather than panic.

var errMalformed = errors.New("request body is not valid JSON")

// field is one member of a JSON object: its key, unescaped, and its value,
// raw and without surrounding whitespace.
type field struct {
	key []byte
	val json.RawMessage
}

// lookup returns the value of the first field named name.
func lookup(fields []field, name string) (json.RawMessage, bool) {
	for _, f := range fields {
		if string(f.key) == name {
			return f.val, true
		}
	}
	return nil, false
}

// duplicateKey returns the first key that repeats an earlier one.
func duplicateKey(fields []field) ([]byte, bool) {
	if len(fields) <= 8 {
		for i := 1; i < len(fields); i++ {
			for j := range i {
				if bytes.Equal(fields[i].key, fields[j].key) {
					return fields[i].key, true
				}
			}
		}
		return nil, false
	}
	seen := make(map[string]struct{}, len(fields))
	for _, f := range fields {
		if _, dup := seen[string(f.key)]; dup {
			return f.key, true
		}
		seen[string(f.key)] = struct{}{}
	}
	return nil, false
}

// quoteKey quotes a client's key for an error message, cut to 64
// characters.
func quoteKey(k []byte) string {
	const maxRunes = 64
	s := string(k)
	n := 0
	for i := range s {
		if n == maxRunes {
			return strconv.Quote(s[:i] + "…")
		}
		n++
	}
	return strconv.Quote(s)
}

// objectFields appends the members of the JSON object raw to buf, in order,
// and returns buf. Values are subslices of raw.
func objectFields(raw []byte, buf []field) ([]field, error) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, errMalformed
	}
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return buf, nil
	}
	for {
		if i >= len(raw) || raw[i] != '"' {
			return nil, errMalformed
		}
		end := stringEnd(raw, i)
		if end < 0 {
			return nil, errMalformed
		}
		key, err := unquoteKey(raw[i:end])
		if err != nil {
			return nil, err
		}
		i = skipSpace(raw, end)
		if i >= len(raw) || raw[i] != ':' {
			return nil, errMalformed
		}
		i = skipSpace(raw, i+1)
		end = valueEnd(raw, i)
		if end < 0 {
			return nil, errMalformed
		}
		buf = append(buf, field{key: key, val: raw[i:end]})
		i = skipSpace(raw, end)
		if i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
			continue
		}
		if i < len(raw) && raw[i] == '}' {
			return buf, nil
		}
		return nil, errMalformed
	}
}

// arrayElems returns the elements of the JSON array raw, raw and without
// surrounding whitespace.
func arrayElems(raw []byte) ([]json.RawMessage, error) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '[' {
		return nil, errMalformed
	}
	i = skipSpace(raw, i+1)
	var out []json.RawMessage
	if i < len(raw) && raw[i] == ']' {
		return out, nil
	}
	for {
		end := valueEnd(raw, i)
		if end < 0 {
			return nil, errMalformed
		}
		out = append(out, raw[i:end])
		i = skipSpace(raw, end)
		if i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
			continue
		}
		if i < len(raw) && raw[i] == ']' {
			return out, nil
		}
		return nil, errMalformed
	}
}

// unquoteKey returns the key a quoted JSON string stands for, as
// encoding/json decodes it (escapes resolved, invalid UTF-8 replaced). Plain
// ASCII keys, the usual case, are returned without copying.
func unquoteKey(quoted []byte) ([]byte, error) {
	inner := quoted[1 : len(quoted)-1]
	plain := true
	for _, c := range inner {
		if c < 0x20 || c >= utf8.RuneSelf || c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return inner, nil
	}
	var s string
	if err := json.Unmarshal(quoted, &s); err != nil {
		return nil, errMalformed
	}
	return []byte(s), nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index just past the JSON string that starts with
// the quote at b[i], or -1.
func stringEnd(b []byte, i int) int {
	start := i
	i++
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		i += j
		escapes := 0
		for k := i - 1; k > start && b[k] == '\\'; k-- {
			escapes++
		}
		i++
		if escapes%2 == 0 {
			return i
		}
	}
}

// valueEnd returns the index just past the JSON value that starts at b[i],
// or -1.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				if i = stringEnd(b, i); i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default: // number, true, false, null
		start := i
		for i < len(b) && !isValueDelim(b[i]) {
			i++
		}
		if i == start {
			return -1
		}
		return i
	}
}

func isValueDelim(c byte) bool {
	switch c {
	case ',', '}', ']', ':', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}
