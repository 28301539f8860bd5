package loadgen

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// promSample is a scrape of /metrics: each metric name (labels dropped) to
// the sum of its series, and each series as written (name{labels}) to its
// value.
type promSample map[string]float64

// scrape reads the target's /metrics; false if it exposes none.
func (c *apiClient) scrape(ctx context.Context) (promSample, bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	code, _, body, err := c.do(ctx, http.MethodGet, "/metrics", nil)
	if err != nil || code != http.StatusOK {
		return nil, false
	}
	return parsePromText(body), true
}

// parsePromText parses the Prometheus text exposition format, summing the
// series of each name. Lines it does not understand are skipped.
func parsePromText(body []byte) promSample {
	out := promSample{}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ \t"); i >= 0 {
			name = line[:i]
		}
		rest, series := line[len(name):], ""
		if strings.HasPrefix(rest, "{") {
			i := strings.LastIndexByte(rest, '}')
			if i < 0 {
				continue
			}
			series, rest = name+rest[:i+1], rest[i+1:]
		}
		fields := strings.Fields(rest) // value [timestamp]
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			out[name] += v
			if series != "" {
				out[series] = v
			}
		}
	}
	return out
}
