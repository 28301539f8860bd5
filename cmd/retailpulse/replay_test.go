package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
)

type replayOutput struct {
	LastSeq uint64    `json:"last_seq"`
	Jobs    []jobJSON `json:"jobs"`
}

func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := (&Main{Stdout: &out, Stderr: &errb}).Run(context.Background(), args)
	return code, out.String(), errb.String()
}

func replayJSON(t *testing.T, args ...string) replayOutput {
	t.Helper()
	code, out, errs := runMain(t, append([]string{"replay", "--json"}, args...)...)
	if code != exitOK {
		t.Fatalf("replay %v: exit %d: %s", args, code, errs)
	}
	var r replayOutput
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("replay output %q: %v", out, err)
	}
	return r
}

func TestReplay_RebuildsHistoryAtAnyPoint(t *testing.T) {
	img := newImageServer(t)
	dir := t.TempDir()
	// One store actor at a time with one image slot: the job is appended in
	// several messages, so a sequence can land mid-job.
	app := startApp(t, dir, "--store-concurrency", "1", "--image-slots", "1", "--append-linger", "0", "--append-rate", "0")
	var urls []string
	for i := range 20 {
		urls = append(urls, fmt.Sprintf("%s/8x8.png/%d", img.URL, i))
	}
	big := app.submit(t, jobBody(visit{storeA, urls, "t"}))
	bad := app.submit(t, jobBody(visit{unknown, []string{img.URL + "/1x1.png"}, "t"}))
	app.waitDone(t, big)
	app.waitDone(t, bad)

	// While the service runs, the data dir is locked.
	if code, _, errs := runMain(t, "replay", "--data-dir", dir); code != exitUsage || !strings.Contains(errs, "in use") {
		t.Fatalf("replay on a live data dir: exit %d, %q", code, errs)
	}
	h, err := app.eventLog.LoadJob(context.Background(), big)
	if err != nil {
		t.Fatal(err)
	}
	app.stop()

	all := replayJSON(t, "--data-dir", dir)
	if len(all.Jobs) != 2 || all.Jobs[0].Status != events.StatusCompleted || all.Jobs[0].Processed != 20 ||
		all.Jobs[1].Status != events.StatusFailed || all.Jobs[1].Error[0].StoreID != unknown {
		t.Fatalf("replay of everything: %+v", all)
	}

	// Find a message of the big job after which some, not all, images are settled.
	var mid uint64
	settled := 0
	for _, r := range h.Records {
		for _, ev := range r.Events {
			if _, ok := ev.(*events.ImageProcessed); ok {
				settled++
			}
		}
		if settled > 0 && settled < 20 {
			mid = r.Seq
			break
		}
	}
	if mid == 0 {
		t.Fatalf("job %d was stored in too few messages to stop mid-job: %d records", big, len(h.Records))
	}
	at := replayJSON(t, "--data-dir", dir, "--until-seq", fmt.Sprint(mid), "--job", fmt.Sprint(big))
	if at.LastSeq != mid || len(at.Jobs) != 1 {
		t.Fatalf("replay until %d: %+v", mid, at)
	}
	if j := at.Jobs[0]; j.Status != events.StatusOngoing || j.Processed != settled || j.Images != 20 {
		t.Fatalf("job at seq %d: %+v, want ongoing with %d processed", mid, j, settled)
	}

	code, out, _ := runMain(t, "replay", "--data-dir", dir)
	if code != exitOK || !strings.Contains(out, "JOB") || !strings.Contains(out, "unknown store") {
		t.Fatalf("table output: %d %q", code, out)
	}
	code, out, errs := runMain(t, "verify", "--data-dir", dir)
	if code != exitOK || !strings.Contains(out, "OK, 2 jobs") {
		t.Fatalf("verify: exit %d %q %q", code, out, errs)
	}
	if code, _, _ := runMain(t, "replay", "--data-dir", dir, "--until-seq", "3", "--until-time", "2026-01-01T00:00:00Z"); code != exitUsage {
		t.Fatalf("both limits: exit %d", code)
	}
	if code, _, _ := runMain(t, "replay", "--data-dir", dir, "--job", "999"); code != exitError {
		t.Fatalf("unknown job: exit %d", code)
	}
}

