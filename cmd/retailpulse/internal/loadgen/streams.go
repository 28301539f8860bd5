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
	buf := make([]byte, 32<<10)
	var sc frameScanner
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			events, completed, overflow := sc.feed(buf[:n])
			s.events.Add(int64(events))
			switch {
			case completed:
				s.completed.Add(1)
				return
			case overflow:
				s.overflows.Add(1)
				s.fail(fmt.Sprintf("stream of job %d: the client fell behind (overflow)", id))
				return
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				s.fail(fmt.Sprintf("stream of job %d ended before job_completed: %v", id, err))
			}
			return
		}
	}
}

// frameScanner counts the frames of an event stream in its raw bytes,
// without parsing lines: the generator shares the machine with the
// service, so its reading must cost little and allocate nothing per read.
// A marker split across two reads is found in the joint: the end of the
// previous read followed by the start of this one.
type frameScanner struct {
	carry []byte // the last markerMax-1 bytes read
	joint []byte
}

// feed scans the next bytes read: the frames that begin in them, and
// whether a job_completed or an overflow frame was seen.
func (sc *frameScanner) feed(data []byte) (events int, completed, overflow bool) {
	if sc.carry == nil {
		sc.carry, sc.joint = make([]byte, 0, markerMax), make([]byte, 0, 2*markerMax)
	}
	n := len(data)
	head := data[:min(n, markerMax-1)]
	sc.joint = append(append(sc.joint[:0], sc.carry...), head...)
	// The joint's markers that lie within carry were counted with the
	// previous read, those within head are counted in data.
	events = bytes.Count(data, eventMarker) + bytes.Count(sc.joint, eventMarker) - bytes.Count(sc.carry, eventMarker) - bytes.Count(head, eventMarker)
	completed = bytes.Contains(data, completedMarker) || bytes.Contains(sc.joint, completedMarker)
	overflow = bytes.Contains(data, overflowMarker) || bytes.Contains(sc.joint, overflowMarker)
	if n >= markerMax-1 {
		sc.carry = append(sc.carry[:0], data[n-(markerMax-1):]...)
	} else {
		sc.joint = append(append(sc.joint[:0], sc.carry...), data...)
		sc.carry = append(sc.carry[:0], sc.joint[max(0, len(sc.joint)-(markerMax-1)):]...)
	}
	return events, completed, overflow
}

var (
	eventMarker     = []byte("\nevent: ")
	completedMarker = []byte("\nevent: job_completed\n")
	overflowMarker  = []byte("event: overflow\n")
)

// markerMax is the length of the longest marker.
var markerMax = max(len(eventMarker), len(completedMarker), len(overflowMarker))

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
