package actors

import (
	"context"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"
)

// waitFor polls cond until it holds or the test's patience runs out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestGate_LimitChangesWhileInUse(t *testing.T) {
	ctx := context.Background()
	g := newGate(2)
	never := make(chan struct{})
	for range 2 {
		if !g.acquire(ctx, never) {
			t.Fatal("acquire under the limit failed")
		}
	}
	got := make(chan int, 3)
	for i := range 3 {
		waitFor(t, "waiters queued", func() bool { _, _, w := g.state(); return w == i })
		go func() {
			if g.acquire(ctx, never) {
				got <- i
			}
		}()
	}
	waitFor(t, "three waiters", func() bool { _, _, w := g.state(); return w == 3 })

	g.setLimit(3) // raising admits the longest waiter at once
	if i := <-got; i != 0 {
		t.Fatalf("raised limit admitted waiter %d, want 0 (first come, first served)", i)
	}
	g.setLimit(1) // lowering interrupts no holder and admits nobody
	g.release()
	g.release()
	if limit, held, waiting := g.state(); limit != 1 || held != 1 || waiting != 2 {
		t.Fatalf("after lowering to 1 and two releases: limit %d held %d waiting %d, want 1 1 2", limit, held, waiting)
	}
	select {
	case i := <-got:
		t.Fatalf("waiter %d admitted over the lowered limit", i)
	default:
	}
	g.release()
	if i := <-got; i != 1 {
		t.Fatalf("next admitted waiter %d, want 1", i)
	}
}

func TestGate_GivingUpHoldsNothing(t *testing.T) {
	for _, tt := range []struct {
		name string
		stop func(cancel context.CancelFunc, stopping chan struct{})
	}{
		{"ctx cancelled", func(cancel context.CancelFunc, _ chan struct{}) { cancel() }},
		{"stopping closed", func(_ context.CancelFunc, stopping chan struct{}) { close(stopping) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate(1)
			if !g.acquire(context.Background(), nil) {
				t.Fatal("first acquire failed")
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stopping := make(chan struct{})
			res := make(chan bool)
			go func() { res <- g.acquire(ctx, stopping) }()
			waitFor(t, "a waiter", func() bool { _, _, w := g.state(); return w == 1 })
			tt.stop(cancel, stopping)
			if <-res {
				t.Fatal("acquire returned true after giving up")
			}
			if _, held, waiting := g.state(); held != 1 || waiting != 0 {
				t.Fatalf("held %d waiting %d, want 1 0", held, waiting)
			}
			g.release()
			if !g.acquire(context.Background(), nil) {
				t.Fatal("slot not free after release")
			}
		})
	}
}

func TestGate_StoppingWinsOverAFreeSlot(t *testing.T) {
	g := newGate(1)
	stopping := make(chan struct{})
	close(stopping)
	if g.acquire(context.Background(), stopping) {
		t.Fatal("acquire with stopping closed returned true")
	}
	if _, held, _ := g.state(); held != 0 {
		t.Fatalf("held %d after a refused acquire, want 0", held)
	}
}

func TestGate_ConcurrentUseNeverExceedsLimit(t *testing.T) {
	g := newGate(4)
	var mu sync.Mutex
	inUse, peak := 0, 0
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if !g.acquire(context.Background(), nil) {
					t.Error("acquire failed")
					return
				}
				mu.Lock()
				inUse++
				peak = max(peak, inUse)
				mu.Unlock()
				runtime.Gosched()
				mu.Lock()
				inUse--
				mu.Unlock()
				g.release()
			}
			if i == 32 {
				g.setLimit(8)
			}
		}()
	}
	wg.Wait()
	if peak > 8 {
		t.Fatalf("peak holders %d, above every limit set", peak)
	}
	if _, held, waiting := g.state(); held != 0 || waiting != 0 {
		t.Fatalf("held %d waiting %d at the end, want 0 0", held, waiting)
	}
}

func TestGovernor_Next(t *testing.T) {
	g := newGovernor(128, 4096, 2*time.Millisecond) // step 128
	for _, tt := range []struct {
		name    string
		limit   int
		p99     time.Duration
		samples uint64
		waiting bool
		want    int
	}{
		{"over target: multiplicative decrease", 1024, 3 * time.Millisecond, 1000, true, 768},
		{"over target, idle or not", 1024, 3 * time.Millisecond, 1000, false, 768},
		{"decrease stops at the floor", 150, 10 * time.Millisecond, 1000, true, 128},
		{"under target with images waiting: additive increase", 1024, time.Millisecond, 1000, true, 1152},
		{"increase stops at the ceiling", 4000, time.Millisecond, 1000, true, 4096},
		{"under target, nothing waiting: hold", 1024, time.Millisecond, 1000, false, 1024},
		{"too few samples to trust a high p99", 1024, 50 * time.Millisecond, 10, true, 1152},
		{"at the target exactly: not over", 1024, 2 * time.Millisecond, 1000, false, 1024},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := g.next(tt.limit, tt.p99, tt.samples, tt.waiting); got != tt.want {
				t.Fatalf("next(%d, %v, %d, %v) = %d, want %d", tt.limit, tt.p99, tt.samples, tt.waiting, got, tt.want)
			}
		})
	}
}

