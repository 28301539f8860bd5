package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/retailpulse/retailpulse/events/sqlview"
	"github.com/retailpulse/retailpulse/storemaster"
)

// rebuild: retailpulse rebuild [--data-dir DIR] [--nats-url URL] [--stores CSV].
// Deletes the read model database in the data dir and builds it again from
// the whole log, as a service would at its start without one (the service
// does that by itself; rebuild does it ahead, or on an operator's doubt).
// Exit 0 when built, 2 when it cannot run.
func (m *Main) rebuild(ctx context.Context, args []string) int {
	var lf logFlags
	fs := flag.NewFlagSet("retailpulse rebuild", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	lf.register(fs)
	storesPath := fs.String("stores", "", "store master CSV (AreaCode,StoreName,StoreID), as given to serve; empty = built-in sample")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: retailpulse rebuild [flags]\n\nDeletes the read model database (<data-dir>/"+readModelFile+") and builds it again from the event log.\nThe service must be stopped (the data dir is locked). With --nats-url, the database is still written to --data-dir.\nExit 0 when built, 2 when it cannot run.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageCode(err)
	}
	fail := func(err error) int {
		fmt.Fprintf(m.Stderr, "retailpulse rebuild: %v\n", err)
		return exitUsage
	}
	stores := storemaster.Sample()
	if *storesPath != "" {
		var err error
		if stores, err = storemaster.LoadFile(*storesPath); err != nil {
			return fail(fmt.Errorf("--stores: %w", err))
		}
	}
	eventLog, closeFn, err := lf.open(ctx)
	if err != nil {
		return fail(err)
	}
	defer closeFn()
	unlock, err := lf.lockForDatabase()
	if err != nil {
		return fail(err)
	}
	defer unlock()
	info, err := eventLog.Info(ctx)
	if err != nil {
		return fail(err)
	}
	path := filepath.Join(lf.dataDir, readModelFile)
	if err := sqlview.Remove(path); err != nil {
		return fail(err)
	}
	log := slog.New(slog.NewTextHandler(m.Stderr, nil))
	start := time.Now()
	view, err := openView(ctx, eventLog, lf.dataDir, stores, log)
	if err != nil {
		return fail(err)
	}
	defer view.Close()
	if err := catchUp(ctx, eventLog, view, info.LastSeq, log); err != nil {
		return fail(err)
	}
	p, err := view.Progress(ctx)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(m.Stdout, "rebuild: %s holds the log up to sequence %d (%d events applied, %d messages not applicable) in %s\n",
		path, p.LastSeq, p.EventsApplied, p.MessagesBad, time.Since(start).Round(time.Millisecond))
	return exitOK
}
