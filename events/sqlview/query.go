package sqlview

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/retailpulse/retailpulse/events"
)

// The API's queries. Each runs in one read transaction, so a page is one
// consistent state of the database, and only reads committed data.

// maxPageImages bounds the images of one page of visits: a page ends
// before limit when its visits hold more.
const maxPageImages = 10_000

// readTx runs fn in a read transaction.
func (v *View) readTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := v.r.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlview: %w", err)
	}
	defer tx.Rollback()
	return fn(tx)
}

func stateName(s int) string {
	switch s {
	case stateProcessed:
		return events.ImageProcessedState
	case stateFailed:
		return events.ImageFailedState
	}
	return events.ImagePendingState
}

func visitStatus(images, processed, failed int) events.VisitStatus {
	switch {
	case failed > 0:
		return events.VisitFailed
	case processed < images:
		return events.VisitPending
	}
	return events.VisitProcessed
}

// timeBounds turns inclusive bounds (zero = none) into visit_ts bounds; ok
// is false when there is no bound at all.
func timeBounds(from, to time.Time) (lo, hi int64, ok bool) {
	if from.IsZero() && to.IsZero() {
		return 0, 0, false
	}
	lo, hi = noTime+1, math.MaxInt64
	if !from.IsZero() {
		lo = max(lo, from.UnixMilli())
	}
	if !to.IsZero() {
		hi = to.UnixMilli()
	}
	return lo, hi, true
}

// Visits returns a page of the visits that match f, newest visit_time
// first (visits whose visit_time does not parse last), each with its store
// and up to events.MaxPageLimit of its images.
func (v *View) Visits(ctx context.Context, f events.VisitFilter) (events.VisitPage, error) {
	limit := pageLimit(f.Limit)
	q, args, err := visitQuery(f, limit+1)
	if err != nil {
		return events.VisitPage{}, err
	}
	var page events.VisitPage
	err = v.readTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		var ts []int64
		for rows.Next() {
			var vv events.VisitView
			var t int64
			if err := rows.Scan(&vv.JobID, &vv.Visit, &vv.StoreID, &vv.StoreName, &vv.AreaCode, &vv.VisitTime, &t, &vv.ImageCount, &vv.Processed, &vv.Failed); err != nil {
				rows.Close()
				return err
			}
			vv.Status = visitStatus(vv.ImageCount, vv.Processed, vv.Failed)
			page.Visits = append(page.Visits, vv)
			ts = append(ts, t)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		more := len(page.Visits) > limit
		if more {
			page.Visits = page.Visits[:limit]
		}
		budget := maxPageImages
		for i := range page.Visits {
			n := min(page.Visits[i].ImageCount, events.MaxPageLimit)
			if i > 0 && n > budget {
				page.Visits, more = page.Visits[:i], true
				break
			}
			budget -= n
		}
		if err := pageImages(ctx, tx, page.Visits); err != nil {
			return err
		}
		if more {
			last := page.Visits[len(page.Visits)-1]
			page.Next = encodeCursor(cursorVisits, ts[len(page.Visits)-1], int64(last.JobID), int64(last.Visit))
		}
		return nil
	})
	if err != nil {
		return events.VisitPage{}, fmt.Errorf("sqlview: visits: %w", err)
	}
	return page, nil
}

