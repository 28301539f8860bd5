package events

import (
	"fmt"
	"testing"
)

// benchSubmission is a job of visits x perVisit images.
func benchSubmission(visits, perVisit int) *JobSubmitted {
	sub := &JobSubmitted{Count: visits, Visits: make([]Visit, visits)}
	for v := range sub.Visits {
		urls := make([]string, perVisit)
		for i := range urls {
			urls[i] = fmt.Sprintf("http://img.example/%d/%d.jpg", v, i)
		}
		sub.Visits[v] = Visit{StoreID: fmt.Sprintf("S%08d", v), ImageURLs: urls, VisitTime: "2026-01-01T09:00:00Z"}
	}
	return sub
}

// benchOutcomes returns an ImageProcessed for every image of sub, in order.
func benchOutcomes(sub *JobSubmitted) []Event {
	var evs []Event
	for v, visit := range sub.Visits {
		for i := range visit.ImageURLs {
			evs = append(evs, &ImageProcessed{ImageRef: ImageRef{Visit: v, Index: i}, StoreID: visit.StoreID, Width: 640, Height: 480, Perimeter: 2240})
		}
	}
	return evs
}

// BenchmarkJobState_Apply folds one ImageProcessed per op into a job of
// 10,000 images, starting a fresh state whenever every image is settled.
func BenchmarkJobState_Apply(b *testing.B) {
	sub := benchSubmission(100, 100)
	evs := benchOutcomes(sub)
	var st *JobState
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%len(evs) == 0 {
			st = NewJobState(1, sub)
		}
		if changed, err := st.Apply(evs[i%len(evs)]); !changed || err != nil {
			b.Fatalf("apply %d: changed %v err %v", i, changed, err)
		}
		i++
	}
}

// BenchmarkReadModel_Apply applies one message of 100 ImageProcessed events
// per op to the projection's read model, as the projection does for each
// appended batch. The model holds one job of 100,000 images and is rebuilt
// when the job is fully settled.
func BenchmarkReadModel_Apply(b *testing.B) {
	const perBatch = 100
	sub := benchSubmission(1000, 100)
	evs := benchOutcomes(sub)
	batches := len(evs) / perBatch
	subject := JobSubject(1, KindImages)
	var m *ReadModel
	var seq uint64
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		k := n % batches
		if k == 0 {
			m, seq = NewReadModel(), 1
			if _, err := m.Apply(seq, SubjectSubmitted, Batch{V: SchemaVersion, Events: []Event{sub}}); err != nil {
				b.Fatal(err)
			}
		}
		seq++
		res, err := m.Apply(seq, subject, Batch{V: SchemaVersion, JobID: 1, Events: evs[k*perBatch : (k+1)*perBatch]})
		if err != nil || res.Applied != perBatch {
			b.Fatalf("batch %d: applied %d err %v", k, res.Applied, err)
		}
		n++
	}
	b.ReportMetric(float64(n*perBatch)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDecode decodes one stored message of 100 ImageProcessed events,
// the projection's and a job loader's per-message cost.
func BenchmarkDecode(b *testing.B) {
	evs := benchOutcomes(benchSubmission(1, 100))
	body, err := Encode(1, evs...)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		batch, err := Decode(body, "")
		if err != nil || len(batch.Events) != len(evs) {
			b.Fatalf("decode: %d events, %v", len(batch.Events), err)
		}
	}
	b.ReportMetric(float64(b.N*len(evs))/b.Elapsed().Seconds(), "events/s")
}
