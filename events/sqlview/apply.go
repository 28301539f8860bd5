package sqlview

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/retailpulse/retailpulse/events"
)

// Image states in the images table.
const (
	statePending   = 0
	stateProcessed = 1
	stateFailed    = 2
)

// writeStmts are the writer's prepared statements (the hot path of the
// projection).
type writeStmts struct {
	insJob, insVisit, insImage, insImages, jobStatus, settleProcessed, settleFailed, imageExists,
	addVisit, addJob, completeJob, failedImages, visitStores, progress *sql.Stmt
}

func (s *writeStmts) prepare(ctx context.Context, db *sql.DB) error {
	for _, p := range []struct {
		st  **sql.Stmt
		sql string
	}{
		{&s.insJob, `INSERT INTO jobs (job_id, status, submitted_at, images) VALUES (?, 'ongoing', ?, ?)`},
		{&s.insVisit, `INSERT INTO visits (job_id, visit, store_id, area_code, visit_time, visit_ts, images) VALUES (?, ?, ?, ?, ?, ?, ?)`},
		{&s.insImage, `INSERT INTO images (job_id, visit, idx, url) VALUES (?, ?, ?, ?)`},
		{&s.insImages, `INSERT INTO images (job_id, visit, idx, url) VALUES (?, ?, ?, ?)` + strings.Repeat(`, (?, ?, ?, ?)`, imageRowsPerInsert-1)},
		{&s.jobStatus, `SELECT status FROM jobs WHERE job_id = ?`},
		// The first outcome of an image wins: only a pending image settles.
		{&s.settleProcessed, `UPDATE images SET state = 1, width = ?, height = ?, perimeter = ?
			WHERE job_id = ? AND visit = ? AND idx = ? AND state = 0`},
		{&s.settleFailed, `UPDATE images SET state = 2, error = ?
			WHERE job_id = ? AND visit = ? AND idx = ? AND state = 0`},
		{&s.imageExists, `SELECT 1 FROM images WHERE job_id = ? AND visit = ? AND idx = ?`},
		{&s.addVisit, `UPDATE visits SET processed = processed + ?, failed = failed + ? WHERE job_id = ? AND visit = ?`},
		{&s.addJob, `UPDATE jobs SET processed = processed + ?, failed = failed + ? WHERE job_id = ?`},
		{&s.completeJob, `UPDATE jobs SET status = ?, errors = ? WHERE job_id = ?`},
		{&s.failedImages, `SELECT visit, idx, url, error FROM images WHERE job_id = ? AND state = 2 ORDER BY visit, idx`},
		{&s.visitStores, `SELECT visit, store_id FROM visits WHERE job_id = ? ORDER BY visit`},
		{&s.progress, `UPDATE progress SET last_seq = ?, events_applied = events_applied + ?,
			events_duplicate = events_duplicate + ?, messages_bad = messages_bad + ? WHERE id = 1`},
	} {
		st, err := db.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("sqlview: prepare %q: %w", p.sql, err)
		}
		*p.st = st
	}
	return nil
}

func (s *writeStmts) close() {
	for _, st := range []*sql.Stmt{s.insJob, s.insVisit, s.insImage, s.insImages, s.jobStatus, s.settleProcessed, s.settleFailed,
		s.imageExists, s.addVisit, s.addJob, s.completeJob, s.failedImages, s.visitStores, s.progress} {
		if st != nil {
			st.Close()
		}
	}
}

// inTx binds every statement to tx.
func (s *writeStmts) inTx(ctx context.Context, tx *sql.Tx) writeStmts {
	b := func(st *sql.Stmt) *sql.Stmt { return tx.StmtContext(ctx, st) }
	return writeStmts{
		insJob: b(s.insJob), insVisit: b(s.insVisit), insImage: b(s.insImage), insImages: b(s.insImages), jobStatus: b(s.jobStatus),
		settleProcessed: b(s.settleProcessed), settleFailed: b(s.settleFailed), imageExists: b(s.imageExists),
		addVisit: b(s.addVisit), addJob: b(s.addJob), completeJob: b(s.completeJob),
		failedImages: b(s.failedImages), visitStores: b(s.visitStores), progress: b(s.progress),
	}
}

