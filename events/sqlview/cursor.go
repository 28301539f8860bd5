package sqlview

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/retailpulse/retailpulse/events"
)

// A cursor is the key of the last entry of a page, so the next page starts
// right after it whatever was added meanwhile: a list kind and integers,
// base64url-encoded. Clients treat it as opaque.

func encodeCursor(kind byte, keys ...int64) string {
	var b strings.Builder
	b.WriteByte(kind)
	for _, k := range keys {
		b.WriteByte('.')
		b.WriteString(strconv.FormatInt(k, 10))
	}
	return base64.RawURLEncoding.EncodeToString([]byte(b.String()))
}

// decodeCursor returns the n keys of a cursor of kind; "" decodes to none.
func decodeCursor(s string, kind byte, n int) ([]int64, error) {
	if s == "" {
		return nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(raw) == 0 || raw[0] != kind {
		return nil, events.ErrBadCursor
	}
	parts := strings.Split(string(raw[1:]), ".")
	if len(parts) != n+1 || parts[0] != "" {
		return nil, events.ErrBadCursor
	}
	keys := make([]int64, n)
	for i, p := range parts[1:] {
		if keys[i], err = strconv.ParseInt(p, 10, 64); err != nil {
			return nil, fmt.Errorf("%w", events.ErrBadCursor)
		}
	}
	return keys, nil
}

// Cursor kinds, one per list, so no list accepts another's cursor.
const (
	cursorVisits  = 'v'
	cursorJobs    = 'j'
	cursorResults = 'r'
)

// pageLimit turns a requested limit into one within bounds.
func pageLimit(n int) int {
	switch {
	case n <= 0:
		return events.DefaultPageLimit
	case n > events.MaxPageLimit:
		return events.MaxPageLimit
	}
	return n
}