// visitQuery returns the query of the visits matching f (limit rows), or
// events.ErrBadCursor.
func visitQuery(f events.VisitFilter, limit int) (string, []any, error) {
	var where []string
	var args []any
	// The index that makes the page a range scan: store, else area, else
	// time. Each ends in (visit_ts, job_id, visit), the page order.
	index := "visits_by_time"
	if f.StoreID != "" {
		where, args = append(where, "v.store_id = ?"), append(args, f.StoreID)
		index = "visits_by_store_time"
	}
	if f.AreaCode != "" {
		where, args = append(where, "v.area_code = ?"), append(args, f.AreaCode)
		if f.StoreID == "" {
			index = "visits_by_area_time"
		}
	}
	keys, err := decodeCursor(f.Cursor, cursorVisits, 3)
	if err != nil {
		return "", nil, err
	}
	lo, hi, bounded := timeBounds(f.From, f.To)
	if keys != nil {
		// The next page starts at the cursor's time: the range scan begins
		// there, not at the top of the list.
		if !bounded {
			lo, hi, bounded = noTime, math.MaxInt64, true
		}
		hi = min(hi, keys[0])
	}
	if bounded {
		where, args = append(where, "v.visit_ts BETWEEN ? AND ?"), append(args, lo, hi)
	}
	switch f.Status {
	case "":
	case events.VisitProcessed:
		where = append(where, "v.processed = v.images")
	case events.VisitFailed:
		where = append(where, "v.failed > 0")
	case events.VisitPending:
		where = append(where, "v.failed = 0 AND v.processed < v.images")
	default:
		return "", nil, fmt.Errorf("sqlview: unknown visit status %q", f.Status)
	}
	if keys != nil {
		where, args = append(where, "(v.visit_ts, v.job_id, v.visit) < (?, ?, ?)"), append(args, keys[0], keys[1], keys[2])
	}
	if len(where) == 0 {
		where = append(where, "1")
	}
	// index is one of three constants above, never client text.
	q := `SELECT v.job_id, v.visit, v.store_id, coalesce(s.store_name, ''), v.area_code, v.visit_time, v.visit_ts, v.images, v.processed, v.failed
		FROM visits v INDEXED BY ` + index + ` LEFT JOIN stores s ON s.store_id = v.store_id
		WHERE ` + strings.Join(where, " AND ") + `
		ORDER BY v.visit_ts DESC, v.job_id DESC, v.visit DESC LIMIT ?`
	return q, append(args, limit), nil
}

// pageImagesQuery selects the images of n visits, given as n (job_id,
// visit) pairs and a bound on idx.
func pageImagesQuery(n int) string {
	var q strings.Builder
	q.WriteString(`SELECT job_id, visit, idx, url, state, width, height, perimeter, error FROM images
		WHERE (job_id, visit) IN (VALUES `)
	for i := range n {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?)")
	}
	q.WriteString(") AND idx < ?") // pageImages orders each visit's images
	return q.String()
}

// pageImages fills in the images of visits (the first
// events.MaxPageLimit of each) with one query.
func pageImages(ctx context.Context, tx *sql.Tx, visits []events.VisitView) error {
	if len(visits) == 0 {
		return nil
	}
	at := make(map[[2]int64]int, len(visits))
	args := make([]any, 0, 2*len(visits)+1)
	for i := range visits {
		args = append(args, visits[i].JobID, visits[i].Visit)
		at[[2]int64{int64(visits[i].JobID), int64(visits[i].Visit)}] = i
		visits[i].Images = make([]events.VisitImage, 0, min(visits[i].ImageCount, events.MaxPageLimit))
	}
	args = append(args, events.MaxPageLimit)
	rows, err := tx.QueryContext(ctx, pageImagesQuery(len(visits)), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var job, visit int64
		var im events.VisitImage
		var state int
		var w, h, p sql.NullInt64
		var e sql.NullString
		if err := rows.Scan(&job, &visit, &im.Index, &im.URL, &state, &w, &h, &p, &e); err != nil {
			return err
		}
		im.State, im.Width, im.Height, im.Perimeter, im.Error = stateName(state), int(w.Int64), int(h.Int64), int(p.Int64), e.String
		if i, ok := at[[2]int64{job, visit}]; ok {
			visits[i].Images = append(visits[i].Images, im)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	byIndex := func(a, b events.VisitImage) int { return a.Index - b.Index }
	for i := range visits {
		if !slices.IsSortedFunc(visits[i].Images, byIndex) {
			slices.SortFunc(visits[i].Images, byIndex)
		}
	}
	return nil
}

// dayExpr is visit_ts's UTC day (days since 1970-01-01, floored).
const dayExpr = `CASE WHEN visit_ts >= 0 THEN visit_ts / 86400000 ELSE (visit_ts + 1) / 86400000 - 1 END`

// StoreSummary counts a store's visits and images whose visit_time is
// within [from, to] (zero = unbounded; with no bound at all, visits whose
// time does not parse count in the totals but in no day). It answers
// events.ErrStoreNotFound for a store neither in the store master nor in
// any visit.
func (v *View) StoreSummary(ctx context.Context, storeID string, from, to time.Time) (events.StoreSummary, error) {
	sum := events.StoreSummary{StoreID: storeID, Days: []events.DayCount{}}
	lo, hi, bounded := timeBounds(from, to)
	if !bounded {
		lo, hi = noTime, math.MaxInt64
	}
	err := v.readTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT store_name, area_code FROM stores WHERE store_id = ?`, storeID).Scan(&sum.StoreName, &sum.AreaCode)
		if errors.Is(err, sql.ErrNoRows) {
			err = tx.QueryRowContext(ctx, `SELECT area_code FROM visits INDEXED BY visits_by_store_time WHERE store_id = ? LIMIT 1`, storeID).Scan(&sum.AreaCode)
			if errors.Is(err, sql.ErrNoRows) {
				return events.ErrStoreNotFound
			}
		}
		if err != nil {
			return err
		}
		err = tx.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(images), 0), coalesce(sum(processed), 0), coalesce(sum(failed), 0)
			FROM visits INDEXED BY visits_by_store_time WHERE store_id = ? AND visit_ts BETWEEN ? AND ?`, storeID, lo, hi).
			Scan(&sum.Visits, &sum.Images, &sum.Processed, &sum.Failed)
		if err != nil {
			return err
		}
		sum.Pending = sum.Images - sum.Processed - sum.Failed
		rows, err := tx.QueryContext(ctx, `SELECT `+dayExpr+` AS day, count(*), sum(images), sum(processed), sum(failed)
			FROM visits INDEXED BY visits_by_store_time WHERE store_id = ? AND visit_ts BETWEEN ? AND ?
			GROUP BY day ORDER BY day`, storeID, max(lo, noTime+1), hi)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var day int64
			var d events.DayCount
			if err := rows.Scan(&day, &d.Visits, &d.Images, &d.Processed, &d.Failed); err != nil {
				return err
			}
			d.Date = time.UnixMilli(day * 86_400_000).UTC().Format(time.DateOnly)
			sum.Days = append(sum.Days, d)
		}
		return rows.Err()
	})
	if errors.Is(err, events.ErrStoreNotFound) {
		return events.StoreSummary{}, err
	}
	if err != nil {
		return events.StoreSummary{}, fmt.Errorf("sqlview: store summary: %w", err)
	}
	return sum, nil
}

