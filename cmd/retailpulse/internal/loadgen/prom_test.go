package loadgen

import "testing"

func TestParsePromText_SumsSeriesOfEachName(t *testing.T) {
	got := parsePromText([]byte(`# HELP x y
# TYPE retailpulse_images_failed_total counter
retailpulse_images_failed_total{reason="http 404"} 3
retailpulse_images_failed_total{reason="odd } brace"} 2
retailpulse_event_batch_events_sum 12.5
process_resident_memory_bytes 1.2e+07 1700000000000
`))
	want := promSample{"retailpulse_images_failed_total": 5, "retailpulse_event_batch_events_sum": 12.5, "process_resident_memory_bytes": 1.2e7,
		`retailpulse_images_failed_total{reason="http 404"}`: 3, `retailpulse_images_failed_total{reason="odd } brace"}`: 2}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}
