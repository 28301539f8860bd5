// Package storemaster loads the store master: the table that maps a store id
// to the store's name and area code.
//
// The store master is a CSV file with a header row naming at least the
// columns AreaCode, StoreName and StoreID, in any order. Store names may
// contain commas inside quotes, so the file is always parsed as CSV, never
// split on commas. A loaded Master never changes and is safe for concurrent
// use.
package storemaster

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
)

// Store is one row of the store master.
type Store struct {
	ID       string
	Name     string
	AreaCode string
}

// Master is a loaded store master. It is immutable after Load and safe for
// concurrent use by any number of goroutines.
type Master struct {
	source string
	stores map[string]Store
}

// Lookup returns the store with the given id. The id is matched exactly
// (case-sensitive, no trimming).
func (m *Master) Lookup(id string) (Store, bool) {
	s, ok := m.stores[id]
	return s, ok
}

// Len returns the number of stores.
func (m *Master) Len() int { return len(m.stores) }

// Stores returns every store, ordered by id. The slice is the caller's.
func (m *Master) Stores() []Store {
	out := make([]Store, 0, len(m.stores))
	for _, s := range m.stores {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Store) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Source returns where the store master was loaded from: a file path, or
// "sample" for the embedded sample.
func (m *Master) Source() string { return m.source }

// Column names required in the header. They are matched case-insensitively
// after trimming spaces.
const (
	ColumnAreaCode  = "AreaCode"
	ColumnStoreName = "StoreName"
	ColumnStoreID   = "StoreID"
)

var requiredColumns = []string{ColumnAreaCode, ColumnStoreName, ColumnStoreID}

var utf8BOM = []byte("\ufeff")

// Load parses a store master from r. Source names the input in errors and is
// returned by Source (a file path, or a short name such as "sample").
//
// Fields are trimmed of surrounding spaces. Load rejects input that has no
// header, a header missing a required column, rows with a different number of
// fields than the header, an empty store id, a store id that appears twice,
// or no stores at all. Errors name the source and the line.
func Load(r io.Reader, source string) (*Master, error) {
	if source == "" {
		source = "store master"
	}
	br := bufio.NewReader(r)
	if b, err := br.Peek(len(utf8BOM)); err == nil && bytes.Equal(b, utf8BOM) {
		_, _ = br.Discard(len(utf8BOM))
	}
	cr := csv.NewReader(br)
	cr.ReuseRecord = true // fields are copied into Store values below

	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: empty file, want a header with columns %s", source, strings.Join(requiredColumns, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	headerLine, _ := cr.FieldPos(0)
	cols, err := columns(header)
	if err != nil {
		return nil, fmt.Errorf("%s line %d: %w", source, headerLine, err)
	}
	iArea, iName, iID := cols[0], cols[1], cols[2]

	m := &Master{source: source, stores: make(map[string]Store)}
	firstLine := make(map[string]int)
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		line, _ := cr.FieldPos(0)
		s := Store{
			ID:       strings.TrimSpace(rec[iID]),
			Name:     strings.TrimSpace(rec[iName]),
			AreaCode: strings.TrimSpace(rec[iArea]),
		}
		if s.ID == "" {
			return nil, fmt.Errorf("%s line %d: empty store id", source, line)
		}
		if first, dup := firstLine[s.ID]; dup {
			return nil, fmt.Errorf("%s line %d: duplicate store id %q (first on line %d)", source, line, s.ID, first)
		}
		firstLine[s.ID] = line
		m.stores[s.ID] = s
	}
	if len(m.stores) == 0 {
		return nil, fmt.Errorf("%s: no stores after the header", source)
	}
	return m, nil
}

// columns returns the indexes of the required columns in header, in the
// order of requiredColumns.
func columns(header []string) ([]int, error) {
	idx := make(map[string]int, len(header))
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		if name == "" {
			continue
		}
		if _, dup := idx[name]; dup {
			return nil, fmt.Errorf("duplicate column %q in header", strings.TrimSpace(h))
		}
		idx[name] = i
	}
	out := make([]int, len(requiredColumns))
	var missing []string
	for k, c := range requiredColumns {
		i, ok := idx[strings.ToLower(c)]
		if !ok {
			missing = append(missing, c)
			continue
		}
		out[k] = i
	}
	switch len(missing) {
	case 0:
		return out, nil
	case 1:
		return nil, fmt.Errorf("header missing column %q (want %s)", missing[0], strings.Join(requiredColumns, ", "))
	default:
		return nil, fmt.Errorf("header missing columns %q (want %s)", missing, strings.Join(requiredColumns, ", "))
	}
}

// LoadFile loads the store master from the CSV file at path. The path is the
// Master's Source.
func LoadFile(path string) (*Master, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Load(f, path)
}

//go:embed sample_stores.csv
var sampleCSV []byte

var sample = sync.OnceValue(func() *Master {
	m, err := Load(bytes.NewReader(sampleCSV), "sample")
	if err != nil {
		panic("storemaster: embedded sample: " + err.Error())
	}
	return m
})

// Sample returns the small store master embedded in the binary, for demos
// and tests. It includes the store ids used in the assignment's example,
// S00339218 and S01408764. Every call returns the same Master.
func Sample() *Master { return sample() }
