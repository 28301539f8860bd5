package sqlview

import (
	"strings"
	"time"
)

// VisitTimeLayouts are the visit_time spellings matched by date filters,
// tried in order after surrounding spaces are trimmed. RFC 3339 carries
// its offset; the others are read as UTC. A visit_time in none of them is
// stored as given and excluded from every date filter.
var VisitTimeLayouts = []string{
	time.RFC3339Nano,            // 2006-01-02T15:04:05.999999999Z07:00 (fraction optional)
	"2006-01-02 15:04:05Z07:00", // RFC 3339 with a space
	"2006-01-02T15:04:05",       // fraction optional, here and below
	"2006-01-02 15:04:05",
	"2006-01-02T15:04",
	"2006-01-02 15:04",
	"2006-01-02",
}

// ParseVisitTime reads a visit_time in one of VisitTimeLayouts.
func ParseVisitTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if len(s) < len("2006-01-02") {
		return time.Time{}, false
	}
	for _, layout := range VisitTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}
