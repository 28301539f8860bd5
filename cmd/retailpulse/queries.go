package main

import (
	"context"
	"time"

	"github.com/retailpulse/retailpulse/events"
)

// The read side's queries (httpapi.Results and httpapi.Queries), answered
// from the read model database like Status: each waits, at most
// --submit-timeout and 2s, until the projection may answer it (the job's
// submission applied, and never older than an answer already given), then
// reads one consistent state of the database.

// Results implements httpapi.Results: a page of a job's image results.
func (a *App) Results(ctx context.Context, id uint64, limit int, cursor string) (events.ResultPage, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.SubmitTimeout)
	defer cancel()
	if err := a.projection.SyncJob(ctx, id); err != nil {
		return events.ResultPage{}, err
	}
	return a.view.Results(ctx, id, limit, cursor)
}

// Visits implements httpapi.Queries. Jobs submitted before the request are
// in the answer (read-your-writes), so it waits for the log's end.
func (a *App) Visits(ctx context.Context, f events.VisitFilter) (events.VisitPage, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.SubmitTimeout)
	defer cancel()
	if err := a.projection.Sync(ctx); err != nil {
		return events.VisitPage{}, err
	}
	return a.view.Visits(ctx, f)
}

// StoreSummary implements httpapi.Queries.
func (a *App) StoreSummary(ctx context.Context, storeID string, from, to time.Time) (events.StoreSummary, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.SubmitTimeout)
	defer cancel()
	if err := a.projection.Sync(ctx); err != nil {
		return events.StoreSummary{}, err
	}
	return a.view.StoreSummary(ctx, storeID, from, to)
}

// ListJobs implements httpapi.Queries.
func (a *App) ListJobs(ctx context.Context, status events.Status, limit int, cursor string) (events.JobPage, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.SubmitTimeout)
	defer cancel()
	if err := a.projection.Sync(ctx); err != nil {
		return events.JobPage{}, err
	}
	return a.view.Jobs(ctx, status, limit, cursor)
}
