package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

func TestServeConfig_SubscriberFlags(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantErr  string
		wantHost string
		wantPort int
	}{
		{name: "off by default"},
		{name: "listen with a password", args: []string{"--nats-listen", "127.0.0.1:4333", "--subscriber-password", "12345678"}, wantHost: "127.0.0.1", wantPort: 4333},
		{name: "password from the environment", args: []string{"--nats-listen", ":4222"}, env: map[string]string{"RETAILPULSE_SUBSCRIBER_PASSWORD": "from-env-1"}, wantHost: "0.0.0.0", wantPort: 4222},
		{name: "listen from the environment", env: map[string]string{"RETAILPULSE_NATS_LISTEN": "127.0.0.1:0", "RETAILPULSE_SUBSCRIBER_PASSWORD": "from-env-1"}, wantHost: "127.0.0.1", wantPort: -1},
		{name: "listen needs the subscriber password", args: []string{"--nats-listen", "127.0.0.1:4222"}, wantErr: "--nats-listen needs --subscriber-password"},
		{name: "short subscriber password", args: []string{"--nats-listen", "127.0.0.1:4222", "--subscriber-password", "short"}, wantErr: "at least 8"},
		{name: "subscriber password without listen", args: []string{"--subscriber-password", "12345678"}, wantErr: "--subscriber-password needs --nats-listen"},
		{name: "listen with an external NATS", args: []string{"--nats-listen", ":4222", "--subscriber-password", "12345678", "--nats-url", "nats://n1:4222"}, wantErr: "--nats-listen opens the embedded server's port"},
		{name: "bad address", args: []string{"--nats-listen", "4222", "--subscriber-password", "12345678"}, wantErr: "want HOST:PORT"},
		{name: "port out of range", args: []string{"--nats-listen", ":70000", "--subscriber-password", "12345678"}, wantErr: "want HOST:PORT"},
		{name: "same passwords", args: []string{"--nats-listen", ":4222", "--subscriber-password", "12345678", "--nats-password", "12345678"}, wantErr: "must differ"},
		{name: "service password with an external NATS", args: []string{"--nats-url", "nats://n1:4222", "--nats-password", "x"}},
		{name: "service password alone", args: []string{"--nats-password", "12345678"}, wantErr: "--nats-password needs --nats-url or --nats-listen"},
		{name: "max streams", args: []string{"--max-streams", "0"}, wantErr: "--max-streams must be positive"},
		{name: "streams handed over", args: []string{"--hand-off-streams", "/run/rp/streams.sock"}},
		{name: "streams handed over and taken", args: []string{"--hand-off-streams", "/run/a.sock", "--take-streams", "/run/b.sock"}, wantErr: "either hands its event streams over or takes them"},
		{name: "a worker taking streams", args: []string{"--worker-only", "--nats-url", "nats://n1:4222", "--take-streams", "/run/b.sock"}, wantErr: "a worker (--worker-only) serves none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(tt.args, tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.natsHost != tt.wantHost || cfg.natsPort != tt.wantPort {
				t.Fatalf("listen on %q:%d, want %q:%d", cfg.natsHost, cfg.natsPort, tt.wantHost, tt.wantPort)
			}
			for _, v := range cfg.redacted() {
				if s, ok := v.(string); ok && s != "" && (s == cfg.SubscriberPassword || s == cfg.NATSPassword) {
					t.Fatalf("a password is logged: %v", cfg.redacted())
				}
			}
		})
	}
}

// sseEvents reads a job's event stream from the running service to its
// end and returns "<id> <type>" per event.
func sseEvents(t *testing.T, url string, header ...string) []string {
	t.Helper()
	return sseEventsOn(t, http.DefaultClient, url, header...)
}

