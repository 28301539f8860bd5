package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/retailpulse/retailpulse/metrics"
)

func TestStreamMetrics_CountByDoorWithBoundedLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.NewStreamMetrics(reg)
	m.StreamOpened(metrics.DoorSSEJob)
	m.StreamOpened(metrics.DoorSSEJob)
	m.StreamOpened(metrics.DoorSSEAll)
	m.StreamOpened("/api/jobs/42/events") // never a label of its own
	m.EventsSent(metrics.DoorSSEJob, 7)
	m.EventsSent(metrics.DoorSSEAll, 3)
	m.StreamClosed(metrics.DoorSSEJob, false)
	m.StreamClosed(metrics.DoorSSEAll, true)
	m.StreamHandedOff("sent")
	m.StreamHandedOff("sent")
	m.StreamHandedOff("local")
	m.StreamHandedOff("elsewhere") // never a label of its own
	conns, sent := 2, uint64(40)
	m.ObserveNATSSubscribers(func() (int, uint64) { return conns, sent })

	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"retailpulse_event_streams_open", map[string]string{"door": "sse_job"}, 1},
		{"retailpulse_event_streams_open", map[string]string{"door": "sse_all"}, 0},
		{"retailpulse_event_streams_open", map[string]string{"door": "other"}, 1},
		{"retailpulse_event_stream_events_sent_total", map[string]string{"door": "sse_job"}, 7},
		{"retailpulse_event_stream_events_sent_total", map[string]string{"door": "sse_all"}, 3},
		{"retailpulse_event_streams_overflowed_total", map[string]string{"door": "sse_all"}, 1},
		{"retailpulse_event_streams_overflowed_total", map[string]string{"door": "sse_job"}, 0},
		{"retailpulse_event_stream_handoffs_total", map[string]string{"outcome": "sent"}, 2},
		{"retailpulse_event_stream_handoffs_total", map[string]string{"outcome": "local"}, 1},
		{"retailpulse_event_stream_handoffs_total", map[string]string{"outcome": "other"}, 1},
		{"retailpulse_nats_subscriber_connections", map[string]string{}, 2},
		{"retailpulse_nats_subscriber_messages_sent_total", map[string]string{}, 40},
	}
	for _, tt := range tests {
		if got := value(t, reg, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	var nilMetrics *metrics.StreamMetrics
	nilMetrics.StreamOpened(metrics.DoorSSEJob) // no-op, no panic
	nilMetrics.ObserveNATSSubscribers(nil)
}
