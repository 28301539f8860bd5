package loadgen

import (
	"strings"
	"testing"
)

// However the stream is split into reads, every frame is counted once and
// the end is found.
func TestFrameScanner_CountsFramesAcrossAnySplit(t *testing.T) {
	var b strings.Builder
	b.WriteString(": keep-alive\n\n")
	for i := range 40 {
		b.WriteString("id: 5-" + strings.Repeat("1", i%3+1) + "\nevent: image_processed\ndata: {\"job_id\":\"5\"}\n\n")
	}
	b.WriteString("id: 9-0\nevent: job_completed\ndata: {}\n\n")
	body := b.String()
	const frames = 41
	tests := []struct {
		name string
		body string
		want int
		end  func(completed, overflow bool) bool
	}{
		{"ends with job_completed", body, frames, func(c, o bool) bool { return c && !o }},
		{"overflow", strings.Replace(body, "event: job_completed", "event: overflow", 1), frames, func(c, o bool) bool { return o && !c }},
		{"no end yet", body[:strings.Index(body, "id: 9-0")], frames - 1, func(c, o bool) bool { return !c && !o }},
	}
	for _, tt := range tests {
		for _, size := range []int{1, 2, 3, 7, 13, 21, 22, 23, 64, 1 << 20} {
			var sc frameScanner
			events, completed, overflow := 0, false, false
			for rest := tt.body; rest != ""; {
				n := min(size, len(rest))
				e, c, o := sc.feed([]byte(rest[:n]))
				events, completed, overflow = events+e, completed || c, overflow || o
				rest = rest[n:]
			}
			if events != tt.want || !tt.end(completed, overflow) {
				t.Errorf("%s, reads of %d bytes: %d frames, completed %v, overflow %v; want %d frames", tt.name, size, events, completed, overflow, tt.want)
			}
		}
	}
}