func TestCompareJobs_ReportsDifferences(t *testing.T) {
	sub := &events.JobSubmitted{Count: 1, Visits: []events.Visit{{StoreID: "S1", ImageURLs: []string{"a", "b"}}}}
	a, b := events.NewReadModel(), events.NewReadModel()
	for _, m := range []*events.ReadModel{a, b} {
		m.Apply(1, events.SubjectSubmitted, events.Batch{V: 1, Events: []events.Event{sub}})
		m.Apply(2, events.SubjectSubmitted, events.Batch{V: 1, Events: []events.Event{sub}})
	}
	a.Apply(3, events.JobSubject(1, events.KindImages), events.Batch{V: 1, Events: []events.Event{
		&events.ImageProcessed{ImageRef: events.ImageRef{Visit: 0, Index: 0}},
	}})
	// A job completed with an image unsettled breaks an invariant.
	a.Apply(4, events.JobSubject(2, events.KindCompleted), events.Batch{V: 1, Events: []events.Event{&events.JobCompleted{Status: events.StatusCompleted}}})
	b.Apply(4, events.JobSubject(2, events.KindCompleted), events.Batch{V: 1, Events: []events.Event{&events.JobCompleted{Status: events.StatusCompleted}}})
	a.Apply(5, events.SubjectSubmitted, events.Batch{V: 1, Events: []events.Event{sub}}) // only in a
	b.Apply(6, events.SubjectSubmitted, events.Batch{V: 1, Events: []events.Event{sub}}) // only in b
	each := func(ctx context.Context, fn func(events.JobView) error) error {
		for _, v := range b.Jobs() {
			if err := fn(v); err != nil {
				return err
			}
		}
		return nil
	}
	got, err := compareJobs(context.Background(), a.Jobs(), each)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"job 1: rebuilt", "job 2: completed with", "job 5: missing from the read model", "job 6: in the read model only"}
	if len(got) != len(want) {
		t.Fatalf("problems = %q", got)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Fatalf("problem %d = %q, want %q...", i, got[i], want[i])
		}
	}
}

