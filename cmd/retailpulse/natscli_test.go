package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// natsCLI runs the nats CLI (github.com/nats-io/natscli) as the subscriber
// user of a live service, with the connection settings docs/events.md
// documents (NATS_URL, NATS_USER, NATS_PASSWORD) and a configuration
// directory of its own, so no context of the machine's user applies.
type natsCLI struct {
	t   *testing.T
	bin string
	env []string
}

func newNATSCLI(t *testing.T, bin, url, password string) *natsCLI {
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home, "SHELL=/bin/sh", "TERM=dumb"}
	for _, kv := range procEnv() {
		if !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") &&
			!strings.HasPrefix(kv, "SHELL=") && !strings.HasPrefix(kv, "TERM=") {
			env = append(env, kv)
		}
	}
	env = append(env, "NATS_URL="+url, "NATS_USER="+jsstore.SubscriberUser, "NATS_PASSWORD="+password,
		// Every request's timeout, and how long `consumer next` waits for
		// a message that is not there (5 s by default).
		"NATS_TIMEOUT=2s")
	return &natsCLI{t: t, bin: bin, env: env}
}

// cliEscapes matches the terminal escapes the CLI writes when it runs on one.
var cliEscapes = regexp.MustCompile(`\x1b\[[0-9;?]*[a-zA-Z]|\x1b[78]|\r`)

// run runs the CLI with args and returns its combined output and exit
// error.
func (c *natsCLI) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	return cliEscapes.ReplaceAllString(string(out), ""), err
}

// ok runs the CLI and fails the test unless it exits 0.
func (c *natsCLI) ok(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// start runs the CLI in the background until the test ends (or stop).
func (c *natsCLI) start(args ...string) (out *procBuffer, stop func()) {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = c.env
	out = &procBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }) }
	c.t.Cleanup(stop)
	return out, stop
}

// The CLI's lines that name a message (v0.5.0's formats).
var (
	subLine      = regexp.MustCompile(`Received on "([^"]+)"`)
	nextLine     = regexp.MustCompile(`subj: (\S+) / tries: \d+ / cons seq: \d+ / str seq: (\d+)`)
	viewLine     = regexp.MustCompile(`(?m)^\[(\d+)\] Subject: (\S+) Received:`)
	jsSubLine    = regexp.MustCompile(`Received JetStream message: stream: RETAILPULSE seq: (\d+) / pending: \d+ / subject: (\S+) /`)
	getLine      = regexp.MustCompile(`Item: RETAILPULSE#(\d+) received .* on Subject (\S+)`)
	refusedMatch = `Permissions Violation for Publish to %q`
)

// cliMatches returns the submatches of re in s, joined by " " per match.
func cliMatches(re *regexp.Regexp, s string) []string {
	var got []string
	for _, m := range re.FindAllStringSubmatch(s, -1) {
		got = append(got, strings.Join(m[1:], " "))
	}
	return got
}

