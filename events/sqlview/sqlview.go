// Package sqlview is the read model on local disk: the event log projected
// into an embedded SQLite database (modernc.org/sqlite, pure Go), queried
// by the API. It imports nothing of ours but events; cmd wires it to the
// log (events/jsstore).
//
// The database is a cache of the log. Each transaction applies a run of
// messages and records the last stream sequence it covers, so a message is
// applied exactly once across crashes and a restart resumes from there.
// Deleting the file loses nothing: Open creates it empty and the caller
// replays the log into it. A database built from another log (another
// stream, or an earlier incarnation of the stream) or ahead of the log is
// deleted and rebuilt the same way.
//
// The schema is in migrations/ (numbered files, applied at Open in one
// transaction); the rules that fill it are events.JobState's (see
// apply.go).
package sqlview

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"sync/atomic"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Log identifies the log a database is a cache of.
type Log struct {
	Stream  string // stream name
	Created string // the stream's creation time: tells incarnations of one name apart
	LastSeq uint64 // the log's last sequence now: a database beyond it is of another history
}

// Store is one row of the store master.
type Store struct {
	ID, Name, AreaCode string
}

// Options configures Open.
type Options struct {
	// Log is the log the database must be a cache of. Required.
	Log Log
	// Stores is the store master; the database's copy is replaced when it
	// differs. Visits join it for store names and area codes. Nil keeps
	// the database's copy (tools that do not load a store master).
	Stores []Store
	// Logger receives why a database was discarded. Default: discard.
	Logger *slog.Logger
	// Readers bounds concurrent read connections (each costs memory: see
	// readerCacheKiB). Default 4.
	Readers int
}

// View is the read model database. ApplyMessages must be called by one
// goroutine at a time (the projection's writer); every other method is
// safe for concurrent use, and reads never wait for a write in progress
// (WAL: they see the last committed transaction).
type View struct {
	path string
	log  *slog.Logger
	w    *sql.DB // the one writer connection
	r    *sql.DB // read-only connections
	ws   writeStmts
	rs   readStmts

	areas map[string]string // store id -> area code, from the store master; set by Open
	cache *jobCache         // recent jobs' rows, for Job

	lastSeq atomic.Uint64
	mu      sync.Mutex
	changed chan struct{} // made by a waiter, closed when lastSeq advances
}

// Writer and reader cache sizes (SQLite page cache, per connection), in
// KiB. Measured on a 1.1 GB database, a connection that has run queries
// holds about 6 MiB besides its cache and its cache about twice its
// nominal size: 4 readers of 2 MiB and the writer stay under about 80 MiB
// together. The writer's cache holds the pages of recent jobs, which is
// where outcomes land.
const (
	writerCacheKiB = 16 << 10
	readerCacheKiB = 2 << 10
)

// Open opens (creating it if needed) the database at path, applies pending
// migrations in one transaction, checks that it is a cache of opts.Log
// (else deletes it and starts empty), and loads opts.Stores. The caller
// then applies the log after LastSeq().
func Open(ctx context.Context, path string, opts Options) (*View, error) {
	if opts.Log.Stream == "" || opts.Log.Created == "" {
		return nil, errors.New("sqlview: Options.Log is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Readers <= 0 {
		opts.Readers = 4
	}
	v, reason, err := open(ctx, path, opts)
	if err != nil {
		return nil, err
	}
	if reason != "" {
		opts.Logger.Warn("read model database discarded; rebuilding it from the log", "path", path, "reason", reason)
		v.Close()
		if err := Remove(path); err != nil {
			return nil, err
		}
		if v, reason, err = open(ctx, path, opts); err != nil {
			return nil, err
		}
		if reason != "" {
			v.Close()
			return nil, fmt.Errorf("sqlview: %s: a fresh database is unusable: %s", path, reason)
		}
	}
	if err := v.syncStores(ctx, opts.Stores); err != nil {
		v.Close()
		return nil, err
	}
	return v, nil
}

// open opens path. A non-empty reason says why the database must be
// discarded (the View is open then, and the caller closes it).
func open(ctx context.Context, path string, opts Options) (_ *View, reason string, err error) {
	v := &View{path: path, log: opts.Logger, cache: newJobCache(jobCacheEntries)}
	defer func() {
		if err != nil {
			v.Close()
		}
	}()
	if v.w, err = sql.Open("sqlite", dsn(path, writerCacheKiB, false)); err != nil {
		return nil, "", fmt.Errorf("sqlview: %w", err)
	}
	v.w.SetMaxOpenConns(1)
	v.w.SetMaxIdleConns(1)
	v.w.SetConnMaxLifetime(0)
	reason, err = migrate(ctx, v.w)
	if err != nil || reason != "" {
		return v, reason, err
	}
	if reason, err = v.bind(ctx, opts.Log); err != nil || reason != "" {
		return v, reason, err
	}
	if v.r, err = sql.Open("sqlite", dsn(path, readerCacheKiB, true)); err != nil {
		return nil, "", fmt.Errorf("sqlview: %w", err)
	}
	v.r.SetMaxOpenConns(opts.Readers)
	v.r.SetMaxIdleConns(opts.Readers)
	if err := v.ws.prepare(ctx, v.w); err != nil {
		return nil, "", err
	}
	if err := v.rs.prepare(ctx, v.r); err != nil {
		return nil, "", err
	}
	return v, "", nil
}

// dsn is the connection string: WAL (readers never wait for the writer),
// synchronous=NORMAL (a commit is atomic and survives a process crash; a
// power loss may undo the last commits, which the log then replays), and a
// bounded page cache.
func dsn(path string, cacheKiB int, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", fmt.Sprintf("cache_size(-%d)", cacheKiB))
	q.Add("_pragma", "foreign_keys(OFF)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Set("_txlock", "immediate")
	}
	return "file:" + path + "?" + q.Encode()
}

// bind checks that the database is a cache of lg, or makes it one if it is
// new. A non-empty reason says why it is not.
func (v *View) bind(ctx context.Context, lg Log) (string, error) {
	var stream, created string
	var last uint64
	err := v.w.QueryRowContext(ctx, `SELECT stream, stream_created, last_seq FROM progress WHERE id = 1`).Scan(&stream, &created, &last)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		_, err := v.w.ExecContext(ctx, `INSERT INTO progress (id, stream, stream_created, last_seq, events_applied, events_duplicate, messages_bad)
			VALUES (1, ?, ?, 0, 0, 0, 0)`, lg.Stream, lg.Created)
		if err != nil {
			return "", fmt.Errorf("sqlview: %w", err)
		}
		return "", nil
	case err != nil:
		return "", fmt.Errorf("sqlview: read progress: %w", err)
	case stream != lg.Stream:
		return fmt.Sprintf("built from stream %q, the log is %q", stream, lg.Stream), nil
	case created != lg.Created:
		return fmt.Sprintf("built from a stream created %s, this one was created %s", created, lg.Created), nil
	case last > lg.LastSeq:
		return fmt.Sprintf("applied up to sequence %d, the log ends at %d", last, lg.LastSeq), nil
	}
	v.lastSeq.Store(last)
	return "", nil
}