// submitWithToken submits body to base with the bearer token and returns
// the job id; anything but 201 fails the test.
func submitWithToken(t *testing.T, base, token, body string) uint64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/submit/", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sub struct {
		JobID uint64 `json:"job_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&sub); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("submit: %d %v", resp.StatusCode, err)
	}
	return sub.JobID
}

// logEvents returns job id's events as the log holds them, rendered as
// sseEvents renders a stream's ("<position> <type>"), and the subjects of
// its messages.
func logEvents(t *testing.T, a *testApp, id uint64) (positions, subjects []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := a.eventLog.LoadJob(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	positions = []string{fmt.Sprintf("%d-0 %s", id, events.TypeJobSubmitted)}
	subjects = []string{events.SubjectSubmitted}
	for _, r := range h.Records {
		subjects = append(subjects, r.Subject)
		for i, ev := range r.Events {
			positions = append(positions, fmt.Sprintf("%d-%d %s", r.Seq, i, ev.EventType()))
		}
	}
	return positions, subjects
}

// sseEventsOn is sseEvents with client.
func sseEventsOn(t *testing.T, client *http.Client, url string, header ...string) []string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	var out []string
	var id string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "event: "):
			out = append(out, id+" "+line[7:])
		}
	}
	return out
}

// TestApp_SubscribersFollowAJobOverSSEAndNATS runs the real service with
// its NATS port open: a job's SSE stream and a subscriber's consumer on the
// port both see exactly the job's events in the log, and the metrics count
// them by door.
// Only a process no other service instance can join takes back unacked
// jobs at its start.
func TestServeConfig_SoleConsumer(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want bool
	}{
		{"embedded, no port", nil, true},
		{"port for subscribers only", []string{"--nats-listen", "127.0.0.1:4222", "--subscriber-password", "sub-pw-12"}, true},
		{"port open to workers", []string{"--nats-listen", "127.0.0.1:4222", "--subscriber-password", "sub-pw-12", "--nats-password", "svc-pw-12"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(tt.args, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.soleConsumer(); got != tt.want {
				t.Fatalf("soleConsumer() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestApp_SubscribersFollowAJobOverSSEAndNATS(t *testing.T) {
	imgs := newImageServer(t)
	app := startApp(t, t.TempDir(), "--nats-listen", "127.0.0.1:0", "--subscriber-password", "subscriber-pw", "--api-token", "tok")
	nc, err := nats.Connect(app.NATSClientURL(), nats.UserInfo(jsstore.SubscriberUser, "subscriber-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(ctx, jsstore.DefaultStream, jetstream.ConsumerConfig{Durable: "e2e", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}

	body := fmt.Sprintf(`{"count":2,"visits":[{"store_id":%q,"image_url":["%s/10x20.png","%s/30x40.jpg"],"visit_time":"t"},{"store_id":%q,"image_url":["%s/404"],"visit_time":"t"}]}`,
		storeA, imgs.URL, imgs.URL, storeB, imgs.URL)
	id := submitWithToken(t, app.url, "tok", body)

	got := sseEvents(t, fmt.Sprintf("%s/api/jobs/%d/events", app.url, id), "Authorization", "Bearer tok")
	want, wantSubjects := logEvents(t, app, id)
	if !slices.Equal(got, want) {
		t.Fatalf("SSE events\n%v\nwant the log's\n%v", got, want)
	}

	var gotSubjects []string
	for len(gotSubjects) < len(wantSubjects) {
		batch, err := cons.Fetch(len(wantSubjects), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if b, err := events.Decode(m.Data(), m.Headers().Get(events.HeaderEncoding)); err != nil || (b.JobID != id && m.Subject() != events.SubjectSubmitted) {
				continue
			}
			gotSubjects = append(gotSubjects, m.Subject())
			m.Ack()
		}
		if n == 0 {
			t.Fatalf("the subscriber's consumer got %v, want %v", gotSubjects, wantSubjects)
		}
	}
	if !slices.Equal(gotSubjects, wantSubjects) {
		t.Fatalf("the subscriber's consumer got %v, want %v", gotSubjects, wantSubjects)
	}

	jstest.CheckFor(t, 5*time.Second, func() error {
		code, _, metricsText := do(t, http.MethodGet, app.url+"/metrics", "")
		if code != http.StatusOK {
			return fmt.Errorf("metrics: %d", code)
		}
		for _, line := range []string{
			`retailpulse_event_streams_open{door="sse_job"} 0`,
			fmt.Sprintf(`retailpulse_event_stream_events_sent_total{door="sse_job"} %d`, len(want)),
			`retailpulse_nats_subscriber_connections 1`,
		} {
			if !strings.Contains(metricsText, line) {
				return fmt.Errorf("metrics lack %q", line)
			}
		}
		return nil
	})
}

func TestApp_OpenStreamsDoNotHoldUpShutdown(t *testing.T) {
	app := startApp(t, t.TempDir())
	resp, err := http.Get(app.url + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	start := time.Now()
	app.stop()
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("shutdown with an open stream took %s", took)
	}
	ended := make(chan struct{})
	go func() { _, _ = bufio.NewReader(resp.Body).ReadString(0); close(ended) }()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream is still open after shutdown")
	}
}

// TestApp_StreamsHandedToAnotherInstance runs the one-machine split of the
// streams: the instance clients reach hands each event-stream connection
// to a second instance on the same log (--take-streams), which serves the
// whole stream on that connection. The client sees the same stream as
// from one instance; the second instance wrote it, and refused the one
// without the token.
func TestApp_StreamsHandedToAnotherInstance(t *testing.T) {
	imgs := newImageServer(t)
	sock := filepath.Join(t.TempDir(), "streams.sock")
	const password = "service-pw-1"
	front := startApp(t, t.TempDir(), "--nats-listen", "127.0.0.1:0", "--nats-password", password,
		"--subscriber-password", "subscriber-pw-1", "--api-token", "tok", "--hand-off-streams", sock)
	streams := startApp(t, t.TempDir(), "--job-slots", "0", "--nats-url", front.NATSClientURL(), "--nats-password", password,
		"--api-token", "tok", "--take-streams", sock)

	body := fmt.Sprintf(`{"count":1,"visits":[{"store_id":%q,"image_url":["%s/10x20.png","%s/30x40.jpg"],"visit_time":"t"}]}`, storeA, imgs.URL, imgs.URL)
	id := submitWithToken(t, front.url, "tok", body)
	// Only a connection's first request is looked at: the streams go on
	// new connections, as an EventSource's usually do.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := fresh.Get(fmt.Sprintf("%s/api/jobs/%d/events", front.url, id)); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("stream without the token: %v %v, want 401", resp, err)
	} else {
		resp.Body.Close()
	}

	got := sseEventsOn(t, fresh, fmt.Sprintf("%s/api/jobs/%d/events", front.url, id), "Authorization", "Bearer tok")
	want, _ := logEvents(t, front, id)
	if !slices.Equal(got, want) {
		t.Fatalf("SSE events\n%v\nwant the log's\n%v", got, want)
	}

	metricsOf := func(a *testApp) string {
		code, _, text := do(t, http.MethodGet, a.url+"/metrics", "")
		if code != http.StatusOK {
			t.Fatalf("metrics: %d", code)
		}
		return text
	}
	jstest.CheckFor(t, 5*time.Second, func() error {
		for _, c := range []struct {
			who  string
			text string
			line string
		}{
			{"front", metricsOf(front), `retailpulse_event_stream_handoffs_total{outcome="sent"} 2`}, // the one refused too
			{"front", metricsOf(front), `retailpulse_event_stream_events_sent_total{door="sse_job"} 0`},
			{"streams", metricsOf(streams), fmt.Sprintf(`retailpulse_event_stream_events_sent_total{door="sse_job"} %d`, len(want))},
		} {
			if !strings.Contains(c.text, c.line) {
				return fmt.Errorf("%s's metrics lack %q", c.who, c.line)
			}
		}
		return nil
	})
}
