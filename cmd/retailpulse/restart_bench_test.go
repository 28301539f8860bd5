package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
)

// populate writes a finished history into dataDir: jobs jobs of images
// images each, perMsg image events per message, every job completed.
// It writes with lazy fsync (the read path under test is the same).
func populate(tb testing.TB, dataDir string, jobs, images, perMsg int) (lastJob uint64) {
	tb.Helper()
	ns, err := jsstore.StartServer(jsstore.ServerConfig{Name: "populate", StoreDir: filepath.Join(dataDir, "nats")})
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	nc, err := jsstore.ConnectInProcess(ns, "populate")
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	store, err := jsstore.Open(ctx, nc, jsstore.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	urls := make([]string, images)
	for i := range urls {
		urls[i] = fmt.Sprintf("https://images.example.com/store/visit/%06d.jpg", i)
	}
	sub := &events.JobSubmitted{Count: 1, Visits: []events.Visit{{StoreID: "S00339218", ImageURLs: urls, VisitTime: "2026-11-23T10:00:00Z"}}}
	var wg sync.WaitGroup
	work := make(chan int)
	var mu sync.Mutex
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				id, _, err := store.Submit(ctx, sub, "")
				if err != nil {
					tb.Error(err)
					return
				}
				mu.Lock()
				lastJob = max(lastJob, id)
				mu.Unlock()
				token := "populate-" + strconv.FormatUint(id, 10)
				fence, err := store.Append(ctx, id, events.KindStarted, 0, token+"/0", &events.JobStarted{Attempt: 1, Owner: "populate"})
				for i := 0; i < images && err == nil; i += perMsg {
					var evs []events.Event
					for j := i; j < min(i+perMsg, images); j++ {
						evs = append(evs, &events.ImageProcessed{ImageRef: events.ImageRef{Index: j}, StoreID: "S00339218", Width: 640, Height: 480, Perimeter: 2240, At: time.Now()})
					}
					fence, err = store.Append(ctx, id, events.KindImages, fence, token+"/"+strconv.FormatUint(fence, 10), evs...)
				}
				if err == nil {
					_, err = store.Append(ctx, id, events.KindCompleted, fence, token+"/"+strconv.FormatUint(fence, 10), &events.JobCompleted{Status: events.StatusCompleted, Processed: images})
				}
				if err != nil {
					tb.Error(err)
					return
				}
			}
		}()
	}
	for j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()
	return lastJob
}

// BenchmarkRestart measures how long a service takes from start to
// answering status for every job, over a log of 1,000,000 image events.
// The first start has no read model database and applies the whole log
// (logged as cold_restart); the measured restarts find the database and
// apply nothing. Set RETAILPULSE_RESTART_EVENTS to change the size and
// RETAILPULSE_RESTART_PER_MSG for the events per message (default 1, the
// worst case: one event per message).
func BenchmarkRestart(b *testing.B) {
	total := envInt("RETAILPULSE_RESTART_EVENTS", 1_000_000)
	perMsg := envInt("RETAILPULSE_RESTART_PER_MSG", 1)
	const images = 100
	dir := b.TempDir()
	start := time.Now()
	last := populate(b, dir, total/images, images, perMsg)
	b.Logf("populated %d jobs x %d images (%d per message) in %s", total/images, images, perMsg, time.Since(start).Round(time.Second))
	t0 := time.Now()
	cold := startApp(b, dir)
	if _, s := cold.status(b, last); s.Status != "completed" {
		b.Fatalf("last job: %+v", s)
	}
	b.Logf("cold restart (no read model database: the whole log applied): %s", time.Since(t0).Round(time.Millisecond))
	cold.stop()
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		app := startApp(b, dir)
		if _, s := app.status(b, last); s.Status != "completed" {
			b.Fatalf("last job: %+v", s)
		}
		b.ReportMetric(time.Since(t0).Seconds(), "s/restart")
		app.stop()
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
