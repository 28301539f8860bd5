//go:build unix

package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events/sqlview"
)

// The read side survives kill -9: the restarted binary answers every query
// as before the kill, and so does one whose database was deleted (rebuilt
// from the log). How long each restart took to become ready is logged
// (MEASURED); the benchmark for a long history is BenchmarkRestart.
func TestCrash_ReadSideSurvivesKillNine(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service as a child process")
	}
	bin := procBuild(t)
	img := newImageServer(t)
	dir := t.TempDir()
	c := procStart(t, bin, "first run", dir)
	rs := submitReadSide(t, func(body string) uint64 {
		code, b, err := c.do("POST", "/api/submit/", body)
		var out struct {
			JobID uint64 `json:"job_id"`
		}
		if err != nil || code != 201 || json.Unmarshal(b, &out) != nil {
			t.Fatalf("submit: %d %s %v", code, b, err)
		}
		return out.JobID
	}, img.URL)
	c.waitTerminal(t, 30*time.Second, rs.jobs)
	queries := readSideQueries(rs)
	answers := func(c *procChild) map[string]string {
		out := map[string]string{}
		for _, p := range queries {
			code, body, err := c.get(p)
			if err != nil {
				t.Fatal(err)
			}
			out[p] = fmt.Sprintf("%d %s", code, body)
		}
		return out
	}
	before := answers(c)
	c.kill()

	start := time.Now()
	c = procStart(t, bin, "after kill -9", dir)
	t.Logf("MEASURED: ready %s after a restart following kill -9", time.Since(start).Round(time.Millisecond))
	sameAnswers(t, "after kill -9", answers(c), before)
	c.kill()

	if err := sqlview.Remove(filepath.Join(dir, readModelFile)); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	c = procStart(t, bin, "database deleted", dir)
	t.Logf("MEASURED: ready %s after a restart without the database", time.Since(start).Round(time.Millisecond))
	sameAnswers(t, "after the database was deleted", answers(c), before)
}