// A job acked while unfinished is stranded: verify reports it (exit 1),
// requeue puts it back, the service finishes it, and verify agrees again.
func TestVerify_FindsAndRequeuesStranded(t *testing.T) {
	img := newImageServer(t)
	dir := t.TempDir()
	ns, err := jsstore.StartServer(jsstore.ServerConfig{Name: "retailpulse", StoreDir: filepath.Join(dir, "nats"), SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := jsstore.ConnectInProcess(ns, "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := jsstore.Open(ctx, nc, jsstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	sub := &events.JobSubmitted{Count: 1, Visits: []events.Visit{{StoreID: storeA, ImageURLs: []string{img.URL + "/8x8.png"}, VisitTime: "t"}}}
	lost, _, err := store.Submit(ctx, sub, "")
	if err != nil {
		t.Fatal(err)
	}
	waiting, _, err := store.Submit(ctx, sub, "")
	if err != nil {
		t.Fatal(err)
	}
	d, err := store.NextJob(ctx)
	if err != nil || d.JobID() != lost {
		t.Fatalf("delivery: %v", err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	ns.Shutdown()
	ns.WaitForShutdown()

	code, out, errs := runMain(t, "verify", "--data-dir", dir)
	if code != exitError || !strings.Contains(out, fmt.Sprintf("STRANDED job %d:", lost)) || strings.Contains(out, fmt.Sprintf("job %d:", waiting)) {
		t.Fatalf("verify with a stranded job: exit %d\n%s%s", code, out, errs)
	}
	for _, tt := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"requeue", "--data-dir", dir}, exitUsage, ""},
		{[]string{"requeue", "--data-dir", dir, "x1"}, exitUsage, ""},
		{[]string{"requeue", "--data-dir", dir, fmt.Sprint(waiting)}, exitError, "waiting for an owner"},
		{[]string{"requeue", "--data-dir", dir, "--reason", "lost in test", fmt.Sprint(lost)}, exitOK, "requeued"},
		{[]string{"requeue", "--data-dir", dir, fmt.Sprint(lost)}, exitError, "not requeued"},
	} {
		code, out, errs := runMain(t, tt.args...)
		if code != tt.code || !strings.Contains(out, tt.out) {
			t.Fatalf("%v: exit %d %q %q; want exit %d and %q", tt.args, code, out, errs, tt.code, tt.out)
		}
	}

	app := startApp(t, dir)
	app.waitDone(t, lost)
	app.waitDone(t, waiting)
	app.stop()
	code, out, errs = runMain(t, "verify", "--data-dir", dir)
	if code != exitOK || !strings.Contains(out, "none stranded") {
		t.Fatalf("verify after requeue: exit %d\n%s%s", code, out, errs)
	}
	if code, _, _ := runMain(t, "verify", "--data-dir", filepath.Join(dir, "missing")); code != exitUsage {
		t.Fatalf("verify that cannot run: exit %d, want %d", code, exitUsage)
	}
	for _, tool := range [][]string{{"replay"}, {"verify"}, {"requeue", "--force"}} {
		args := append(tool, "--data-dir", dir, "--stream", "NOPE")
		if tool[0] == "requeue" {
			args = append(args, fmt.Sprint(lost))
		}
		if code, _, errs := runMain(t, args...); code != exitUsage || !strings.Contains(errs, `no stream "NOPE"`) {
			t.Fatalf("%v: exit %d %q; want exit %d and no stream", args, code, errs, exitUsage)
		}
	}
}

func TestTableCell_EscapesAndCuts(t *testing.T) {
	long := strings.Repeat("x", maxCellChars)
	tests := []struct {
		name, in, want string
	}{
		{name: "plain", in: "S00339218: image http://a/b.jpg: http 404", want: "S00339218: image http://a/b.jpg: http 404"},
		{name: "empty", in: "", want: ""},
		{name: "printable unicode", in: "Sé 😀", want: "Sé 😀"},
		{name: "newline and tab", in: "S1\nS2\tS3\r", want: `S1\nS2\tS3\r`},
		{name: "ANSI escape", in: "\x1b[31mred\x1b[0m", want: `\x1b[31mred\x1b[0m`},
		{name: "other controls", in: "a\x00b\x7fc\u0085d", want: `a\x00b\x7fc\u0085d`},
		{name: "bidi override", in: "a\u202eb", want: `a\u202eb`},
		{name: "no-break space", in: "a\u00a0b", want: `a\u00a0b`},
		{name: "invalid UTF-8", in: "a\xffb\xc3", want: `a\xffb\xc3`},
		{name: "backslash stays distinguishable", in: `a\nb`, want: `a\\nb`},
		{name: "tabwriter escape byte", in: "a\xffb\xff", want: `a\xffb\xff`},
		{name: "exactly the limit", in: long, want: long},
		{name: "over the limit", in: long + "y", want: long + "…"},
		{name: "counts characters, not bytes", in: strings.Repeat("é", maxCellChars+1), want: strings.Repeat("é", maxCellChars) + "…"},
		{name: "escapes count as they print", in: strings.Repeat("\n", maxCellChars), want: strings.Repeat(`\n`, maxCellChars/2) + "…"},
		{name: "an escape is never split", in: strings.Repeat("x", maxCellChars-1) + "\x1b", want: strings.Repeat("x", maxCellChars-1) + "…"},
		{name: "a huge value is cut", in: strings.Repeat("S", 1<<20), want: strings.Repeat("S", maxCellChars) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tableCell(tt.in); got != tt.want {
				t.Fatalf("tableCell(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestPrintJobs_ClientTextCannotBreakTheTable(t *testing.T) {
	views := []events.JobView{
		{ID: 1, Status: events.StatusFailed, Images: 2, Failed: 2, Errors: []events.StoreError{
			{StoreID: "S1\n2\tforged\tline", Error: "unknown store"},
			{StoreID: "\x1b[2J\x1b[31mS2", Error: "image http://a/\x1b]0;title\x07: http 404"},
		}},
		{ID: 2, Status: events.StatusFailed, Images: 1, Failed: 1, Errors: []events.StoreError{{StoreID: strings.Repeat("S", 1<<20), Error: "unknown store"}}},
		{ID: 3, Status: events.StatusCompleted, Images: 1, Processed: 1},
	}
	var out bytes.Buffer
	printJobs(&out, views)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 1+len(views) {
		t.Fatalf("%d lines for %d jobs:\n%s", len(lines), len(views), out.String())
	}
	for i, line := range lines {
		if strings.ContainsFunc(line, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Errorf("line %d holds a control character: %q", i, line)
		}
		if n := utf8.RuneCountInString(line); n > 160 {
			t.Errorf("line %d is %d characters long", i, n)
		}
	}
	if want := `S1\n2\tforged\tline: unknown store; \x1b[2J\x1b[31mS2: image http`; !strings.Contains(lines[1], want) {
		t.Errorf("job 1 line %q does not contain %q", lines[1], want)
	}
	if !strings.HasSuffix(lines[2], "…") {
		t.Errorf("job 2 line not cut: %.100q", lines[2])
	}

	// JSON output keeps the values exact.
	if got := toJSON(views[0]).Error; !reflect.DeepEqual(got, views[0].Errors) {
		t.Errorf("toJSON errors = %q, want %q", got, views[0].Errors)
	}
}
