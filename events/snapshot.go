package events

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/bits"
	"slices"
)

// SnapshotVersion is the version of the read model snapshot encoding.
// Version 2 records, for an ongoing job, each visit's store and each failed
// store's first failing image, where version 1 recorded failures in arrival
// order; a version 1 snapshot is refused, and the log replayed.
const SnapshotVersion = 2

// A snapshot is a shortcut, never a source of truth: it records the read
// model as of one stream sequence, so a restart replays only what came
// after. Restore validates it thoroughly; a caller that gets an error falls
// back to a full replay.
type snapshotFile struct {
	V       int           `json:"v"`
	Stream  string        `json:"stream"`
	Seq     uint64        `json:"seq"`
	Applied uint64        `json:"applied"`
	Dups    uint64        `json:"duplicates"`
	Orphans uint64        `json:"orphans"`
	Jobs    []snapshotJob `json:"jobs"`
}

type snapshotJob struct {
	ID         uint64       `json:"id"`
	Images     int          `json:"images"`
	Processed  int          `json:"processed"`
	Failed     int          `json:"failed"`
	Status     Status       `json:"status"`
	Completed  bool         `json:"completed,omitempty"`
	Attempts   int          `json:"attempts,omitempty"`
	Stalled    int          `json:"stalled,omitempty"`
	Duplicates int          `json:"duplicates,omitempty"`
	Errors     []StoreError `json:"errors,omitempty"` // completed jobs only
	// Ongoing jobs only.
	Offsets    []int             `json:"offsets,omitempty"`
	Settled    []uint64          `json:"settled,omitempty"`
	StoreFirst []int             `json:"store_first,omitempty"`
	Failures   []snapshotFailure `json:"failures,omitempty"` // in visit order of their stores
}

// snapshotFailure is a failed store's first failing image.
type snapshotFailure struct {
	ImageRef
	StoreError
}

