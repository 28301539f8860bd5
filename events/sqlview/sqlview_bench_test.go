package sqlview_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/sqlview"
)

// benchJob is the messages of one finished job of 2 visits x 5 images, as
// an owner writes them: submitted, started, one message of outcomes,
// completed.
func benchJob(seq uint64, store string) []events.Message {
	var visits []events.Visit
	for v := range 2 {
		var urls []string
		for i := range 5 {
			urls = append(urls, fmt.Sprintf("https://images.example.com/%d/%d/%d.jpg", seq, v, i))
		}
		visits = append(visits, events.Visit{StoreID: store, ImageURLs: urls, VisitTime: time.Unix(int64(seq)*60, 0).UTC().Format(time.RFC3339)})
	}
	var outcomes []events.Event
	for v := range 2 {
		for i := range 5 {
			outcomes = append(outcomes, &events.ImageProcessed{ImageRef: events.ImageRef{Visit: v, Index: i}, StoreID: store, Width: 640, Height: 480, Perimeter: 2240})
		}
	}
	return []events.Message{
		submitted(seq, time.Unix(int64(seq), 0), visits...),
		jobMsg(seq+1, seq, events.KindStarted, &events.JobStarted{Attempt: 1}),
		jobMsg(seq+2, seq, events.KindImages, outcomes...),
		jobMsg(seq+3, seq, events.KindCompleted, &events.JobCompleted{Status: events.StatusCompleted, Processed: 10}),
	}
}

// BenchmarkView_ApplyJobs applies finished jobs of 10 images in runs of
// 256 jobs (1,024 messages, as the projection does when it catches up);
// one op is one job. It reports images per second and the database's
// bytes per image.
func BenchmarkView_ApplyJobs(b *testing.B) {
	path := filepath.Join(b.TempDir(), "readmodel.db")
	v, err := sqlview.Open(context.Background(), path, sqlview.Options{Log: testLog, Stores: testStores})
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	ctx, cancel := context.WithCancel(context.Background()) // as the projection's
	defer cancel()
	const perRun = 256
	seq := uint64(1)
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(perRun, b.N-done)
		var run []events.Message
		for range n {
			run = append(run, benchJob(seq, "S1")...)
			seq += 4
		}
		if _, err := v.ApplyMessages(ctx, run); err != nil {
			b.Fatal(err)
		}
		done += n
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*10)/b.Elapsed().Seconds(), "images/s")
	var size int64
	for _, suffix := range []string{"", "-wal"} {
		if fi, err := os.Stat(path + suffix); err == nil {
			size += fi.Size()
		}
	}
	b.ReportMetric(float64(size)/float64(b.N*10), "bytes/image")
}

// BenchmarkView_ApplyOneJob applies one job's messages one run each, as
// the projection does at low load: four commits per job.
func BenchmarkView_ApplyOneJob(b *testing.B) {
	v := newView(b)
	ctx, cancel := context.WithCancel(context.Background()) // as the projection's
	defer cancel()
	seq := uint64(1)
	b.ResetTimer()
	for range b.N {
		for _, m := range benchJob(seq, "S1") {
			if _, err := v.ApplyMessages(ctx, []events.Message{m}); err != nil {
				b.Fatal(err)
			}
		}
		seq += 4
	}
}

// BenchmarkView_ApplySubmission applies one submission of 10 visits of 50
// images (W1's job) per op, one commit each, as the projection does while
// jobs are submitted.
func BenchmarkView_ApplySubmission(b *testing.B) {
	v := newView(b)
	ctx, cancel := context.WithCancel(context.Background()) // as the projection's
	defer cancel()
	var visits []events.Visit
	for vi := range 10 {
		var urls []string
		for i := range 50 {
			urls = append(urls, fmt.Sprintf("https://images.example.com/store/%d/%d.jpg", vi, i))
		}
		visits = append(visits, events.Visit{StoreID: "S1", ImageURLs: urls, VisitTime: "2026-11-23T10:00:00Z"})
	}
	seq := uint64(1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.ApplyMessages(ctx, []events.Message{submitted(seq, time.Unix(int64(seq), 0), visits...)}); err != nil {
			b.Fatal(err)
		}
		seq++
	}
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "images/s")
}

// BenchmarkView_Job reads one job's status.
func BenchmarkView_Job(b *testing.B) {
	v := newView(b)
	var run []events.Message
	for j := range uint64(1000) {
		run = append(run, benchJob(1+4*j, "S1")...)
	}
	apply(b, v, run...)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if _, err := v.Job(ctx, 1+4*uint64(i%1000)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkView_VisitsPage reads the first page (100 visits, 5 images
// each) of an area over 7 days, from 20,000 jobs (40,000 visits over 200
// days, 4 stores, 2 areas).
func BenchmarkView_VisitsPage(b *testing.B) {
	v := newView(b)
	const jobs = 20_000
	for start := 0; start < jobs; start += 1000 {
		var run []events.Message
		for j := start; j < start+1000; j++ {
			run = append(run, benchJob(1+4*uint64(j), []string{"S1", "S2", "S3", "S9"}[j%4])...)
		}
		apply(b, v, run...)
	}
	// benchJob's visit times are seq minutes after 1970: 20,000 jobs span
	// 80,000 minutes; a week is a quarter of them.
	from := time.Unix(0, 0).UTC().Add(20_000 * time.Minute)
	f := events.VisitFilter{AreaCode: "A1", From: from, To: from.Add(7 * 24 * time.Hour)}
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		page, err := v.Visits(ctx, f)
		if err != nil || len(page.Visits) != 100 {
			b.Fatalf("%d visits, %v", len(page.Visits), err)
		}
	}
}
