package loadgen

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// hammer issues status requests at a fixed rate, open loop: a
// dispatcher enqueues requests on schedule whatever the answers do, and a
// pool of workers sends them. Latency runs from enqueueing to the end of
// the answer, so time spent waiting for a free worker counts. A request
// that finds the queue full is dropped and counted.
type hammer struct {
	client *apiClient
	ids    []uint64
	rps    int
	limit  int64 // requests in all
	start  time.Time
	queue  chan time.Time
	stop   chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	lat     []time.Duration
	errors  atomic.Int64
	sent    int64 // dispatcher only until finish
	dropped int64 // dispatcher only until finish
	end     time.Time
}

type hammerStats struct {
	lat           []time.Duration
	sent, dropped int64
	errors        int64
	elapsed       time.Duration
}

func startHammer(ctx context.Context, c *apiClient, ids []uint64, rps int, limit int64) *hammer {
	h := &hammer{client: c, ids: ids, rps: rps, limit: limit, start: time.Now(),
		queue: make(chan time.Time, 4096), stop: make(chan struct{})}
	workers := min(max(rps/20, 4), 256)
	for range workers {
		h.wg.Go(func() { h.work(ctx) })
	}
	h.wg.Go(h.dispatch)
	return h
}

func (h *hammer) dispatch() {
	defer close(h.queue)
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for h.sent < h.limit {
		select {
		case <-h.stop:
			return
		case now := <-t.C:
			due := min(int64(now.Sub(h.start).Seconds()*float64(h.rps)), h.limit)
			for ; h.sent < due; h.sent++ {
				select {
				case h.queue <- time.Now():
				default:
					h.dropped++
				}
			}
		}
	}
}

func (h *hammer) work(ctx context.Context) {
	var lat []time.Duration
	defer func() {
		h.mu.Lock()
		h.lat = append(h.lat, lat...)
		h.mu.Unlock()
	}()
	for t := range h.queue {
		select {
		case <-h.stop:
			continue // the run is over: drop what is still queued
		default:
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		code, err := h.client.statusCode(rctx, h.ids[rand.N(len(h.ids))])
		cancel()
		lat = append(lat, time.Since(t))
		if err != nil || code != http.StatusOK {
			h.errors.Add(1)
		}
	}
}

// finish stops the hammer, waits for requests in flight, and returns what
// it measured.
func (h *hammer) finish() hammerStats {
	end := time.Now()
	close(h.stop)
	h.wg.Wait()
	return hammerStats{lat: h.lat, sent: h.sent, dropped: h.dropped, errors: h.errors.Load(), elapsed: end.Sub(h.start)}
}
