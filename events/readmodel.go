package events

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// ReadModel is every job folded from the log, in memory: what the operator
// tools (replay, verify) rebuild from scratch, and a Sink for projections
// in tests. The service's own read model is on disk (events/sqlview).
//
// Apply must be called by one goroutine at a time, in stream order (the
// projection's consumer); readers may call Job, LastSeq and WaitFor
// concurrently. Messages at or below the last applied sequence are ignored,
// so a redelivered or replayed message is harmless.
type ReadModel struct {
	mu      sync.RWMutex
	jobs    map[uint64]*JobState
	lastSeq uint64
	changed chan struct{} // made by a waiter, closed when lastSeq advances

	applied    uint64 // events applied
	duplicates uint64 // events ignored as duplicates
	orphans    uint64 // job events for a job with no submission
}

// NewReadModel returns an empty read model.
func NewReadModel() *ReadModel {
	return &ReadModel{jobs: make(map[uint64]*JobState)}
}

// ApplyResult says what one Apply did, for metrics.
type ApplyResult struct {
	Applied    int // events that changed state
	Duplicates int // events ignored (already settled, after completion, replayed)
}

// Apply folds the message at stream sequence seq. A message at or below the
// last applied sequence is ignored. An error means the message could not be
// understood; lastSeq still advances past it, so one bad message cannot stall
// the projection (the caller logs it).
func (m *ReadModel) Apply(seq uint64, subject string, b Batch) (ApplyResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var res ApplyResult
	if seq <= m.lastSeq {
		res.Duplicates = len(b.Events)
		m.duplicates += uint64(res.Duplicates)
		return res, nil
	}
	defer m.advance(seq)

	if subject == SubjectSubmitted {
		sub, ok := b.Events[0].(*JobSubmitted)
		if !ok || len(b.Events) != 1 {
			return res, fmt.Errorf("seq %d: submission holds %d events, first %s", seq, len(b.Events), b.Events[0].EventType())
		}
		m.jobs[seq] = NewJobState(seq, sub)
		res.Applied = 1
		m.applied++
		return res, nil
	}
	id, _, ok := ParseJobSubject(subject)
	if !ok {
		return res, fmt.Errorf("seq %d: unexpected subject %q", seq, subject)
	}
	st := m.jobs[id]
	if st == nil {
		m.orphans += uint64(len(b.Events))
		return res, fmt.Errorf("seq %d: events for job %d, which was never submitted", seq, id)
	}
	var firstErr error
	for _, ev := range b.Events {
		changed, err := st.Apply(ev)
		switch {
		case err != nil && firstErr == nil:
			firstErr = fmt.Errorf("seq %d: %w", seq, err)
		case changed:
			res.Applied++
		case err == nil:
			res.Duplicates++
		}
	}
	m.applied += uint64(res.Applied)
	m.duplicates += uint64(res.Duplicates)
	return res, firstErr
}

// Skip records that seq was seen without being applied (e.g. a message that
// is not an event), so waiters for it are released.
func (m *ReadModel) Skip(seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if seq > m.lastSeq {
		m.advance(seq)
	}
}

// advance requires m.mu held.
func (m *ReadModel) advance(seq uint64) {
	m.lastSeq = seq
	if m.changed != nil {
		close(m.changed)
		m.changed = nil
	}
}

// Job returns a snapshot of one job.
func (m *ReadModel) Job(id uint64) (JobView, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	st, ok := m.jobs[id]
	if !ok {
		return JobView{}, false
	}
	return st.View(), true
}

// Jobs returns a snapshot of every job, by id.
func (m *ReadModel) Jobs() []JobView {
	m.mu.RLock()
	out := make([]JobView, 0, len(m.jobs))
	for _, st := range m.jobs {
		out = append(out, st.View())
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// LastSeq returns the last stream sequence applied or skipped.
func (m *ReadModel) LastSeq() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.lastSeq
}

// WaitFor blocks until the model has applied sequence seq or ctx ends.
func (m *ReadModel) WaitFor(ctx context.Context, seq uint64) error {
	for {
		m.mu.Lock()
		if m.lastSeq >= seq {
			m.mu.Unlock()
			return nil
		}
		if m.changed == nil {
			m.changed = make(chan struct{})
		}
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
