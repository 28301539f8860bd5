package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/sqlview"
	"github.com/retailpulse/retailpulse/storemaster"
)

// readModelFile is the read model database's name in the data dir.
const readModelFile = "readmodel.db"

// openView opens the read model database in dataDir as a cache of
// eventLog (one of another log, or ahead of it, is discarded and starts
// empty). stores, when not nil, replaces its copy of the store master.
func openView(ctx context.Context, eventLog *jsstore.EventLog, dataDir string, stores *storemaster.Master, log *slog.Logger) (*sqlview.View, error) {
	info, err := eventLog.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	opts := sqlview.Options{
		Log:    sqlview.Log{Stream: eventLog.StreamName(), Created: info.Created.UTC().Format(time.RFC3339Nano), LastSeq: info.LastSeq},
		Logger: log,
	}
	if stores != nil {
		for _, s := range stores.Stores() {
			opts.Stores = append(opts.Stores, sqlview.Store{ID: s.ID, Name: s.Name, AreaCode: s.AreaCode})
		}
	}
	path := filepath.Join(dataDir, readModelFile)
	start := time.Now()
	v, err := sqlview.Open(ctx, path, opts)
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	log.Info("read model opened", "path", path, "seq", v.LastSeq(), "log_seq", info.LastSeq, "took", time.Since(start).Round(time.Millisecond))
	return v, nil
}

// catchUp applies the log to v until v has applied sequence until, logging
// progress every few seconds. It returns ctx's error if ctx ends first.
func catchUp(ctx context.Context, eventLog *jsstore.EventLog, v *sqlview.View, until uint64, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := jsstore.NewProjection(eventLog, v, log, nil)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	reached := make(chan error, 1)
	go func() { reached <- v.WaitFor(ctx, until) }()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-reached:
			cancel()
			if rerr := <-done; rerr != nil {
				return rerr
			}
			return err
		case err := <-done:
			if err == nil {
				err = ctx.Err()
			}
			if err == nil {
				err = errors.New("projection stopped")
			}
			return err
		case <-tick.C:
			log.Info("read model: applying the log", "seq", v.LastSeq(), "until", until)
		}
	}
}