// TestNATSCLI_DocumentedCommandsWork runs the nats CLI commands of
// docs/events.md ("### NATS") against a live service as the subscriber
// user, as they are written there, and checks that each does what the
// document says; then the refusals the document promises. It needs the
// nats CLI on PATH (the document was checked with natscli v0.5.0) and is
// skipped without it.
func TestNATSCLI_DocumentedCommandsWork(t *testing.T) {
	bin, err := exec.LookPath("nats")
	if err != nil {
		t.Skip("the nats CLI is not on PATH; install it with `go install github.com/nats-io/natscli/nats@v0.5.0` to run the commands of docs/events.md")
	}
	const password = "natscli-pw"

	// Images: ordinary ones, failures, and one that is held until the
	// test releases it, so a job is certainly running while it is held.
	imgs := newImageServer(t)
	release := make(chan struct{})
	held := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(encodeImage(t, 5, 7, "png"))
	}))
	t.Cleanup(held.Close)
	app := startApp(t, t.TempDir(), "--nats-listen", "127.0.0.1:0", "--subscriber-password", password)
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll) // before the service stops
	cli := newNATSCLI(t, bin, app.NATSClientURL(), password)
	if v, err := cli.run("--version"); err == nil {
		t.Logf("nats CLI %s", strings.TrimSpace(v))
	}
	ctx := context.Background()
	js := app.eventLog.JetStream()
	const st = jsstore.DefaultStream

	t.Run("context save", func(t *testing.T) {
		// "or once with nats context save"
		c := &natsCLI{t: t, bin: bin}
		for _, kv := range cli.env {
			if !strings.HasPrefix(kv, "NATS_URL=") && !strings.HasPrefix(kv, "NATS_USER=") && !strings.HasPrefix(kv, "NATS_PASSWORD=") {
				c.env = append(c.env, kv)
			}
		}
		c.ok("context", "save", "retailpulse-sub", "--server", app.NATSClientURL(), "--user", "subscriber", "--password", password, "--select")
		if out := c.ok("stream", "info", "RETAILPULSE"); !strings.Contains(out, "Subjects: rp.submitted, rp.job.>") {
			t.Fatalf("stream info through the saved context:\n%s", out)
		}
	})

	// nats sub 'rp.>': a live tail, which shows a job's events while it runs.
	tail, stopTail := cli.start("sub", "rp.>")
	jstest.CheckFor(t, 20*time.Second, func() error {
		cz, err := app.ns.Connz(&server.ConnzOptions{Username: true, User: jsstore.SubscriberUser, Subscriptions: true})
		if err != nil {
			return err
		}
		for _, c := range cz.Conns {
			if slices.Contains(c.Subs, "rp.>") {
				return nil
			}
		}
		return fmt.Errorf("nats sub has not subscribed yet: %s", tail.String())
	})
	running := app.submit(t, jobBody(
		visit{storeA, []string{imgs.URL + "/4x3.png", imgs.URL + "/10x20.png", held.URL + "/held.png"}, "t"},
		visit{storeB, []string{imgs.URL + "/6x6.jpg"}, "t"},
	))
	jstest.CheckFor(t, 20*time.Second, func() error {
		got := cliMatches(subLine, tail.String())
		if !slices.Contains(got, fmt.Sprintf("rp.job.%d.images", running)) {
			return fmt.Errorf("the tail shows %v", got)
		}
		return nil
	})
	if code, s := app.status(t, running); code != http.StatusOK || s.Status != "ongoing" {
		t.Fatalf("job %d while its image is held: %d %+v", running, code, s)
	}
	releaseAll()
	if s := app.waitDone(t, running); s.Status != "completed" {
		t.Fatalf("job %d: %+v", running, s)
	}
	failing := app.submit(t, jobBody(visit{storeA, []string{imgs.URL + "/404", imgs.URL + "/html"}, "t"}))
	if s := app.waitDone(t, failing); s.Status != "failed" {
		t.Fatalf("job %d: %+v, want failed", failing, s)
	}
	jstest.CheckFor(t, 20*time.Second, func() error {
		got := cliMatches(subLine, tail.String())
		if !slices.Contains(got, fmt.Sprintf("rp.job.%d.completed", failing)) {
			return fmt.Errorf("the tail shows %v", got)
		}
		return nil
	})
	stopTail()
	got := cliMatches(subLine, tail.String())
	for _, want := range []string{"rp.submitted", fmt.Sprintf("rp.job.%d.started", running), fmt.Sprintf("rp.job.%d.completed", running),
		fmt.Sprintf("rp.job.%d.started", failing), fmt.Sprintf("rp.job.%d.images", failing)} {
		if !slices.Contains(got, want) {
			t.Errorf("the live tail lacks %s: %v", want, got)
		}
	}
	info, err := app.eventLog.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < int(info.LastSeq) {
		t.Errorf("the live tail shows %d messages, the log holds %d: %v", len(got), info.LastSeq, got)
	}
	t.Logf("live tail: %d messages of jobs %d and %d", len(got), running, failing)

	// A durable consumer that resumes.
	out := cli.ok("consumer", "add", "RETAILPULSE", "my-reader", "--pull", "--deliver", "all", "--ack", "explicit", "--filter", "rp.>", "--defaults")
	for _, want := range []string{"Pull Mode: true", "Filter Subject: rp.>", "Deliver Policy: All", "Ack Policy: Explicit"} {
		if !strings.Contains(out, want) {
			t.Errorf("consumer add: no %q in\n%s", want, out)
		}
	}
	if c, err := js.Consumer(ctx, st, "my-reader"); err != nil || c.CachedInfo().Config.Durable != "my-reader" {
		t.Fatalf("my-reader after consumer add: %v, want a durable consumer", err)
	}
	// next prints up to --count messages, acknowledging each; it stops
	// with an error when no message is left. A second run continues.
	seqs := func(out string) []uint64 {
		var s []uint64
		for _, m := range nextLine.FindAllStringSubmatch(out, -1) {
			n, _ := strconv.ParseUint(m[2], 10, 64)
			s = append(s, n)
		}
		return s
	}
	upTo := func(from, to uint64) []uint64 {
		var s []uint64
		for n := from; n <= to; n++ {
			s = append(s, n)
		}
		return s
	}
	if out := cli.ok("consumer", "next", "RETAILPULSE", "my-reader", "--count", "2"); !slices.Equal(seqs(out), upTo(1, 2)) ||
		strings.Count(out, "Acknowledged message") != 2 {
		t.Fatalf("consumer next --count 2: sequences %v\n%s", seqs(out), out)
	}
	next := func(want []uint64) {
		t.Helper()
		out, err := cli.run("consumer", "next", "RETAILPULSE", "my-reader", "--count", "100")
		if !slices.Equal(seqs(out), want) || strings.Count(out, "Acknowledged message") != len(want) {
			t.Fatalf("consumer next --count 100: sequences %v, want %v\n%s", seqs(out), want, out)
		}
		// Drained, the CLI ends with exit 1: a timeout, or (when the
		// server's end-of-request status message comes first) its failed
		// attempt to acknowledge that status message.
		if err == nil || !strings.Contains(out, "no message received") && !strings.Contains(out, "message does not have a reply") {
			t.Fatalf("consumer next --count 100 with %d messages left: %v, want the end of messages\n%s", len(want), err, out)
		}
	}
	next(upTo(3, info.LastSeq))
	third := app.submit(t, jobBody(visit{storeB, []string{imgs.URL + "/2x2.gif"}, "t"}))
	app.waitDone(t, third)
	info2, err := app.eventLog.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next(upTo(info.LastSeq+1, info2.LastSeq))
	if c, err := js.Consumer(ctx, st, "my-reader"); err != nil || c.CachedInfo().AckFloor.Stream != info2.LastSeq || c.CachedInfo().NumAckPending != 0 {
		t.Fatalf("my-reader after reading everything: %v %+v", err, c.CachedInfo())
	}

	// One job's history.
	out = cli.ok("stream", "get", "RETAILPULSE", strconv.FormatUint(running, 10))
	if g := cliMatches(getLine, out); !slices.Equal(g, []string{fmt.Sprintf("%d rp.submitted", running)}) || !strings.Contains(out, `"type":"job_submitted"`) {
		t.Fatalf("stream get %d: %v\n%s", running, g, out)
	}
	var history []string // "seq subject" of the job's own messages, from the log
	stream, err := js.Stream(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	for seq := running + 1; seq <= info2.LastSeq; seq++ {
		raw, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(raw.Subject, fmt.Sprintf("rp.job.%d.", running)) {
			history = append(history, fmt.Sprintf("%d %s", seq, raw.Subject))
		}
	}
	if len(history) < 3 {
		t.Fatalf("job %d's history: %v", running, history)
	}
	subject := fmt.Sprintf("rp.job.%d.>", running)
	if out, err := cli.run("stream", "view", "RETAILPULSE", "--subject", subject); err == nil || !strings.Contains(out, "requires a valid terminal") {
		t.Errorf("stream view without a terminal: %v\n%s", err, out)
	}
	if script, err := exec.LookPath("script"); err != nil || runtime.GOOS != "linux" {
		t.Logf("stream view needs a terminal; not run (no util-linux script to give it one)")
	} else {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, script, "-qec", fmt.Sprintf("%s stream view RETAILPULSE --subject '%s'", bin, subject), "/dev/null")
		cmd.Env = cli.env
		raw, err := cmd.CombinedOutput()
		out := cliEscapes.ReplaceAllString(string(raw), "")
		if g := cliMatches(viewLine, out); err != nil || !slices.Equal(g, history) || !strings.Contains(out, "Reached apparent end of data") {
			t.Errorf("stream view --subject %s: %v: %v, want %v\n%s", subject, err, g, history, out)
		}
		t.Logf("stream view ran in a terminal (script)")
	}
	out = cli.ok("sub", "--stream", "RETAILPULSE", subject, "--all", "--terminate-at-end")
	if g := cliMatches(jsSubLine, out); !slices.Equal(g, history) {
		t.Errorf("sub --stream --all --terminate-at-end: %v, want %v\n%s", g, history, out)
	}
	t.Logf("job %d's history: %v", running, history)

	// Deleting its own consumer.
	cli.ok("consumer", "rm", "-f", "RETAILPULSE", "my-reader")
	if _, err := js.Consumer(ctx, st, "my-reader"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("my-reader after consumer rm: %v", err)
	}

	// The refusals.
	work := jsstore.WorkConsumer
	idArg := strconv.FormatUint(running, 10)
	refusals := []struct {
		args    []string
		subject string
	}{
		{[]string{"pub", "rp.submitted", "{}"}, "rp.submitted"},
		{[]string{"pub", fmt.Sprintf("rp.job.%d.completed", running), "{}"}, fmt.Sprintf("rp.job.%d.completed", running)},
		{[]string{"stream", "rm", "-f", "RETAILPULSE"}, "$JS.API.STREAM.DELETE.RETAILPULSE"},
		{[]string{"stream", "purge", "-f", "RETAILPULSE"}, "$JS.API.STREAM.PURGE.RETAILPULSE"},
		{[]string{"stream", "rmm", "-f", "RETAILPULSE", idArg}, "$JS.API.STREAM.MSG.DELETE.RETAILPULSE"},
		{[]string{"consumer", "info", "RETAILPULSE", work}, "$JS.API.CONSUMER.INFO.RETAILPULSE." + work},
		{[]string{"consumer", "next", "RETAILPULSE", work}, "$JS.API.CONSUMER.INFO.RETAILPULSE." + work},
		{[]string{"consumer", "rm", "-f", "RETAILPULSE", work}, "$JS.API.CONSUMER.DELETE.RETAILPULSE." + work},
		{[]string{"consumer", "add", "RETAILPULSE", work, "--pull", "--defaults"}, "$JS.API.CONSUMER.CREATE.RETAILPULSE." + work},
		{[]string{"consumer", "ls", "RETAILPULSE"}, "$JS.API.CONSUMER.NAMES.RETAILPULSE"},
	}
	// Each refused request waits out its timeout: all at once.
	var wg sync.WaitGroup
	for _, r := range refusals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := cli.run(append([]string{"--timeout", "1s"}, r.args...)...)
			if err == nil || !strings.Contains(out, fmt.Sprintf(refusedMatch, r.subject)) {
				t.Errorf("nats %s: %v, want a permissions violation for %s\n%s", strings.Join(r.args, " "), err, r.subject, out)
			}
		}()
	}
	wg.Wait()
	info3, err := app.eventLog.Info(ctx)
	if err != nil || info3.LastSeq != info2.LastSeq || info3.Msgs != info2.Msgs {
		t.Fatalf("the log after the refusals: %+v (%v), was %+v", info3, err, info2)
	}
	if c, err := js.Consumer(ctx, st, work); err != nil || len(c.CachedInfo().Config.FilterSubjects) != 2 {
		t.Fatalf("the work consumer after the refusals: %v", err)
	}
}
