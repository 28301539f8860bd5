package loadgen

import (
	"context"
	"fmt"
	"math"
	"os"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"time"
)

// resources is the service's CPU time and peak memory over a run,
// and for an in-process service how long runnable goroutines waited for a
// CPU (the Go scheduler's latency) and how many GC cycles ran.
type resources struct {
	cpuSeconds *float64
	peakRSS    *float64
	scope      string
	schedP50   *float64 // milliseconds
	schedP99   *float64 // milliseconds
	gcCycles   *float64
}

// meter measures the service's resources: of this process for an
// in-process service, else from the target's /metrics, sampled every
// second for the peak.
type meter struct {
	self    bool
	cpu0    time.Duration
	rt0     []rtmetrics.Sample
	client  *apiClient
	cancel  context.CancelFunc
	done    chan struct{}
	samples int
	first   promSample
	last    promSample
	peak    float64
}

func startMeter(ctx context.Context, self bool, client *apiClient) *meter {
	m := &meter{self: self, client: client, done: make(chan struct{})}
	if self {
		resetPeakRSS()
		m.cpu0 = processCPU()
		m.rt0 = readRuntimeMetrics()
		close(m.done)
		return m
	}
	ctx, m.cancel = context.WithCancel(ctx)
	m.sample(ctx)
	go m.loop(ctx)
	return m
}

func (m *meter) loop(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.sample(ctx)
		}
	}
}

func (m *meter) sample(ctx context.Context) {
	s, ok := m.client.scrape(ctx)
	if !ok {
		return
	}
	if _, has := s["process_cpu_seconds_total"]; !has {
		return
	}
	if m.first == nil {
		m.first = s
	}
	m.last = s
	m.peak = math.Max(m.peak, s["process_resident_memory_bytes"])
	m.samples++
}

func (m *meter) finish() resources {
	if m.self {
		cpu := (processCPU() - m.cpu0).Seconds()
		res := resources{cpuSeconds: &cpu, scope: "this process: service, load generator and image server together"}
		if hwm, ok := peakRSS(); ok {
			res.peakRSS = &hwm
		}
		res.setRuntime(m.rt0, readRuntimeMetrics())
		return res
	}
	m.cancel()
	<-m.done
	m.sample(context.Background())
	if m.samples == 0 {
		return resources{scope: "n/a: the target exposes no process metrics"}
	}
	cpu := m.last["process_cpu_seconds_total"] - m.first["process_cpu_seconds_total"]
	peak := m.peak
	return resources{cpuSeconds: &cpu, peakRSS: &peak, scope: "the target's /metrics (RSS sampled every second)"}
}

// The runtime metrics an in-process run reports.
const (
	rtSchedLatency = "/sched/latencies:seconds"
	rtGCCycles     = "/gc/cycles/total:gc-cycles"
)

func readRuntimeMetrics() []rtmetrics.Sample {
	s := []rtmetrics.Sample{{Name: rtSchedLatency}, {Name: rtGCCycles}}
	rtmetrics.Read(s)
	return s
}

// setRuntime fills the scheduler latency percentiles and GC cycles from two
// readings of the runtime's metrics.
func (r *resources) setRuntime(before, after []rtmetrics.Sample) {
	if after[0].Value.Kind() == rtmetrics.KindFloat64Histogram && before[0].Value.Kind() == rtmetrics.KindFloat64Histogram {
		h0, h1 := before[0].Value.Float64Histogram(), after[0].Value.Float64Histogram()
		r.schedP50, r.schedP99 = histPercentileMs(h0, h1, 50), histPercentileMs(h0, h1, 99)
	}
	if after[1].Value.Kind() == rtmetrics.KindUint64 {
		n := float64(after[1].Value.Uint64() - before[1].Value.Uint64())
		r.gcCycles = &n
	}
}

// histPercentileMs returns the p-th percentile, in milliseconds, of the
// observations a runtime histogram gained between h0 and h1: the upper
// bound of the bucket it falls in. nil when there were none.
func histPercentileMs(h0, h1 *rtmetrics.Float64Histogram, p float64) *float64 {
	if len(h0.Counts) != len(h1.Counts) {
		return nil
	}
	var total uint64
	for i := range h1.Counts {
		total += h1.Counts[i] - h0.Counts[i]
	}
	if total == 0 {
		return nil
	}
	want := uint64(math.Ceil(p / 100 * float64(total)))
	var seen uint64
	for i := range h1.Counts {
		if seen += h1.Counts[i] - h0.Counts[i]; seen >= want {
			upper := h1.Buckets[i+1]
			if math.IsInf(upper, 1) {
				upper = h1.Buckets[i]
			}
			ms := upper * 1000
			return &ms
		}
	}
	return nil
}

// startProfile starts a CPU profile into path ("" = none) and returns
// the function that stops it.
func startProfile(path string) (func() error, error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}
