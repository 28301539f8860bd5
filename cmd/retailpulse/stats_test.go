package main

import (
	"reflect"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/httpapi"
)

func TestActivity_CountsImagesPerIntervalOverTheWindow(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	a := newActivity(2*time.Second, 3, func() time.Time { return now })
	images := func(ok int, reasons ...string) events.Record {
		var evs []events.Event
		for range ok {
			evs = append(evs, &events.ImageProcessed{})
		}
		for _, r := range reasons {
			evs = append(evs, &events.ImageFailed{Reason: r})
		}
		return events.Record{Events: evs}
	}
	a.observe(images(2, "http 404"))
	a.observe(events.Record{Events: []events.Event{&events.JobCompleted{}}}) // not an image
	now = now.Add(2 * time.Second)
	a.observe(images(1, "http 418", "unknown store", "HTTP 404"))
	now = now.Add(4 * time.Second) // one interval with nothing
	a.observe(images(4))

	samples, reasons := a.snapshot()
	at := time.Date(2026, 11, 23, 10, 0, 2, 0, time.UTC)
	want := []httpapi.StatsSample{{At: at, Processed: 1, Failed: 3}, {At: at.Add(2 * time.Second)}, {At: at.Add(4 * time.Second), Processed: 4}}
	if !reflect.DeepEqual(samples, want) {
		t.Fatalf("samples %+v, want %+v", samples, want)
	}
	// The first interval has left the window; reasons take the metrics'
	// fixed classes.
	wantReasons := []httpapi.ReasonCount{{Reason: "http 404", Count: 1}, {Reason: "http 4xx", Count: 1}, {Reason: "unknown store", Count: 1}}
	if !reflect.DeepEqual(reasons, wantReasons) {
		t.Fatalf("reasons %+v, want %+v", reasons, wantReasons)
	}

	now = now.Add(time.Minute) // everything old: a ring of zeros
	samples, reasons = a.snapshot()
	if len(samples) != 3 || len(reasons) != 0 || samples[0].Processed+samples[1].Processed+samples[2].Processed != 0 {
		t.Fatalf("after a minute: %+v %+v", samples, reasons)
	}
}