// Jobs returns a page of jobs, newest first, of one status ("" = all).
func (v *View) Jobs(ctx context.Context, status events.Status, limit int, cursor string) (events.JobPage, error) {
	limit = pageLimit(limit)
	keys, err := decodeCursor(cursor, cursorJobs, 1)
	if err != nil {
		return events.JobPage{}, err
	}
	before := int64(math.MaxInt64)
	if keys != nil {
		before = keys[0]
	}
	q := `SELECT job_id, status, submitted_at, images, processed, failed FROM jobs WHERE job_id < ? ORDER BY job_id DESC LIMIT ?`
	args := []any{before, limit + 1}
	if status != "" {
		q = `SELECT job_id, status, submitted_at, images, processed, failed FROM jobs INDEXED BY jobs_by_status
			WHERE status = ? AND job_id < ? ORDER BY job_id DESC LIMIT ?`
		args = append([]any{string(status)}, args...)
	}
	var page events.JobPage
	err = v.readTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var j events.JobSummary
			var st string
			var at int64
			if err := rows.Scan(&j.JobID, &st, &at, &j.Images, &j.Processed, &j.Failed); err != nil {
				return err
			}
			j.Status, j.SubmittedAt = events.Status(st), time.UnixMilli(at).UTC()
			page.Jobs = append(page.Jobs, j)
		}
		return rows.Err()
	})
	if err != nil {
		return events.JobPage{}, fmt.Errorf("sqlview: jobs: %w", err)
	}
	if len(page.Jobs) > limit {
		page.Jobs = page.Jobs[:limit]
		page.Next = encodeCursor(cursorJobs, int64(page.Jobs[limit-1].JobID))
	}
	return page, nil
}

