package events

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
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
	var w wireBatch
	if err := json.Unmarshal(body, &w); err != nil {
		return Batch{}, fmt.Errorf("decode: %w", err)
	}
	if w.V < 1 || w.V > SchemaVersion {
		return Batch{}, fmt.Errorf("decode: unsupported schema version %d", w.V)
	}
	b := Batch{V: w.V, JobID: w.JobID, Events: make([]Event, 0, len(w.Events))}
	for i, we := range w.Events {
		ev, err := newEvent(we.Type)
		if err != nil {
			return Batch{}, fmt.Errorf("decode event %d: %w", i, err)
		}
		if err := json.Unmarshal(we.Data, ev); err != nil {
			return Batch{}, fmt.Errorf("decode event %d (%s): %w", i, we.Type, err)
		}
		b.Events = append(b.Events, ev)
	}
	if len(b.Events) == 0 {
		return Batch{}, fmt.Errorf("decode: no events")
	}
	return b, nil
}

func newEvent(t Type) (Event, error) {
	switch t {
	case TypeJobSubmitted:
		return &JobSubmitted{}, nil
	case TypeJobStarted:
		return &JobStarted{}, nil
	case TypeImageProcessed:
		return &ImageProcessed{}, nil
	case TypeImageFailed:
		return &ImageFailed{}, nil
	case TypeJobRequeued:
		return &JobRequeued{}, nil
	case TypeJobCompleted:
		return &JobCompleted{}, nil
	}
	return nil, fmt.Errorf("unknown event type %q", t)
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
