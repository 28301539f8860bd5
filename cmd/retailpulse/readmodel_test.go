package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/retailpulse/retailpulse/events/sqlview"
)

// statusBodies returns every job's status response body.
func (a *testApp) statusBodies(t testing.TB, ids ...uint64) map[uint64]string {
	t.Helper()
	out := map[uint64]string{}
	for _, id := range ids {
		code, _, body := do(t, "GET", fmt.Sprintf("%s/api/status?jobid=%d", a.url, id), "")
		if code != 200 {
			t.Fatalf("status of job %d: %d %s", id, code, body)
		}
		out[id] = body
	}
	return out
}

func progressOf(t testing.TB, a *testApp) sqlview.Progress {
	t.Helper()
	p, err := a.view.Progress(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The read model is a database in the data dir: a restart resumes it
// from its last sequence (nothing is applied twice), and a restart without
// it rebuilds it from the log with byte-identical answers.
func TestService_ReadModelSurvivesRestartAndDeletion(t *testing.T) {
	img := newImageServer(t)
	dir := t.TempDir()
	app := startApp(t, dir)
	ok := app.submit(t, jobBody(visit{storeA, []string{img.URL + "/4x4.png", img.URL + "/4x4.png/2"}, "2026-11-23T10:00:00Z"}))
	bad := app.submit(t, jobBody(
		visit{storeB, []string{img.URL + "/404"}, "t"},
		visit{unknown, []string{img.URL + "/4x4.png/3"}, "t"},
	))
	app.waitDone(t, ok)
	app.waitDone(t, bad)
	before := app.statusBodies(t, ok, bad)
	if !strings.Contains(before[bad], `"error":[{"store_id":"S01408764","error":"image `) {
		t.Fatalf("failed job: %s", before[bad])
	}
	progress := progressOf(t, app)
	app.stop()
	if _, err := os.Stat(filepath.Join(dir, readModelFile)); err != nil {
		t.Fatalf("no read model database in the data dir: %v", err)
	}

	app = startApp(t, dir)
	if got := app.statusBodies(t, ok, bad); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("after a restart:\n%v\nbefore:\n%v", got, before)
	}
	if again := progressOf(t, app); again != progress {
		t.Fatalf("progress after a restart %+v, before %+v: the log was applied again", again, progress)
	}
	app.stop()

	if err := sqlview.Remove(filepath.Join(dir, readModelFile)); err != nil {
		t.Fatal(err)
	}
	app = startApp(t, dir)
	if got := app.statusBodies(t, ok, bad); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("after rebuilding from the log:\n%v\nbefore:\n%v", got, before)
	}
	if again := progressOf(t, app); again.LastSeq != progress.LastSeq || again.EventsApplied != progress.EventsApplied {
		t.Fatalf("rebuilt progress %+v, before %+v", again, progress)
	}
	app.stop()
}

// rebuild writes the database from the log; verify compares it with a
// fresh fold and reports any difference.
func TestRebuild_BuildsWhatVerifyAccepts(t *testing.T) {
	img := newImageServer(t)
	dir := t.TempDir()
	app := startApp(t, dir)
	id := app.submit(t, jobBody(visit{storeA, []string{img.URL + "/4x4.png"}, "t"}))
	app.waitDone(t, app.submit(t, jobBody(visit{unknown, []string{img.URL + "/4x4.png/u"}, "t"})))
	app.waitDone(t, id)
	app.stop()

	code, out, errs := runMain(t, "rebuild", "--data-dir", dir)
	if code != exitOK || !strings.Contains(out, "rebuild: ") {
		t.Fatalf("rebuild: exit %d %q %q", code, out, errs)
	}
	code, out, errs = runMain(t, "verify", "--data-dir", dir)
	if code != exitOK || !strings.Contains(out, "OK, 2 jobs") {
		t.Fatalf("verify after rebuild: exit %d %q %q", code, out, errs)
	}

	// A database that disagrees with the log is reported.
	db, err := sql.Open("sqlite", filepath.Join(dir, readModelFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE jobs SET status = 'ongoing' WHERE job_id = ?`, id); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE visits SET processed = 7 WHERE job_id = ?`, id); err != nil {
		t.Fatal(err)
	}
	db.Close()
	code, out, _ = runMain(t, "verify", "--data-dir", dir)
	if code != exitError || !strings.Contains(out, fmt.Sprintf("DIFF job %d: rebuilt", id)) || !strings.Contains(out, fmt.Sprintf("DIFF job %d visit 0: counters", id)) {
		t.Fatalf("verify of a tampered database: exit %d\n%s", code, out)
	}
	if code, _, _ := runMain(t, "rebuild", "--data-dir", dir); code != exitOK {
		t.Fatalf("second rebuild: exit %d", code)
	}
	if code, out, _ := runMain(t, "verify", "--data-dir", dir); code != exitOK {
		t.Fatalf("verify after the second rebuild: exit %d\n%s", code, out)
	}

	if code, _, errs := runMain(t, "rebuild", "--data-dir", filepath.Join(dir, "missing")); code != exitUsage || !strings.Contains(errs, "no retailpulse data") {
		t.Fatalf("rebuild without data: exit %d %q", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Fatalf("rebuild without data created its data dir: %v", err)
	}
}
