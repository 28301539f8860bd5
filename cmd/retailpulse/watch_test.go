package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// runClient runs a client command with env as its environment and stdin.
func runClient(t *testing.T, env map[string]string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb syncBuffer
	m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }, Stdin: strings.NewReader(stdin)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := m.Run(ctx, args)
	return code, out.String(), errb.String()
}

func TestWatch_ExitCodes(t *testing.T) {
	imgs := newImageServer(t)
	app := startApp(t, t.TempDir(), "--api-token", "tok")
	submit := func(body string) uint64 {
		code, out, errs := runClient(t, nil, body, "submit", "--url", app.url, "--token", "tok", "-")
		if code != exitOK {
			t.Fatalf("submit: exit %d: %s", code, errs)
		}
		var id uint64
		if _, err := fmt.Sscan(out, &id); err != nil {
			t.Fatalf("submit printed %q", out)
		}
		return id
	}
	good := submit(jobBody(visit{storeA, []string{imgs.URL + "/10x20.png", imgs.URL + "/30x40.jpg"}, "t"}))
	bad := submit(jobBody(visit{storeA, []string{imgs.URL + "/10x20.png"}, "t"}, visit{storeB, []string{imgs.URL + "/404"}, "t"}))
	dead := func() string { // a port nothing listens on
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		defer l.Close()
		return "http://" + l.Addr().String()
	}()
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		wantCode int
		wantOut  []string
		wantErr  string
	}{
		{"completed", nil, []string{"watch", "--url", app.url, "--token", "tok", fmt.Sprint(good)}, exitOK,
			[]string{"2/2 images", fmt.Sprintf("job %d: completed: 2 images processed, 0 failed", good)}, ""},
		{"failed", nil, []string{"watch", "--url", app.url, "--token", "tok", fmt.Sprint(bad)}, exitError,
			[]string{"2/2 images", "failed: " + storeB + " 1", fmt.Sprintf("job %d: failed: 1 images processed, 1 failed", bad), "  " + storeB + ": image " + imgs.URL + "/404: http 404"}, ""},
		{"url and token from the environment", map[string]string{"RETAILPULSE_URL": app.url, "RETAILPULSE_TOKEN": "tok"}, []string{"watch", fmt.Sprint(good)}, exitOK,
			[]string{"completed"}, ""},
		{"unknown job", nil, []string{"watch", "--url", app.url, "--token", "tok", fmt.Sprint(bad + 1000)}, exitUsage, nil, "no such job"},
		{"wrong token", nil, []string{"watch", "--url", app.url, "--token", "nope", fmt.Sprint(good)}, exitUsage, nil, "check --token"},
		{"no job", nil, []string{"watch", "--url", app.url}, exitUsage, nil, "name one job id"},
		{"not a job id", nil, []string{"watch", "--url", app.url, "x1"}, exitUsage, nil, "not a positive integer"},
		{"bad url", nil, []string{"watch", "--url", "localhost:8080", "1"}, exitUsage, nil, "--url"},
		{"service unreachable", nil, []string{"watch", "--url", dead, "--reconnect-timeout", "300ms", "1"}, exitUsage, nil, "cannot reach the service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runClient(t, tt.env, "", tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errs)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if !strings.Contains(errs, tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, errs)
			}
			if strings.Contains(out, "\r") || strings.Contains(out, "\x1b") {
				t.Errorf("a bar on a stdout that is not a terminal:\n%q", out)
			}
		})
	}
}

func TestSubmit_WaitAndExitCodes(t *testing.T) {
	imgs := newImageServer(t)
	app := startApp(t, t.TempDir(), "--gpu-pause", "20ms")
	file := filepath.Join(t.TempDir(), "job.json")
	urls := []string{}
	for i := range 20 {
		urls = append(urls, fmt.Sprintf("%s/%dx10.png", imgs.URL, i+1))
	}
	if err := os.WriteFile(file, []byte(jobBody(visit{storeA, urls, "t"})), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		stdin    string
		args     []string
		wantCode int
		wantOut  []string
		wantErr  string
	}{
		{"wait", "", []string{"submit", "--url", app.url, "--wait", file}, exitOK,
			[]string{"20/20 images", "completed: 20 images processed, 0 failed"}, ""},
		{"from stdin", jobBody(visit{storeA, urls[:1], "t"}), []string{"submit", "--url", app.url, "-"}, exitOK, nil, ""},
		{"refused job", `{"count":1}`, []string{"submit", "--url", app.url, "-"}, exitError, nil, "job refused: 400"},
		{"missing file", "", []string{"submit", "--url", app.url, filepath.Join(t.TempDir(), "none.json")}, exitUsage, nil, "no such file"},
		{"no file", "", []string{"submit", "--url", app.url}, exitUsage, nil, "name one file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runClient(t, nil, tt.stdin, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errs)
			}
			if tt.wantCode == exitOK {
				var id uint64
				if _, err := fmt.Sscan(out, &id); err != nil || id == 0 {
					t.Fatalf("the first line is not the job id:\n%s", out)
				}
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if !strings.Contains(errs, tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, errs)
			}
		})
	}
}

// TestWatch_ReconnectsWithLastEventID cuts the watcher's stream mid-job:
// it reconnects where it was and counts every image once.
func TestWatch_ReconnectsWithLastEventID(t *testing.T) {
	imgs := newImageServer(t)
	app := startApp(t, t.TempDir(), "--gpu-pause", "30ms", "--store-concurrency", "2")
	front := httptest.NewServer(app.httpServer.Handler) // the same API on a server the test can cut
	defer front.Close()
	var urls []string
	for i := range 30 {
		urls = append(urls, fmt.Sprintf("%s/%dx10.png", imgs.URL, i+1))
	}
	id := app.submit(t, jobBody(visit{storeA, urls, "t"}))

	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
		done <- m.Run(context.Background(), []string{"watch", "--url", front.URL, fmt.Sprint(id)})
	}()
	jstest.CheckFor(t, 20*time.Second, func() error {
		if !strings.Contains(out.String(), "images") {
			return fmt.Errorf("no progress yet")
		}
		return nil
	})
	front.CloseClientConnections()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("watch did not end\nstdout: %s", out.String())
	}
	if !strings.Contains(out.String(), "reconnecting") {
		t.Fatalf("the stream was not cut mid-job:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "30/30 images") || !strings.Contains(out.String(), "completed: 30 images processed") {
		t.Fatalf("want every image counted once:\n%s", out.String())
	}
}

func TestMain_HelpListsClientCommands(t *testing.T) {
	code, out, _ := runMain(t, "help")
	if code != exitOK || !strings.Contains(out, "submit") || !strings.Contains(out, "watch") || !strings.Contains(out, "RETAILPULSE_TOKEN") {
		t.Fatalf("help: exit %d:\n%s", code, out)
	}
	for _, cmd := range []string{"submit", "watch"} {
		code, _, errs := runMain(t, "help", cmd)
		if code != exitOK || !strings.Contains(errs, "-token") || !strings.Contains(errs, "Exit 0") {
			t.Fatalf("help %s: exit %d:\n%s", cmd, code, errs)
		}
	}
}
