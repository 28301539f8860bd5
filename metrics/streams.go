package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Event-stream doors, the values of the door label: the two SSE routes.
// The NATS door (subscribers connected to the embedded server) has metrics
// of its own: see ObserveNATSSubscribers.
const (
	DoorSSEJob = "sse_job" // GET /api/jobs/{id}/events
	DoorSSEAll = "sse_all" // GET /api/events
)

var streamDoors = []string{DoorSSEJob, DoorSSEAll}

// What became of an event-stream request at an instance that hands them to
// another process (--hand-off-streams), the values of the outcome label.
var handoffOutcomes = []string{"sent", "local"}

// StreamMetrics are the metrics of event-stream subscribers. Create it with
// NewStreamMetrics. Its methods are safe for concurrent use and no-ops on
// a nil *StreamMetrics. It implements httpapi.StreamObserver.
type StreamMetrics struct {
	reg        prometheus.Registerer
	open       *prometheus.GaugeVec
	sent       *prometheus.CounterVec
	overflowed *prometheus.CounterVec
	handoffs   *prometheus.CounterVec
}

// NewStreamMetrics registers the event-stream metrics on reg; it panics if
// they are registered already. A nil reg returns nil.
func NewStreamMetrics(reg prometheus.Registerer) *StreamMetrics {
	if reg == nil {
		return nil
	}
	m := &StreamMetrics{
		reg: reg,
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "event_streams_open",
			Help: "Event streams (SSE) open on this instance, by door (sse_job, sse_all).",
		}, []string{"door"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "event_stream_events_sent_total",
			Help: "Events written to event-stream (SSE) clients, by door.",
		}, []string{"door"}),
		overflowed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "event_streams_overflowed_total",
			Help: "Event streams (SSE) ended because the client fell behind its buffer, by door.",
		}, []string{"door"}),
		handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "event_stream_handoffs_total",
			Help: "Connections whose first request was an event stream that this instance handed to another process (sent), or served itself because none took them (local).",
		}, []string{"outcome"}),
	}
	for _, o := range handoffOutcomes {
		m.handoffs.WithLabelValues(o)
	}
	for _, d := range streamDoors {
		m.open.WithLabelValues(d)
		m.sent.WithLabelValues(d)
		m.overflowed.WithLabelValues(d)
	}
	reg.MustRegister(m.open, m.sent, m.overflowed, m.handoffs)
	return m
}

// StreamOpened counts an open stream of door (sse_job, sse_all; anything
// else is "other").
func (m *StreamMetrics) StreamOpened(door string) {
	if m == nil {
		return
	}
	m.open.WithLabelValues(oneOf(door, streamDoors)).Inc()
}

// StreamClosed counts a stream of door closed, for overflow when the
// client fell behind.
func (m *StreamMetrics) StreamClosed(door string, overflowed bool) {
	if m == nil {
		return
	}
	door = oneOf(door, streamDoors)
	m.open.WithLabelValues(door).Dec()
	if overflowed {
		m.overflowed.WithLabelValues(door).Inc()
	}
}

// EventsSent counts n events written to a client of door.
func (m *StreamMetrics) EventsSent(door string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.sent.WithLabelValues(oneOf(door, streamDoors)).Add(float64(n))
}

// ObserveNATSSubscribers exports, read at each scrape from fn:
// retailpulse_nats_subscriber_connections, the subscriber identity's
// connections on the embedded server's listener, and
// retailpulse_nats_subscriber_messages_sent_total, the messages the server
// sent them (log messages, each holding one or more events, and API
// replies). fn's sent must never decrease. Call once.
func (m *StreamMetrics) ObserveNATSSubscribers(fn func() (conns int, sent uint64)) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "nats_subscriber_connections",
			Help: "Connections of the read-only subscriber identity on the embedded NATS server's listener (--nats-listen).",
		}, func() float64 { c, _ := fn(); return float64(c) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Name: "nats_subscriber_messages_sent_total",
			Help: "Messages the embedded NATS server sent to the subscriber identity's connections (log messages and API replies).",
		}, func() float64 { _, s := fn(); return float64(s) }),
	)
}

// StreamHandedOff counts an event-stream connection's handoff outcome
// (sent, local; anything else is "other").
func (m *StreamMetrics) StreamHandedOff(outcome string) {
	if m == nil {
		return
	}
	m.handoffs.WithLabelValues(oneOf(outcome, handoffOutcomes)).Inc()
}
