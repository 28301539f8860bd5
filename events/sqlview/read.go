package sqlview

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/retailpulse/retailpulse/events"
)

// readStmts are the readers' prepared statements on hot paths.
type readStmts struct {
	job *sql.Stmt
}

func (s *readStmts) prepare(ctx context.Context, db *sql.DB) error {
	for _, p := range []struct {
		st  **sql.Stmt
		sql string
	}{
		{&s.job, `SELECT status, images, processed, failed, errors FROM jobs WHERE job_id = ?`},
	} {
		st, err := db.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("sqlview: prepare %q: %w", p.sql, err)
		}
		*p.st = st
	}
	return nil
}

func (s *readStmts) close() {
	for _, st := range []*sql.Stmt{s.job} {
		if st != nil {
			st.Close()
		}
	}
}

// Job returns a job's view as of the last committed transaction, or
// events.ErrJobNotFound. It is what events.JobState.View returns for the
// same history. A recently submitted job is answered from the job cache
// (see jobCache), never older than what LastSeq covers; others from the
// database.
func (v *View) Job(ctx context.Context, id uint64) (events.JobView, error) {
	if jv, ok := v.cache.get(id); ok {
		return jv, nil
	}
	return v.jobRow(ctx, id)
}

// jobRow reads job id's row from the database.
func (v *View) jobRow(ctx context.Context, id uint64) (events.JobView, error) {
	var status string
	var errs sql.NullString
	jv := events.JobView{ID: id}
	err := v.rs.job.QueryRowContext(ctx, id).Scan(&status, &jv.Images, &jv.Processed, &jv.Failed, &errs)
	if errors.Is(err, sql.ErrNoRows) {
		return events.JobView{}, events.ErrJobNotFound
	}
	if err != nil {
		return events.JobView{}, fmt.Errorf("sqlview: job %d: %w", id, err)
	}
	jv.Status = events.Status(status)
	if jv.Status == events.StatusFailed {
		if jv.Errors, err = decodeErrors(errs); err != nil {
			return events.JobView{}, err
		}
	}
	return jv, nil
}

// EachJob calls fn with every job's view in id order, reading in pages, so
// it holds no more than a page in memory. fn returning an error stops it
// with that error.
func (v *View) EachJob(ctx context.Context, fn func(events.JobView) error) error {
	after := uint64(0)
	for {
		rows, err := v.r.QueryContext(ctx, `SELECT job_id, status, images, processed, failed, errors FROM jobs WHERE job_id > ? ORDER BY job_id LIMIT 1000`, after)
		if err != nil {
			return fmt.Errorf("sqlview: jobs: %w", err)
		}
		var page []events.JobView
		for rows.Next() {
			var jv events.JobView
			var status string
			var errs sql.NullString
			if err := rows.Scan(&jv.ID, &status, &jv.Images, &jv.Processed, &jv.Failed, &errs); err != nil {
				rows.Close()
				return fmt.Errorf("sqlview: jobs: %w", err)
			}
			jv.Status = events.Status(status)
			if jv.Status == events.StatusFailed {
				if jv.Errors, err = decodeErrors(errs); err != nil {
					rows.Close()
					return err
				}
			}
			page = append(page, jv)
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("sqlview: jobs: %w", err)
		}
		if len(page) == 0 {
			return nil
		}
		for _, jv := range page {
			if err := fn(jv); err != nil {
				return err
			}
		}
		after = page[len(page)-1].ID
	}
}

// CheckCounters lists every job and visit whose counters disagree with its
// image rows (a database fault, never a state the rules produce).
func (v *View) CheckCounters(ctx context.Context) ([]string, error) {
	var out []string
	for _, q := range []struct{ what, sql string }{
		{"job", `SELECT j.job_id, -1, j.images, j.processed, j.failed, count(i.idx), sum(i.state = 1), sum(i.state = 2)
			FROM jobs j LEFT JOIN images i ON i.job_id = j.job_id GROUP BY j.job_id
			HAVING j.images != count(i.idx) OR j.processed != coalesce(sum(i.state = 1), 0) OR j.failed != coalesce(sum(i.state = 2), 0)`},
		{"visit", `SELECT v.job_id, v.visit, v.images, v.processed, v.failed, count(i.idx), sum(i.state = 1), sum(i.state = 2)
			FROM visits v LEFT JOIN images i ON i.job_id = v.job_id AND i.visit = v.visit GROUP BY v.job_id, v.visit
			HAVING v.images != count(i.idx) OR v.processed != coalesce(sum(i.state = 1), 0) OR v.failed != coalesce(sum(i.state = 2), 0)`},
	} {
		rows, err := v.r.QueryContext(ctx, q.sql)
		if err != nil {
			return nil, fmt.Errorf("sqlview: check counters: %w", err)
		}
		for rows.Next() {
			var id uint64
			var visit, images, processed, failed, rowsN int
			var rowsP, rowsF sql.NullInt64
			if err := rows.Scan(&id, &visit, &images, &processed, &failed, &rowsN, &rowsP, &rowsF); err != nil {
				rows.Close()
				return nil, fmt.Errorf("sqlview: check counters: %w", err)
			}
			where := fmt.Sprintf("job %d", id)
			if visit >= 0 {
				where += fmt.Sprintf(" visit %d", visit)
			}
			out = append(out, fmt.Sprintf("%s: counters say %d images, %d processed, %d failed; its image rows %d, %d, %d",
				where, images, processed, failed, rowsN, rowsP.Int64, rowsF.Int64))
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("sqlview: check counters: %w", err)
		}
	}
	return out, nil
}
