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
	if v, _ := r.Job(1); len(v.Errors) != 2 || v.Errors[0].StoreID != "S2" || v.Errors[1].StoreID != "S1" {
		t.Fatalf("errors after restore: %+v", v.Errors)
	}
}

func TestRestoreSnapshot_RefusesBadSnapshots(t *testing.T) {
	m := NewReadModel()
	sub := submission(Visit{StoreID: "S1", ImageURLs: []string{"a", "b"}})
	m.Apply(1, SubjectSubmitted, Batch{V: 1, Events: []Event{sub}})
	m.Apply(2, JobSubject(1, KindImages), Batch{V: 1, Events: []Event{ok(0, 0)}})
	good, _, _ := m.MarshalSnapshot("S")
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
		"other stream":       {good, "T", "of stream"},
		"not gzip":           {[]byte("{}"), "S", "snapshot"},
		"future version":     {tamper(func(f *snapshotFile) { f.V = 9 }), "S", "version"},
		"counts over images": {tamper(func(f *snapshotFile) { f.Jobs[0].Processed = 5 }), "S", "counts"},
		"bitset disagrees":   {tamper(func(f *snapshotFile) { f.Jobs[0].Settled[0] = 3 }), "S", "settled"},
		"job after seq":      {tamper(func(f *snapshotFile) { f.Jobs[0].ID = 99 }), "S", "beyond"},
		"odd status":         {tamper(func(f *snapshotFile) { f.Jobs[0].Status = "done" }), "S", "status"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := RestoreSnapshot(tt.data, tt.stream); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}