// MarshalSnapshot encodes the model (gzip JSON) and returns the sequence it
// covers. It holds the model's read lock while copying job states.
func (m *ReadModel) MarshalSnapshot(stream string) ([]byte, uint64, error) {
	m.mu.RLock()
	f := snapshotFile{V: SnapshotVersion, Stream: stream, Seq: m.lastSeq, Applied: m.applied, Dups: m.duplicates, Orphans: m.orphans,
		Jobs: make([]snapshotJob, 0, len(m.jobs))}
	for _, s := range m.jobs {
		j := snapshotJob{
			ID: s.ID, Images: s.Images, Processed: s.Processed, Failed: s.Failed, Status: s.Status,
			Completed: s.Completed, Attempts: s.Attempts, Stalled: s.Stalled, Duplicates: s.Duplicates,
			Errors:  append([]StoreError(nil), s.Errors...),
			Offsets: append([]int(nil), s.offsets...), Settled: append([]uint64(nil), s.settled...),
			StoreFirst: append([]int(nil), s.storeFirst...),
		}
		for _, k := range slices.Sorted(maps.Keys(s.failures)) {
			fl := s.failures[k]
			j.Failures = append(j.Failures, snapshotFailure{ImageRef: fl.at, StoreError: fl.err})
		}
		f.Jobs = append(f.Jobs, j)
	}
	m.mu.RUnlock()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err := json.NewEncoder(zw).Encode(f); err != nil {
		return nil, 0, fmt.Errorf("snapshot: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, 0, fmt.Errorf("snapshot: %w", err)
	}
	return buf.Bytes(), f.Seq, nil
}

// RestoreSnapshot decodes a snapshot of stream. It refuses a snapshot of
// another stream or version, and any job whose state is inconsistent.
func RestoreSnapshot(data []byte, stream string) (*ReadModel, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	var f snapshotFile
	dec := json.NewDecoder(io.LimitReader(zr, 4<<30))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if f.V != SnapshotVersion {
		return nil, fmt.Errorf("snapshot: version %d, want %d", f.V, SnapshotVersion)
	}
	if f.Stream != stream {
		return nil, fmt.Errorf("snapshot: of stream %q, want %q", f.Stream, stream)
	}
	m := NewReadModel()
	m.lastSeq, m.applied, m.duplicates, m.orphans = f.Seq, f.Applied, f.Dups, f.Orphans
	for _, j := range f.Jobs {
		s, err := j.restore(f.Seq)
		if err != nil {
			return nil, fmt.Errorf("snapshot: job %d: %w", j.ID, err)
		}
		if _, dup := m.jobs[j.ID]; dup {
			return nil, fmt.Errorf("snapshot: job %d twice", j.ID)
		}
		m.jobs[j.ID] = s
	}
	return m, nil
}

func (j snapshotJob) restore(seq uint64) (*JobState, error) {
	if j.ID == 0 || j.ID > seq {
		return nil, fmt.Errorf("id beyond the snapshot's sequence %d", seq)
	}
	if j.Images < 0 || j.Processed < 0 || j.Failed < 0 || j.Processed+j.Failed > j.Images {
		return nil, fmt.Errorf("counts %d+%d of %d images", j.Processed, j.Failed, j.Images)
	}
	s := &JobState{ID: j.ID, Images: j.Images, Processed: j.Processed, Failed: j.Failed, Status: j.Status,
		Completed: j.Completed, Attempts: j.Attempts, Stalled: j.Stalled, Duplicates: j.Duplicates, Errors: j.Errors}
	switch {
	case j.Completed && (j.Status == StatusCompleted || j.Status == StatusFailed):
		return s, nil
	case j.Completed || j.Status != StatusOngoing:
		return nil, fmt.Errorf("status %q with completed=%t", j.Status, j.Completed)
	}
	// An ongoing job carries its image bitset; it must agree with its counts.
	if len(j.Settled) != (j.Images+63)/64 || !validOffsets(j.Offsets, j.Images) {
		return nil, fmt.Errorf("image index does not match %d images", j.Images)
	}
	n := 0
	for _, w := range j.Settled {
		n += bits.OnesCount64(w)
	}
	if n != j.Processed+j.Failed {
		return nil, fmt.Errorf("%d images settled, counts say %d", n, j.Processed+j.Failed)
	}
	if len(j.Errors) > 0 {
		return nil, fmt.Errorf("ongoing with an error list")
	}
	if !validStoreFirst(j.StoreFirst, len(j.Offsets)) {
		return nil, fmt.Errorf("store index does not match %d visits", len(j.Offsets))
	}
	s.offsets, s.settled, s.storeFirst, s.Errors = j.Offsets, j.Settled, j.StoreFirst, nil
	if (len(j.Failures) == 0) != (j.Failed == 0) || len(j.Failures) > j.Failed {
		return nil, fmt.Errorf("%d failed stores for %d failed images", len(j.Failures), j.Failed)
	}
	for _, fl := range j.Failures {
		if !s.Settled(fl.ImageRef) {
			return nil, fmt.Errorf("failure of image visit %d index %d, which is not settled", fl.Visit, fl.Index)
		}
		if _, dup := s.failures[s.storeFirst[fl.Visit]]; dup {
			return nil, fmt.Errorf("store of visit %d failed twice", fl.Visit)
		}
		s.addFailure(fl.ImageRef, fl.StoreError)
	}
	return s, nil
}

// validStoreFirst reports whether first maps each of n visits to the first
// visit of its store: an earlier or the same visit, itself mapped to itself.
func validStoreFirst(first []int, n int) bool {
	if len(first) != n {
		return false
	}
	for v, f := range first {
		if f < 0 || f > v || first[f] != f {
			return false
		}
	}
	return true
}

func validOffsets(offsets []int, images int) bool {
	prev := 0
	for i, o := range offsets {
		if o < prev || o > images || (i == 0 && o != 0) {
			return false
		}
		prev = o
	}
	return true
}
