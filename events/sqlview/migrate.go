package sqlview

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// migrations holds the schema: NNNN_name.sql files, applied in order.
//
//go:embed migrations/*.sql
var migrations embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, n := range names {
		base := path.Base(n)
		num, _, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil || version <= 0 {
			return nil, fmt.Errorf("sqlview: migration %s: name must be NNNN_name.sql", base)
		}
		b, err := migrations.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: version, name: base, sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("sqlview: migrations must be numbered 1, 2, ... without gaps; found %s", m.name)
		}
	}
	return out, nil
}

// SchemaVersion is the number of the last migration this build knows.
func SchemaVersion() int {
	ms, err := loadMigrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// migrate applies the migrations the database has not seen, all in one
// transaction, and records the schema version (PRAGMA user_version) in
// it. A database of a newer schema is reported as a reason to discard it:
// it is a cache, and this build cannot read it.
func migrate(ctx context.Context, db *sql.DB) (reason string, err error) {
	ms, err := loadMigrations()
	if err != nil {
		return "", err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("sqlview: migrate: %w", err)
	}
	defer tx.Rollback()
	var have int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&have); err != nil {
		return "", fmt.Errorf("sqlview: migrate: %w", err)
	}
	if have > len(ms) {
		return fmt.Sprintf("schema version %d is newer than this build's %d", have, len(ms)), nil
	}
	for _, m := range ms[have:] {
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return "", fmt.Errorf("sqlview: migration %s: %w", m.name, err)
		}
	}
	if have < len(ms) {
		// PRAGMA takes no parameters; the value is a number we produced.
		if _, err := tx.ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(len(ms))); err != nil {
			return "", fmt.Errorf("sqlview: migrate: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return "", fmt.Errorf("sqlview: migrate: %w", err)
	}
	return "", nil
}
