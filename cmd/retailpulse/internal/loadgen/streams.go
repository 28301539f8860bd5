package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// streams holds event streams (GET /api/jobs/{id}/events) open on the
// jobs of a run, the way clients watching their jobs would, and checks
// that each ends with its job's job_completed. Safe for concurrent use.
type streams struct {
	base string
	http *http.Client
	wg   sync.WaitGroup

	open, peak, opened, completed, events, overflows atomic.Int64

	mu       sync.Mutex
	failures []string
}

func newStreams(base string) *streams {
	tr := &http.Transport{
		Proxy:              nil,
		DialContext:        (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		DisableCompression: true,
		ReadBufferSize:     32 << 10,
	}
	return &streams{base: strings.TrimRight(base, "/"), http: &http.Client{Transport: tr}}
}

// perJob returns how many of n streams job j of jobs gets: n spread evenly.
func perJob(n, jobs, j int) int {
	k := n / jobs
	if j < n%jobs {
		k++
	}
	return k
}

// watch opens k streams on job id, each read on its own goroutine until
// the job's job_completed, a failure, or ctx ends.
func (s *streams) watch(ctx context.Context, id uint64, k int) {
	for range k {
		s.wg.Go(func() { s.read(ctx, id) })
	}
}

func (s *streams) fail(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, msg)
}

func (s *streams) read(ctx context.Context, id uint64) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/api/jobs/"+strconv.FormatUint(id, 10)+"/events", nil)
	if err != nil {
		s.fail(err.Error())
		return
	}
	resp, err := s.http.Do(req)
	if err != nil {
		s.fail(fmt.Sprintf("stream of job %d: %v", id, err))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.fail(fmt.Sprintf("stream of job %d: %s", id, resp.Status))
		return
	}
	s.opened.Add(1)
	now := s.open.Add(1)
	for p := s.peak.Load(); now > p && !s.peak.CompareAndSwap(p, now); p = s.peak.Load() {
	}
	defer s.open.Add(-1)
	// Frames are counted in the raw bytes, without parsing lines: the
	// generator shares the machine with the service, so its reading must
	// cost little. A marker split across two reads is found by keeping
	// the end of the previous read.
	buf := make([]byte, 32<<10)
	var carry []byte
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			chunk := append(carry, buf[:n]...)
			s.events.Add(int64(bytes.Count(chunk, eventMarker) - bytes.Count(carry, eventMarker)))
			switch {
			case bytes.Contains(chunk, completedMarker):
				s.completed.Add(1)
				return
			case bytes.Contains(chunk, overflowMarker):
				s.overflows.Add(1)
				s.fail(fmt.Sprintf("stream of job %d: the client fell behind (overflow)", id))
				return
			}
			carry = append(carry[:0], chunk[max(0, len(chunk)-len(completedMarker)):]...)
		}
		if err != nil {
			if ctx.Err() == nil {
				s.fail(fmt.Sprintf("stream of job %d ended before job_completed: %v", id, err))
			}
			return
		}
	}
}

var (
	eventMarker     = []byte("\nevent: ")
	completedMarker = []byte("\nevent: job_completed\n")
	overflowMarker  = []byte("event: overflow\n")
)

// finish waits for every stream to end (or ctx), and closes the client.
func (s *streams) finish(ctx context.Context) streamStats {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.fail(fmt.Sprintf("event streams: %v with %d still open", ctx.Err(), s.open.Load()))
	}
	s.http.CloseIdleConnections()
	s.mu.Lock()
	defer s.mu.Unlock()
	return streamStats{opened: s.opened.Load(), peak: s.peak.Load(), completed: s.completed.Load(),
		events: s.events.Load(), overflows: s.overflows.Load(), failures: append([]string(nil), s.failures...)}
}

type streamStats struct {
	opened, peak, completed, events, overflows int64
	failures                                   []string
}
