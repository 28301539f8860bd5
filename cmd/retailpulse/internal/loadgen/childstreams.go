package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"time"
)

// streamReader is where a run's event streams are read: in the generator
// (streams) or in a process of their own (childStreams).
type streamReader interface {
	// watch opens k streams on job id; it does not wait for them.
	watch(ctx context.Context, id uint64, k int)
	// finish waits for every stream to end (or ctx) and reports them.
	finish(ctx context.Context) streamStats
}

// childStreams reads the event streams in a child process (ReadStreams),
// as subscribers are other programs than the one submitting and polling:
// a thousand streams read in the generator itself would delay its own
// status requests, and the measurement would show the generator's queue,
// not the service's. The child is told each job as it is submitted, one
// "JOB K" line on its standard input, and writes its report as JSON on
// its standard output once its input is closed and its streams ended.
// Safe for concurrent use.
type childStreams struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan error // the child's exit

	mu    sync.Mutex
	stdin io.WriteCloser // nil once closed
	err   error          // writing to the child failed
}

// startChildStreams starts command with base (the service's URL) as its
// last argument; its standard error goes to stderr.
func startChildStreams(command []string, base string, stderr io.Writer) (*childStreams, error) {
	if len(command) == 0 {
		return nil, errors.New("event streams: no command")
	}
	c := &childStreams{cmd: exec.Command(command[0], append(command[1:], base)...), done: make(chan error, 1)}
	c.cmd.Stdout, c.cmd.Stderr = &c.out, stderr
	stdin, err := c.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("event streams: start %s: %w", command[0], err)
	}
	c.stdin = stdin
	go func() { c.done <- c.cmd.Wait() }()
	return c, nil
}

func (c *childStreams) watch(_ context.Context, id uint64, k int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stdin == nil || c.err != nil {
		return
	}
	if _, err := fmt.Fprintf(c.stdin, "%d %d\n", id, k); err != nil {
		c.err = fmt.Errorf("event streams: telling the reader process of job %d: %w", id, err)
	}
}

// finish closes the child's input, then waits for its report; when ctx
// ends first the child is killed.
func (c *childStreams) finish(ctx context.Context) streamStats {
	c.mu.Lock()
	if c.stdin != nil {
		c.stdin.Close()
		c.stdin = nil
	}
	werr := c.err
	c.mu.Unlock()
	var err error
	select {
	case err = <-c.done:
		if err != nil {
			err = fmt.Errorf("event streams: the reader process: %w", err)
		}
	case <-ctx.Done():
		c.cmd.Process.Kill()
		<-c.done
		err = fmt.Errorf("event streams: the reader process was still running: %w", ctx.Err())
	}
	var w wireStreamStats
	if derr := json.Unmarshal(c.out.Bytes(), &w); derr != nil && err == nil {
		err = fmt.Errorf("event streams: the reader process's report %q: %w", snippet(c.out.Bytes()), derr)
	}
	st := w.stats()
	for _, e := range []error{werr, err} {
		if e != nil {
			st.failures = append(st.failures, e.Error())
		}
	}
	return st
}

// wireStreamStats is streamStats as the reader process reports it.
type wireStreamStats struct {
	Opened    int64    `json:"opened"`
	Peak      int64    `json:"peak_open"`
	Completed int64    `json:"completed"`
	Events    int64    `json:"events"`
	Overflows int64    `json:"overflows"`
	Failures  []string `json:"failures"`
}

func (w wireStreamStats) stats() streamStats {
	return streamStats{opened: w.Opened, peak: w.Peak, completed: w.Completed, events: w.Events, overflows: w.Overflows, failures: w.Failures}
}

// ReadStreams is the reader process of childStreams: for each "JOB K" line
// of in it opens K event streams on job JOB of the service at base, and
// once in ends and every stream has ended (or timeout passed) it writes
// its report as JSON to out. A malformed line is an error.
func ReadStreams(ctx context.Context, base string, timeout time.Duration, in io.Reader, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s := newStreams(base)
	sc := bufio.NewScanner(in)
	var bad error
	for sc.Scan() {
		var id uint64
		var k int
		if n, err := fmt.Sscanf(sc.Text(), "%d %d", &id, &k); err != nil || n != 2 || k < 0 {
			bad = fmt.Errorf("read-streams: line %q: want JOB K", sc.Text())
			break
		}
		s.watch(ctx, id, k)
	}
	if bad == nil {
		bad = sc.Err()
	}
	if bad != nil {
		cancel()
	}
	st := s.finish(ctx)
	w := wireStreamStats{Opened: st.opened, Peak: st.peak, Completed: st.completed, Events: st.events, Overflows: st.overflows, Failures: st.failures}
	if err := json.NewEncoder(out).Encode(w); err != nil {
		return err
	}
	return bad
}
