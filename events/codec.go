package events

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Headers written on every message, so subscribers can route without
// decoding the body.
const (
	HeaderType     = "Rp-Event-Type"  // type of the first event, or "batch"
	HeaderSchema   = "Rp-Schema"      // SchemaVersion as decimal
	HeaderEncoding = "Rp-Encoding"    // "gzip" when the body is compressed
	HeaderCount    = "Rp-Event-Count" // number of events in the message
)

// EncodingGzip marks a gzip-compressed body (large submissions).
const EncodingGzip = "gzip"

// Batch is the body of one message: one or more events of one job, stored
// atomically. JobID is 0 in a submission (its sequence becomes the id).
type Batch struct {
	V      int     `json:"v"`
	JobID  uint64  `json:"job_id,omitempty"`
	Events []Event `json:"-"`
}

type wireEvent struct {
	Type Type            `json:"type"`
	Data json.RawMessage `json:"data"`
}

type wireBatch struct {
	V      int         `json:"v"`
	JobID  uint64      `json:"job_id,omitempty"`
	Events []wireEvent `json:"events"`
}

// Encode returns the JSON body for events of one job.
func Encode(jobID uint64, evs ...Event) ([]byte, error) {
	if len(evs) == 0 {
		return nil, fmt.Errorf("encode: no events")
	}
	w := wireBatch{V: SchemaVersion, JobID: jobID, Events: make([]wireEvent, len(evs))}
	for i, ev := range evs {
		data, err := json.Marshal(ev)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", ev.EventType(), err)
		}
		w.Events[i] = wireEvent{Type: ev.EventType(), Data: data}
	}
	return json.Marshal(w)
}

// Compress gzips body; used for submissions above a size threshold.
func Compress(body []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(body); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// maxDecompressed bounds what a compressed body may expand to.
const maxDecompressed = 256 << 20

// Decode parses a message body. encoding is the Rp-Encoding header ("" or
// "gzip"). Unknown event types and newer schema versions are errors: a
// reader must never silently skip facts it does not understand.
func Decode(body []byte, encoding string) (Batch, error) {
	switch encoding {
	case "":
	case EncodingGzip:
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return Batch{}, fmt.Errorf("decode: %w", err)
		}
		body, err = io.ReadAll(io.LimitReader(zr, maxDecompressed))
		if err != nil {
			return Batch{}, fmt.Errorf("decode: %w", err)
		}
	default:
		return Batch{}, fmt.Errorf("decode: unknown encoding %q", encoding)
	}
	var w wireBatchIn
	if err := json.Unmarshal(body, &w); err != nil {
		return Batch{}, fmt.Errorf("decode: %w", err)
	}
	if w.V < 1 || w.V > SchemaVersion {
		return Batch{}, fmt.Errorf("decode: unsupported schema version %d", w.V)
	}
	b := Batch{V: w.V, JobID: w.JobID, Events: make([]Event, 0, len(w.Events))}
	for i := range w.Events {
		we := &w.Events[i]
		if we.Data == nil {
			return Batch{}, fmt.Errorf("decode event %d (%s): no data", i, we.Type)
		}
		ev, err := we.Data.event(we.Type)
		if err != nil {
			return Batch{}, fmt.Errorf("decode event %d: %w", i, err)
		}
		b.Events = append(b.Events, ev)
	}
	if len(b.Events) == 0 {
		return Batch{}, fmt.Errorf("decode: no events")
	}
	return b, nil
}

// HeaderTypeOf is the Rp-Event-Type header value for a batch.
func HeaderTypeOf(evs []Event) string {
	if len(evs) == 0 {
		return ""
	}
	t := evs[0].EventType()
	for _, ev := range evs[1:] {
		if ev.EventType() != t {
			return "batch"
		}
	}
	return string(t)
}

// wireBatchIn is what Decode reads: a batch whose events' data decode in
// the same pass as the batch, into wireData, which holds the fields of
// every event type (the types share a name only where they share its
// meaning and Go type; TestCodec_WireDataCoversEveryEvent checks it).
// Decoding each event's data apart, from a json.RawMessage, scanned every
// event twice more.
type wireBatchIn struct {
	V      int           `json:"v"`
	JobID  uint64        `json:"job_id,omitempty"`
	Events []wireEventIn `json:"events"`
}

type wireEventIn struct {
	Type Type      `json:"type"`
	Data *wireData `json:"data"`
}

type wireData struct {
	Count       int          `json:"count"`        // job_submitted
	Visits      []Visit      `json:"visits"`       // job_submitted
	SubmittedAt time.Time    `json:"submitted_at"` // job_submitted
	Attempt     int          `json:"attempt"`      // job_started
	Owner       string       `json:"owner"`        // job_started
	Visit       int          `json:"visit"`        // image_*
	Index       int          `json:"index"`        // image_*
	StoreID     string       `json:"store_id"`     // image_*
	Width       int          `json:"width"`        // image_processed
	Height      int          `json:"height"`       // image_processed
	Perimeter   int          `json:"perimeter"`    // image_processed
	URL         string       `json:"url"`          // image_failed
	Reason      string       `json:"reason"`       // image_failed, job_requeued
	Status      Status       `json:"status"`       // job_completed
	Errors      []StoreError `json:"errors"`       // job_completed
	Processed   int          `json:"processed"`    // job_completed
	Failed      int          `json:"failed"`       // job_completed
	By          string       `json:"by"`           // job_requeued
	At          time.Time    `json:"at"`
}

// event returns the event of type t that d holds.
func (d *wireData) event(t Type) (Event, error) {
	switch t {
	case TypeJobSubmitted:
		return &JobSubmitted{Count: d.Count, Visits: d.Visits, SubmittedAt: d.SubmittedAt}, nil
	case TypeJobStarted:
		return &JobStarted{Attempt: d.Attempt, Owner: d.Owner, At: d.At}, nil
	case TypeImageProcessed:
		return &ImageProcessed{ImageRef: ImageRef{Visit: d.Visit, Index: d.Index}, StoreID: d.StoreID,
			Width: d.Width, Height: d.Height, Perimeter: d.Perimeter, At: d.At}, nil
	case TypeImageFailed:
		return &ImageFailed{ImageRef: ImageRef{Visit: d.Visit, Index: d.Index}, StoreID: d.StoreID,
			URL: d.URL, Reason: d.Reason, At: d.At}, nil
	case TypeJobRequeued:
		return &JobRequeued{By: d.By, Reason: d.Reason, At: d.At}, nil
	case TypeJobCompleted:
		return &JobCompleted{Status: d.Status, Errors: d.Errors, Processed: d.Processed, Failed: d.Failed, At: d.At}, nil
	}
	return nil, fmt.Errorf("unknown event type %q", t)
}
