package sqlview

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events"
)

// explain returns the query plan of q, one step per line.
func explain(t *testing.T, v *View, q string, args ...any) string {
	t.Helper()
	rows, err := v.r.Query("EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	return strings.Join(plan, "; ")
}

// The images of a page of visits are looked up by primary key: neither
// scanned nor sorted.
func TestPageImagesQuery_LooksUpByPrimaryKey(t *testing.T) {
	v, err := Open(context.Background(), filepath.Join(t.TempDir(), "readmodel.db"), Options{Log: Log{Stream: "S", Created: "c", LastSeq: 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	plan := explain(t, v, pageImagesQuery(3), 1, 0, 1, 1, 2, 0, 1000)
	if !strings.Contains(plan, "SEARCH images USING PRIMARY KEY (job_id=? AND visit=? AND idx<?)") || strings.Contains(plan, "SCAN images") || strings.Contains(plan, "TEMP B-TREE") {
		t.Fatalf("plan %q", plan)
	}
	t.Log(plan)
}

// Every page of visits is read in page order from an index: SQLite never
// sorts (no "TEMP B-TREE"), so a page costs its own rows whatever the
// history's size.
func TestVisitQuery_PagesAreIndexRangeScans(t *testing.T) {
	v, err := Open(context.Background(), filepath.Join(t.TempDir(), "readmodel.db"), Options{
		Log: Log{Stream: "S", Created: "c", LastSeq: 10}, Stores: []Store{{ID: "S1", Name: "n", AreaCode: "A1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	week := time.Date(2026, 11, 16, 0, 0, 0, 0, time.UTC)
	cursor := encodeCursor(cursorVisits, week.UnixMilli(), 5, 0)
	for _, f := range []events.VisitFilter{
		{},
		{AreaCode: "A1"},
		{AreaCode: "A1", From: week, To: week.AddDate(0, 0, 7)},
		{StoreID: "S1", From: week},
		{StoreID: "S1", AreaCode: "A1", To: week},
		{To: week, Status: events.VisitFailed},
		{AreaCode: "A1", From: week, Cursor: cursor},
		{StoreID: "S1", Cursor: cursor, Status: events.VisitPending},
	} {
		q, args, err := visitQuery(f, 101)
		if err != nil {
			t.Fatal(err)
		}
		text := explain(t, v, q, args...)
		if strings.Contains(text, "TEMP B-TREE") || !strings.Contains(text, "USING INDEX") && !strings.Contains(text, "USING COVERING INDEX") {
			t.Errorf("filter %+v: plan %q", f, text)
		}
		t.Logf("%+v: %s", f, text)
	}
}

// A job's stores read the job's visits and one visit's images by primary
// key, never a scan of the tables.
func TestJobStoresQueries_LookUpByPrimaryKey(t *testing.T) {
	v, err := Open(context.Background(), filepath.Join(t.TempDir(), "readmodel.db"), Options{Log: Log{Stream: "S", Created: "c", LastSeq: 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	plan := explain(t, v, jobStoresQuery, 1)
	if !strings.Contains(plan, "SEARCH v USING PRIMARY KEY (job_id=?)") || strings.Contains(plan, "SCAN v") {
		t.Fatalf("stores plan %q", plan)
	}
	t.Log(plan)
	plan = explain(t, v, firstFailureQuery, 1, 0, stateFailed)
	if !strings.Contains(plan, "SEARCH images USING PRIMARY KEY (job_id=? AND visit=?)") || strings.Contains(plan, "TEMP B-TREE") {
		t.Fatalf("first failure plan %q", plan)
	}
	t.Log(plan)
}
