package events

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestReadModel_SnapshotRoundTrip(t *testing.T) {
	m := NewReadModel()
	sub := submission(Visit{StoreID: "S1", ImageURLs: []string{"a", "b", "c"}}, Visit{StoreID: "S2", ImageURLs: []string{"d"}})
	m.Apply(1, SubjectSubmitted, Batch{V: 1, Events: []Event{sub}})
	m.Apply(2, SubjectSubmitted, Batch{V: 1, Events: []Event{sub}})
	m.Apply(3, JobSubject(1, KindImages), Batch{V: 1, Events: []Event{ok(0, 0), bad(1, 0, "S2", "http 404")}})
	m.Apply(4, JobSubject(2, KindImages), Batch{V: 1, Events: []Event{ok(0, 0), ok(0, 1), ok(0, 2), ok(1, 0)}})
	m.Apply(5, JobSubject(2, KindCompleted), Batch{V: 1, Events: []Event{&JobCompleted{Status: StatusCompleted}}})

	data, seq, err := m.MarshalSnapshot("S")
	if err != nil || seq != 5 {
		t.Fatal(seq, err)
	}
	r, err := RestoreSnapshot(data, "S")
	if err != nil {
		t.Fatal(err)
	}
	if r.LastSeq() != 5 || !reflect.DeepEqual(r.Jobs(), m.Jobs()) {
		t.Fatalf("restored %+v, want %+v", r.Jobs(), m.Jobs())
	}
	// The restored model keeps folding exactly like the original.
	for _, mm := range []*ReadModel{m, r} {
		res, _ := mm.Apply(6, JobSubject(1, KindImages), Batch{V: 1, Events: []Event{ok(0, 0), bad(1, 0, "S2", "x"), ok(0, 1), bad(0, 2, "S1", "timeout")}})
		if res.Applied != 2 || res.Duplicates != 2 {
			t.Fatalf("apply after restore: %+v", res)
		}
		mm.Apply(7, JobSubject(1, KindCompleted), Batch{V: 1, Events: []Event{&JobCompleted{Status: StatusFailed}}})
	}
	if !reflect.DeepEqual(r.Jobs(), m.Jobs()) {
		t.Fatalf("diverged: %+v vs %+v", r.Jobs(), m.Jobs())
	}
	want := []StoreError{{"S1", "image http://x/img: timeout"}, {"S2", "image http://x/img: http 404"}}
	if v, _ := r.Job(1); !reflect.DeepEqual(v.Errors, want) {
		t.Fatalf("errors after restore: %+v, want %+v", v.Errors, want)
	}
}

// A snapshot keeps what decides the error list of a job still running: the
// store of each visit and each failed store's first failing image.
func TestReadModel_SnapshotKeepsFailureOrder(t *testing.T) {
	sub := submission(
		Visit{StoreID: "S1", ImageURLs: []string{"a"}},
		Visit{StoreID: "S2", ImageURLs: []string{"b", "c"}},
		Visit{StoreID: "S1", ImageURLs: []string{"d"}},
	)
	before := []Event{bad(1, 1, "S2", "timeout"), ok(0, 0)}
	after := []Event{bad(2, 0, "S1", "http 404"), bad(1, 0, "S2", "http 500")}
	want := []StoreError{{"S1", "image http://x/img: http 404"}, {"S2", "image http://x/img: http 500"}}

	m := NewReadModel()
	m.Apply(1, SubjectSubmitted, Batch{V: 1, Events: []Event{sub}})
	m.Apply(2, JobSubject(1, KindImages), Batch{V: 1, Events: before})
	data, _, err := m.MarshalSnapshot("S")
	if err != nil {
		t.Fatal(err)
	}
	r, err := RestoreSnapshot(data, "S")
	if err != nil {
		t.Fatal(err)
	}
	for _, mm := range []*ReadModel{m, r} {
		mm.Apply(3, JobSubject(1, KindImages), Batch{V: 1, Events: after})
		mm.Apply(4, JobSubject(1, KindCompleted), Batch{V: 1, Events: []Event{&JobCompleted{Status: StatusFailed}}})
	}
	for name, mm := range map[string]*ReadModel{"original": m, "restored": r} {
		if v, _ := mm.Job(1); !reflect.DeepEqual(v.Errors, want) {
			t.Errorf("%s: errors %+v, want %+v", name, v.Errors, want)
		}
	}
}

func TestRestoreSnapshot_RefusesBadSnapshots(t *testing.T) {
	m := NewReadModel()
	// Images 0, 1 and 2 settled (1 and 2 failed, both of store S1); 3 not.
	sub := submission(Visit{StoreID: "S1", ImageURLs: []string{"a", "b"}}, Visit{StoreID: "S1", ImageURLs: []string{"c", "d"}})
	m.Apply(1, SubjectSubmitted, Batch{V: 1, Events: []Event{sub}})
	m.Apply(2, JobSubject(1, KindImages), Batch{V: 1, Events: []Event{ok(0, 0), bad(1, 0, "S1", "x"), bad(0, 1, "S1", "y")}})
	good, _, _ := m.MarshalSnapshot("S")
	if _, err := RestoreSnapshot(good, "S"); err != nil {
		t.Fatalf("good snapshot refused: %v", err)
	}
	tamper := func(edit func(*snapshotFile)) []byte {
		zr, _ := gzip.NewReader(bytes.NewReader(good))
		var f snapshotFile
		json.NewDecoder(zr).Decode(&f)
		edit(&f)
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		json.NewEncoder(zw).Encode(f)
		zw.Close()
		return buf.Bytes()
	}
	tests := map[string]struct {
		data   []byte
		stream string
		want   string
	}{
		"other stream":        {good, "T", "of stream"},
		"not gzip":            {[]byte("{}"), "S", "snapshot"},
		"future version":      {tamper(func(f *snapshotFile) { f.V = 9 }), "S", "version"},
		"counts over images":  {tamper(func(f *snapshotFile) { f.Jobs[0].Processed = 5 }), "S", "counts"},
		"bitset disagrees":    {tamper(func(f *snapshotFile) { f.Jobs[0].Settled[0] = 3 }), "S", "settled"},
		"version 1":           {tamper(func(f *snapshotFile) { f.V = 1 }), "S", "version"},
		"store index":         {tamper(func(f *snapshotFile) { f.Jobs[0].StoreFirst = []int{1, 1} }), "S", "store index"},
		"no store index":      {tamper(func(f *snapshotFile) { f.Jobs[0].StoreFirst = nil }), "S", "store index"},
		"failures missing":    {tamper(func(f *snapshotFile) { f.Jobs[0].Failures = nil }), "S", "failed stores"},
		"failure unsettled":   {tamper(func(f *snapshotFile) { f.Jobs[0].Failures[0].ImageRef = ImageRef{1, 1} }), "S", "not settled"},
		"store failed twice":  {tamper(func(f *snapshotFile) { f.Jobs[0].Failures = append(f.Jobs[0].Failures, f.Jobs[0].Failures[0]) }), "S", "twice"},
		"ongoing with errors": {tamper(func(f *snapshotFile) { f.Jobs[0].Errors = []StoreError{{"S1", "x"}} }), "S", "error list"},
		"job after seq":       {tamper(func(f *snapshotFile) { f.Jobs[0].ID = 99 }), "S", "beyond"},
		"odd status":          {tamper(func(f *snapshotFile) { f.Jobs[0].Status = "done" }), "S", "status"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := RestoreSnapshot(tt.data, tt.stream); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}