// Results returns a job's status and a page of its images' results in
// submission order (visit, then index), or events.ErrJobNotFound.
func (v *View) Results(ctx context.Context, id uint64, limit int, cursor string) (events.ResultPage, error) {
	limit = pageLimit(limit)
	keys, err := decodeCursor(cursor, cursorResults, 2)
	if err != nil {
		return events.ResultPage{}, err
	}
	after := []int64{-1, -1}
	if keys != nil {
		after = keys
	}
	var page events.ResultPage
	err = v.readTx(ctx, func(tx *sql.Tx) error {
		var st string
		if err := tx.QueryRowContext(ctx, `SELECT status FROM jobs WHERE job_id = ?`, id).Scan(&st); err != nil {
			return err
		}
		page.Status = events.Status(st)
		rows, err := tx.QueryContext(ctx, `SELECT i.visit, i.idx, v.store_id, i.url, i.state, i.width, i.height, i.perimeter, i.error
			FROM images i JOIN visits v ON v.job_id = i.job_id AND v.visit = i.visit
			WHERE i.job_id = ? AND (i.visit, i.idx) > (?, ?) ORDER BY i.visit, i.idx LIMIT ?`, id, after[0], after[1], limit+1)
		if err != nil {
			return err
		}
		defer rows.Close()
		page.Images = []events.ImageResult{}
		for rows.Next() {
			var r events.ImageResult
			var state int
			var w, h, p sql.NullInt64
			var e sql.NullString
			if err := rows.Scan(&r.Visit, &r.Index, &r.StoreID, &r.URL, &state, &w, &h, &p, &e); err != nil {
				return err
			}
			r.State, r.Width, r.Height, r.Perimeter, r.Error = stateName(state), int(w.Int64), int(h.Int64), int(p.Int64), e.String
			page.Images = append(page.Images, r)
		}
		return rows.Err()
	})
	if errors.Is(err, sql.ErrNoRows) {
		return events.ResultPage{}, events.ErrJobNotFound
	}
	if err != nil {
		return events.ResultPage{}, fmt.Errorf("sqlview: results of job %d: %w", id, err)
	}
	if len(page.Images) > limit {
		page.Images = page.Images[:limit]
		last := page.Images[limit-1]
		page.Next = encodeCursor(cursorResults, int64(last.Visit), int64(last.Index))
	}
	return page, nil
}

// The queries of JobStores: a job's visits grouped by store (a primary key
// range of visits), and a visit's first failed image (a primary key range
// of images).
const (
	jobStoresQuery = `SELECT v.store_id, coalesce(s.store_name, ''), v.area_code,
			count(*), sum(v.images), sum(v.processed), sum(v.failed), min(v.visit),
			min(CASE WHEN v.failed > 0 THEN v.visit END)
		FROM visits v LEFT JOIN stores s ON s.store_id = v.store_id
		WHERE v.job_id = ? GROUP BY v.store_id ORDER BY min(v.visit)`
	firstFailureQuery = `SELECT idx, url, error FROM images
		WHERE job_id = ? AND visit = ? AND state = ? ORDER BY idx LIMIT 1`
)

// JobStores returns a job's status and its stores, in the order of each
// store's first visit, with their counters and first failed image, or
// events.ErrJobNotFound. It reads the job's visits (an index range: at
// most the job's visit count) and one image per store that failed.
func (v *View) JobStores(ctx context.Context, id uint64) (events.JobStores, error) {
	var out events.JobStores
	err := v.readTx(ctx, func(tx *sql.Tx) error {
		var st string
		if err := tx.QueryRowContext(ctx, `SELECT status FROM jobs WHERE job_id = ?`, id).Scan(&st); err != nil {
			return err
		}
		out.Status = events.Status(st)
		rows, err := tx.QueryContext(ctx, jobStoresQuery, id)
		if err != nil {
			return err
		}
		var failedVisit []sql.NullInt64
		out.Stores = []events.JobStore{}
		for rows.Next() {
			var s events.JobStore
			var first int
			var fv sql.NullInt64
			if err := rows.Scan(&s.StoreID, &s.StoreName, &s.AreaCode, &s.Visits, &s.Images, &s.Processed, &s.Failed, &first, &fv); err != nil {
				rows.Close()
				return err
			}
			out.Stores = append(out.Stores, s)
			failedVisit = append(failedVisit, fv)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		for i, fv := range failedVisit {
			if !fv.Valid {
				continue
			}
			f := events.StoreFailure{Visit: int(fv.Int64)}
			var reason sql.NullString
			err := tx.QueryRowContext(ctx, firstFailureQuery, id, fv.Int64, stateFailed).
				Scan(&f.Index, &f.URL, &reason)
			if err != nil {
				return err
			}
			f.Reason = reason.String
			out.Stores[i].FirstFailure = &f
		}
		return nil
	})
	if errors.Is(err, sql.ErrNoRows) {
		return events.JobStores{}, events.ErrJobNotFound
	}
	if err != nil {
		return events.JobStores{}, fmt.Errorf("sqlview: stores of job %d: %w", id, err)
	}
	return out, nil
}

// CountJobs returns how many jobs have the status (an index range of
// jobs_by_status: cheap for the few jobs in progress, not for a history).
func (v *View) CountJobs(ctx context.Context, status events.Status) (int, error) {
	var n int
	err := v.r.QueryRowContext(ctx, `SELECT count(*) FROM jobs INDEXED BY jobs_by_status WHERE status = ?`, string(status)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("sqlview: count jobs: %w", err)
	}
	return n, nil
}