func TestQuantile_UpperBoundOfTheBucket(t *testing.T) {
	buckets := []float64{0, 0.001, 0.002, 0.004, math.Inf(1)}
	for _, tt := range []struct {
		name   string
		counts []uint64
		want   time.Duration
	}{
		{"all fast", []uint64{100, 0, 0, 0}, time.Millisecond},
		{"1% slow", []uint64{99, 0, 1, 0}, time.Millisecond},
		{"2% slow", []uint64{98, 0, 2, 0}, 4 * time.Millisecond},
		{"tail in the infinite bucket", []uint64{90, 0, 0, 10}, 4 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var n uint64
			for _, c := range tt.counts {
				n += c
			}
			if got := quantile(buckets, tt.counts, n, 0.99); got != tt.want {
				t.Fatalf("p99 = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSchedLatency_SeesRunnableGoroutinesWait checks the governor's reading
// of the runtime's histogram: with many more busy goroutines than Ps, some
// wait a whole time slice (10 ms) for a CPU.
func TestSchedLatency_SeesRunnableGoroutinesWait(t *testing.T) {
	s := newSchedLatency()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i := 0; i < 1e5; i++ {
					_ = i * i
				}
				runtime.Gosched()
			}
		}()
	}
	var p99 time.Duration
	var n uint64
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if p99, n = s.read(); n >= minSchedSamples && p99 >= 100*time.Microsecond {
			break
		}
	}
	close(stop)
	wg.Wait()
	if n < minSchedSamples || p99 < 100*time.Microsecond {
		t.Fatalf("sched latency p99 %v over %d events with %d spinning goroutines on %d Ps: want ≥ 100µs", p99, n, 8*runtime.GOMAXPROCS(0), runtime.GOMAXPROCS(0))
	}
}

// slotsObserver records what the governor reports.
type slotsObserver struct {
	nopObserver
	mu     sync.Mutex
	limits []int
}

func (o *slotsObserver) ImageSlots(limit int, _ time.Duration) {
	o.mu.Lock()
	o.limits = append(o.limits, limit)
	o.mu.Unlock()
}

func (o *slotsObserver) last() (int, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.limits) == 0 {
		return 0, 0
	}
	return o.limits[len(o.limits)-1], len(o.limits)
}

func TestEngine_GovernorFollowsSchedulerLatency(t *testing.T) {
	obs := &slotsObserver{}
	e := &Engine{cfg: Config{ImageSlots: 1024, MinImageSlots: 128, SchedLatencyTarget: 2 * time.Millisecond, Observer: obs}, imageSlots: newGate(512)}
	var mu sync.Mutex
	p99 := 10 * time.Millisecond
	read := func() (time.Duration, uint64) { mu.Lock(); defer mu.Unlock(); return p99, 1000 }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.govern(ctx, time.Millisecond, read) }()

	waitFor(t, "the floor under high latency", func() bool { l, _ := obs.last(); return l == 128 })

	// Latency back under target, but nothing waits: the limit holds.
	mu.Lock()
	p99 = 500 * time.Microsecond
	mu.Unlock()
	_, n := obs.last()
	waitFor(t, "ten more intervals", func() bool { _, m := obs.last(); return m >= n+10 })
	if l, _ := e.ImageSlots(); l != 128 {
		t.Fatalf("limit %d with no image waiting, want it held at 128", l)
	}

	// More images than the ceiling wait for slots: the limit climbs to it
	// and stays there.
	var wg sync.WaitGroup
	for range 1100 {
		wg.Add(1)
		go func() { defer wg.Done(); e.imageSlots.acquire(ctx, nil) }()
	}
	waitFor(t, "the ceiling with images waiting", func() bool { l, _ := obs.last(); return l == 1024 })
	if _, held := e.ImageSlots(); held != 1024 {
		t.Fatalf("%d slots held at the ceiling, want 1024", held)
	}
	cancel()
	<-done
	wg.Wait()
}

// Waiting for a slot allocates nothing: a waiter's channel is kept for
// the next one (store actors wait for slots whenever the engine is full).
func TestGate_WaitingAllocatesNothing(t *testing.T) {
	g := newGate(1)
	if !g.acquire(context.Background(), nil) {
		t.Fatal("first acquire failed")
	}
	release := make(chan struct{})
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-release:
			case <-done:
				return
			}
			for { // release only once the test's acquire waits in the queue
				if _, _, waiting := g.state(); waiting == 1 {
					break
				}
				runtime.Gosched()
			}
			g.release()
		}
	}()
	allocs := testing.AllocsPerRun(100, func() {
		release <- struct{}{}
		if !g.acquire(context.Background(), nil) {
			t.Fatal("acquire failed")
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per wait for a slot, want 0", allocs)
	}
}