// Remove deletes the database at path and its WAL files. No View may have
// it open. A missing file is not an error.
func Remove(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sqlview: %w", err)
		}
	}
	return nil
}

// Path returns the database file's path.
func (v *View) Path() string { return v.path }

// Close closes the database. Calls in progress may fail.
func (v *View) Close() error {
	var errs []error
	v.ws.close()
	v.rs.close()
	for _, db := range []*sql.DB{v.r, v.w} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	return errors.Join(errs...)
}

// LastSeq returns the last stream sequence applied (or skipped); 0 = none.
func (v *View) LastSeq() uint64 { return v.lastSeq.Load() }

// WaitFor blocks until the view has applied sequence seq or ctx ends (then
// it returns ctx.Err()).
func (v *View) WaitFor(ctx context.Context, seq uint64) error {
	for {
		v.mu.Lock()
		if v.lastSeq.Load() >= seq {
			v.mu.Unlock()
			return nil
		}
		if v.changed == nil {
			v.changed = make(chan struct{})
		}
		ch := v.changed
		v.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// advance publishes seq as applied and releases its waiters.
func (v *View) advance(seq uint64) {
	v.mu.Lock()
	v.lastSeq.Store(seq)
	if v.changed != nil {
		close(v.changed)
		v.changed = nil
	}
	v.mu.Unlock()
}

// syncStores replaces the stores table with stores when they differ, and
// then rewrites every visit's area code in the same transaction.
func (v *View) syncStores(ctx context.Context, stores []Store) error {
	have := map[Store]bool{}
	defer func() {
		v.areas = make(map[string]string, len(have))
		for s := range have {
			v.areas[s.ID] = s.AreaCode
		}
	}()
	rows, err := v.w.QueryContext(ctx, `SELECT store_id, store_name, area_code FROM stores`)
	if err != nil {
		return fmt.Errorf("sqlview: read stores: %w", err)
	}
	for rows.Next() {
		var s Store
		if err := rows.Scan(&s.ID, &s.Name, &s.AreaCode); err != nil {
			rows.Close()
			return fmt.Errorf("sqlview: read stores: %w", err)
		}
		have[s] = true
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("sqlview: read stores: %w", err)
	}
	same := len(have) == len(stores)
	for _, s := range stores {
		same = same && have[s]
	}
	if same || stores == nil {
		return nil
	}
	tx, err := v.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlview: load stores: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM stores`); err != nil {
		return fmt.Errorf("sqlview: load stores: %w", err)
	}
	ins, err := tx.PrepareContext(ctx, `INSERT OR REPLACE INTO stores (store_id, store_name, area_code) VALUES (?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("sqlview: load stores: %w", err)
	}
	defer ins.Close()
	for _, s := range stores {
		if _, err := ins.ExecContext(ctx, s.ID, s.Name, s.AreaCode); err != nil {
			return fmt.Errorf("sqlview: load stores: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE visits SET area_code = coalesce((SELECT area_code FROM stores s WHERE s.store_id = visits.store_id), '')
		WHERE area_code != coalesce((SELECT area_code FROM stores s WHERE s.store_id = visits.store_id), '')`); err != nil {
		return fmt.Errorf("sqlview: load stores: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlview: load stores: %w", err)
	}
	clear(have)
	for _, s := range stores {
		have[s] = true
	}
	v.log.Info("read model: store master loaded", "stores", len(stores))
	return nil
}

// Progress is what the view has applied so far.
type Progress struct {
	LastSeq         uint64
	EventsApplied   uint64
	EventsDuplicate uint64
	MessagesBad     uint64
}

// Progress reads the counters of the last committed transaction.
func (v *View) Progress(ctx context.Context) (Progress, error) {
	var p Progress
	err := v.r.QueryRowContext(ctx, `SELECT last_seq, events_applied, events_duplicate, messages_bad FROM progress WHERE id = 1`).
		Scan(&p.LastSeq, &p.EventsApplied, &p.EventsDuplicate, &p.MessagesBad)
	if err != nil {
		return Progress{}, fmt.Errorf("sqlview: %w", err)
	}
	return p, nil
}