// problem is a message that cannot be applied: reported, skipped, never
// fatal. Every other error of an apply is the database's and fatal.
type problem struct{ error }

// ApplyMessages applies msgs (in stream order) in one transaction, together
// with the last sequence they reach, so each message is applied exactly
// once: messages at or below LastSeq are ignored (counted as duplicates). A
// message that cannot be applied is reported in the report's Problems and
// skipped; the sequence advances past it.
//
// An error means the database could not store the run: nothing of it is
// applied (the transaction is rolled back, also when ctx ends first) and
// the caller may retry the same messages. Called by one goroutine at a
// time; waiters in WaitFor are released after the commit.
func (v *View) ApplyMessages(ctx context.Context, msgs []events.Message) (events.ApplyReport, error) {
	var rep events.ApplyReport
	last := v.LastSeq()
	start := 0
	for start < len(msgs) && msgs[start].Seq <= last {
		rep.Duplicates += len(msgs[start].Batch.Events)
		start++
	}
	msgs = msgs[start:]
	if len(msgs) == 0 {
		return rep, nil
	}
	tx, err := v.w.BeginTx(ctx, nil)
	if err != nil {
		return events.ApplyReport{}, fmt.Errorf("sqlview: begin: %w", err)
	}
	defer tx.Rollback()
	// Statements run without ctx's cancellation: the driver would start a
	// goroutine per statement to watch it. The transaction still ends with
	// ctx (database/sql rolls it back), and ctx is checked between messages.
	a := applier{ctx: context.WithoutCancel(ctx), st: v.ws.inTx(ctx, tx), areas: v.areas}
	bad := 0
	for _, m := range msgs {
		if err := ctx.Err(); err != nil {
			return events.ApplyReport{}, fmt.Errorf("sqlview: apply: %w", err)
		}
		if m.Seq <= last {
			rep.Duplicates += len(m.Batch.Events)
			continue
		}
		last = m.Seq
		if m.Err != nil {
			bad++
			rep.Problems = append(rep.Problems, fmt.Errorf("seq %d (%s): undecodable: %w", m.Seq, m.Subject, m.Err))
			continue
		}
		res, err := a.apply(m)
		rep.Applied += res.Applied
		rep.Duplicates += res.Duplicates
		if p, ok := errors.AsType[problem](err); ok {
			bad++
			rep.Problems = append(rep.Problems, fmt.Errorf("seq %d: %w", m.Seq, p.error))
			continue
		}
		if err != nil {
			return events.ApplyReport{}, fmt.Errorf("sqlview: apply seq %d: %w", m.Seq, err)
		}
	}
	if _, err := a.st.progress.ExecContext(a.ctx, last, rep.Applied, rep.Duplicates, bad); err != nil {
		return events.ApplyReport{}, fmt.Errorf("sqlview: apply: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return events.ApplyReport{}, fmt.Errorf("sqlview: commit: %w", err)
	}
	v.cache.apply(a.ops) // after the commit, before readers waiting for last are released
	v.advance(last)
	return rep, nil
}

// applier applies messages inside one transaction.
type applier struct {
	ctx   context.Context
	st    writeStmts
	areas map[string]string // store id -> area code; read only
	ops   []cacheOp         // changes to jobs rows, for the job cache once committed
}

func (a *applier) apply(m events.Message) (events.ApplyResult, error) {
	if m.Subject == events.SubjectSubmitted {
		sub, ok := m.Batch.Events[0].(*events.JobSubmitted)
		if !ok || len(m.Batch.Events) != 1 {
			return events.ApplyResult{}, problem{fmt.Errorf("submission holds %d events, first %s", len(m.Batch.Events), m.Batch.Events[0].EventType())}
		}
		return events.ApplyResult{Applied: 1}, a.submit(m.Seq, sub)
	}
	id, _, ok := events.ParseJobSubject(m.Subject)
	if !ok {
		return events.ApplyResult{}, problem{fmt.Errorf("unexpected subject %q", m.Subject)}
	}
	return a.jobEvents(id, m.Batch.Events)
}

// imageRowsPerInsert is how many image rows one INSERT of a submission
// carries (BenchmarkView_ApplySubmission, W1's 500-image job: 2.1-2.5 ms
// with a statement per row, 1.4 ms with 64 rows a statement).
const imageRowsPerInsert = 64

// submit inserts a job, its visits and its pending images.
func (a *applier) submit(id uint64, sub *events.JobSubmitted) error {
	if _, err := a.st.insJob.ExecContext(a.ctx, id, sub.SubmittedAt.UnixMilli(), sub.Images()); err != nil {
		return err
	}
	a.ops = append(a.ops, cacheOp{id: id, kind: opInsert, images: sub.Images()})
	rows := make([]any, 0, 4*imageRowsPerInsert) // image rows not inserted yet
	for vi, visit := range sub.Visits {
		ts := noTime
		if t, ok := ParseVisitTime(visit.VisitTime); ok {
			ts = t.UnixMilli()
		}
		if _, err := a.st.insVisit.ExecContext(a.ctx, id, vi, visit.StoreID, a.areas[visit.StoreID], visit.VisitTime, ts, len(visit.ImageURLs)); err != nil {
			return err
		}
		for i, u := range visit.ImageURLs {
			rows = append(rows, id, vi, i, u)
			if len(rows) == cap(rows) {
				if _, err := a.st.insImages.ExecContext(a.ctx, rows...); err != nil {
					return err
				}
				rows = rows[:0]
			}
		}
	}
	for r := 0; r < len(rows); r += 4 {
		if _, err := a.st.insImage.ExecContext(a.ctx, rows[r:r+4]...); err != nil {
			return err
		}
	}
	return nil
}

// counts are settled images to add to a job's or a visit's counters.
type counts struct{ processed, failed int }

// jobEvents folds one message of job id's events, by the rules of
// events.JobState.Apply: the first outcome of an image wins, everything
// after job_completed is ignored, job_started and job_requeued change no
// row, and an image outside the job is a problem (the message's other
// events still apply).
func (a *applier) jobEvents(id uint64, evs []events.Event) (events.ApplyResult, error) {
	var res events.ApplyResult
	var status string
	err := a.st.jobStatus.QueryRowContext(a.ctx, id).Scan(&status)
	if errors.Is(err, sql.ErrNoRows) {
		return res, problem{fmt.Errorf("events for job %d, which was never submitted", id)}
	}
	if err != nil {
		return res, err
	}
	completed := status != string(events.StatusOngoing)
	var job counts
	visits := map[int]counts{}
	var firstProblem error
	for _, ev := range evs {
		if completed {
			res.Duplicates++
			continue
		}
		switch e := ev.(type) {
		case *events.JobSubmitted, *events.JobRequeued:
			res.Duplicates++
		case *events.JobStarted:
			res.Applied++
		case *events.ImageProcessed, *events.ImageFailed:
			var r sql.Result
			var ref events.ImageRef
			var failed bool
			if p, ok := e.(*events.ImageProcessed); ok {
				ref = p.ImageRef
				r, err = a.st.settleProcessed.ExecContext(a.ctx, p.Width, p.Height, p.Perimeter, id, p.Visit, p.Index)
			} else {
				f := e.(*events.ImageFailed)
				ref, failed = f.ImageRef, true
				r, err = a.st.settleFailed.ExecContext(a.ctx, f.Reason, id, f.Visit, f.Index)
			}
			settled, err := a.settled(r, err, id, ref)
			if err != nil {
				if _, ok := errors.AsType[problem](err); !ok {
					return res, err
				}
				firstProblem = cmpOr(firstProblem, err)
				continue
			}
			if !settled {
				res.Duplicates++
				continue
			}
			res.Applied++
			c := visits[ref.Visit]
			if failed {
				job.failed++
				c.failed++
			} else {
				job.processed++
				c.processed++
			}
			visits[ref.Visit] = c
		case *events.JobCompleted:
			if err := a.complete(id, e); err != nil {
				return res, err
			}
			res.Applied++
			completed = true
		default:
			firstProblem = cmpOr(firstProblem, error(problem{fmt.Errorf("job %d: unknown event %T", id, ev)}))
		}
	}
	for _, vi := range slices.Sorted(maps.Keys(visits)) {
		c := visits[vi]
		if _, err := a.st.addVisit.ExecContext(a.ctx, c.processed, c.failed, id, vi); err != nil {
			return res, err
		}
	}
	if job != (counts{}) {
		if _, err := a.st.addJob.ExecContext(a.ctx, job.processed, job.failed, id); err != nil {
			return res, err
		}
		a.ops = append(a.ops, cacheOp{id: id, kind: opAdd, processed: job.processed, failed: job.failed})
	}
	return res, firstProblem
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// settled interprets a settle UPDATE: true if it settled the image, false
// if the image was already settled, a problem if the job has no such image.
func (a *applier) settled(r sql.Result, err error, id uint64, ref events.ImageRef) (bool, error) {
	if err != nil {
		return false, err
	}
	n, err := r.RowsAffected()
	if err != nil {
		return false, err
	}
	if n == 1 {
		return true, nil
	}
	var one int
	err = a.st.imageExists.QueryRowContext(a.ctx, id, ref.Visit, ref.Index).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, problem{fmt.Errorf("job %d: image visit %d index %d is not in the job", id, ref.Visit, ref.Index)}
	}
	return false, err
}

// complete records a job's terminal event. A failed job's error list is the
// event's, or (when the event carries none) each failed store once, in the
// order of its first visit, with its first failing image's error in
// (visit, index) order, as events.JobState.Outcome computes it. The store
// and URL in the text are the submission's, which owners copy into
// image_failed (the fold reads them from the event).
func (a *applier) complete(id uint64, e *events.JobCompleted) error {
	var errs any // NULL unless failed
	var list []events.StoreError
	if e.Status == events.StatusFailed {
		list = e.Errors
		if len(list) == 0 {
			var err error
			if list, err = a.failureList(id); err != nil {
				return err
			}
		}
		if list == nil {
			list = []events.StoreError{}
		}
		b, err := json.Marshal(list)
		if err != nil {
			return err
		}
		errs = string(b)
	}
	if _, err := a.st.completeJob.ExecContext(a.ctx, string(e.Status), errs, id); err != nil {
		return err
	}
	a.ops = append(a.ops, cacheOp{id: id, kind: opComplete, status: e.Status, errors: list})
	return nil
}

func (a *applier) failureList(id uint64) ([]events.StoreError, error) {
	rows, err := a.st.visitStores.QueryContext(a.ctx, id)
	if err != nil {
		return nil, err
	}
	var storeOf []string // by visit
	firstVisit := map[string]int{}
	for rows.Next() {
		var vi int
		var store string
		if err := rows.Scan(&vi, &store); err != nil {
			rows.Close()
			return nil, err
		}
		storeOf = append(storeOf, store)
		if _, seen := firstVisit[store]; !seen {
			firstVisit[store] = vi
		}
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	rows, err = a.st.failedImages.QueryContext(a.ctx, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	byFirst := map[int]events.StoreError{}
	for rows.Next() {
		var vi, idx int
		var u, reason string
		if err := rows.Scan(&vi, &idx, &u, &reason); err != nil {
			return nil, err
		}
		if vi < 0 || vi >= len(storeOf) {
			continue
		}
		key := firstVisit[storeOf[vi]]
		if _, seen := byFirst[key]; seen {
			continue // rows come in (visit, index) order: the first one wins
		}
		f := events.ImageFailed{URL: u, Reason: reason}
		byFirst[key] = events.StoreError{StoreID: storeOf[vi], Error: f.StoreErrorText()}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []events.StoreError
	for _, k := range slices.Sorted(maps.Keys(byFirst)) {
		out = append(out, byFirst[k])
	}
	return out, nil
}

// noTime is visit_ts for a visit_time that does not parse: below every
// real time, so such visits sort last when newest come first, and every
// date filter excludes them.
const noTime int64 = -1 << 63

// decodeErrors reads a job's errors column.
func decodeErrors(s sql.NullString) ([]events.StoreError, error) {
	if !s.Valid || strings.TrimSpace(s.String) == "" {
		return nil, nil
	}
	var out []events.StoreError
	if err := json.Unmarshal([]byte(s.String), &out); err != nil {
		return nil, fmt.Errorf("sqlview: errors column: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}
