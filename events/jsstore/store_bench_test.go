package jsstore_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// benchJob is a submission of one visit with n images.
func benchJob(n int) *events.JobSubmitted {
	urls := make([]string, n)
	for i := range urls {
		urls[i] = "http://img.example/" + strconv.Itoa(i) + ".jpg"
	}
	return &events.JobSubmitted{Count: 1, Visits: []events.Visit{{StoreID: "S00339218", ImageURLs: urls, VisitTime: "2026-01-01T09:00:00Z"}}}
}

// benchOutcomes returns n ImageProcessed events starting at image from.
func benchOutcomes(from, n int) []events.Event {
	evs := make([]events.Event, n)
	for i := range evs {
		evs[i] = &events.ImageProcessed{ImageRef: events.ImageRef{Visit: 0, Index: from + i}, StoreID: "S00339218", Width: 640, Height: 480, Perimeter: 2240}
	}
	return evs
}

// benchAppender appends to one job, fenced, as its job actor does.
type benchAppender struct {
	s     *jsstore.EventLog
	id    uint64
	fence uint64
	n     int
}

func newBenchAppender(b *testing.B, s *jsstore.EventLog) *benchAppender {
	id, _, err := s.Submit(context.Background(), benchJob(1), "")
	if err != nil {
		b.Fatal(err)
	}
	return &benchAppender{s: s, id: id}
}

func (a *benchAppender) append(b *testing.B, evs []events.Event) {
	msgID := fmt.Sprintf("bench/%d/%d", a.id, a.n)
	seq, err := a.s.Append(context.Background(), a.id, events.KindImages, a.fence, msgID, evs...)
	if err != nil {
		b.Fatal(err)
	}
	a.fence = seq
	a.n++
}

// BenchmarkStore_Append measures fenced appends on a single node that
// fsyncs every write (SyncAlways, the service's default): sequential appends
// to one job of 1 and of 100 events per message, and 20 jobs appending at
// once (one appender per job, as 20 job actors would).
func BenchmarkStore_Append(b *testing.B) {
	for _, size := range []int{1, 100} {
		b.Run(fmt.Sprintf("events=%d", size), func(b *testing.B) {
			s := jstest.Open(b, jstest.StartSingle(b), jsstore.Config{})
			a := newBenchAppender(b, s)
			evs := benchOutcomes(0, size)
			b.ReportAllocs()
			for b.Loop() {
				a.append(b, evs)
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
	b.Run("events=1/jobs=20", func(b *testing.B) {
		const jobs = 20
		s := jstest.Open(b, jstest.StartSingle(b), jsstore.Config{})
		appenders := make([]*benchAppender, jobs)
		for i := range appenders {
			appenders[i] = newBenchAppender(b, s)
		}
		evs := benchOutcomes(0, 1)
		b.ResetTimer()
		var wg sync.WaitGroup
		for i, a := range appenders {
			n := b.N / jobs
			if i < b.N%jobs {
				n++
			}
			wg.Go(func() {
				for range n {
					a.append(b, evs)
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkStore_Submit stores one submission per op on a single node with
// SyncAlways: a job of 1, 500 (the submit-latency target's size) and
// 100,000 images (the largest job; compressed before it is stored).
func BenchmarkStore_Submit(b *testing.B) {
	for _, images := range []int{1, 500, 100_000} {
		b.Run(fmt.Sprintf("images=%d", images), func(b *testing.B) {
			s := jstest.Open(b, jstest.StartSingle(b), jsstore.Config{})
			sub := benchJob(images)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := s.Submit(context.Background(), sub, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
