package httpapi

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// handoffPair is an instance that hands its requests over (front, serving
// "local" itself when it cannot) and the process that takes them
// (streams), both on real sockets; outcomes records the front's.
type handoffPair struct {
	front, sock string
	l           *HandoffListener
	streams     *http.Server
	mu          sync.Mutex
	outcomes    []HandoffOutcome
}

func newHandoffPair(t *testing.T) *handoffPair {
	t.Helper()
	p := &handoffPair{sock: filepath.Join(t.TempDir(), "streams.sock")}
	l, err := ListenHandoff(p.sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.l = l
	p.streams = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "streams "+r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("X-Probe")+" "+r.RemoteAddr)
	})}
	go p.streams.Serve(l)
	t.Cleanup(func() { p.streams.Close() })

	hs := NewStreamHandoff(p.sock, nil)
	hs.Observe = func(o HandoffOutcome) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.outcomes = append(p.outcomes, o)
	}
	t.Cleanup(func() { hs.Close() })
	front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "local "+r.Method+" "+r.URL.RequestURI())
	}))
	front.Listener = hs.Listener(front.Listener, 5*time.Second)
	front.Start()
	t.Cleanup(front.Close)
	p.front = front.URL
	return p
}

func (p *handoffPair) seen() []HandoffOutcome {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]HandoffOutcome(nil), p.outcomes...)
}

// get sends a request with an X-Probe header on client and returns the
// status and body.
func get(t *testing.T, client *http.Client, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Probe", "probe-1")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestStreamHandoff_TheOtherProcessServesTheConnection(t *testing.T) {
	p := newHandoffPair(t)
	var local string
	tr := &http.Transport{MaxConnsPerHost: 1, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			local = c.LocalAddr().String()
		}
		return c, err
	}}
	client := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()

	code, body := get(t, client, http.MethodGet, p.front+"/api/events?since=7")
	if want := "streams GET /api/events?since=7 probe-1 " + local; code != 200 || body != want {
		t.Fatalf("handed GET: %d %q, want 200 %q", code, body, want)
	}
	// The connection is the other process's now: the next request on it
	// goes there too, without another handoff.
	code, body = get(t, client, http.MethodGet, p.front+"/api/status?jobid=1")
	if want := "streams GET /api/status?jobid=1 probe-1 " + local; code != 200 || body != want {
		t.Fatalf("next request on the connection: %d %q, want 200 %q", code, body, want)
	}
	// Other methods are served where they arrive.
	tr.CloseIdleConnections()
	if code, body = get(t, client, http.MethodPost, p.front+"/api/events"); code != 200 || body != "local POST /api/events" {
		t.Fatalf("POST: %d %q, want it served locally", code, body)
	}
	tr.CloseIdleConnections()
	if code, body = get(t, client, http.MethodGet, p.front+"/api/status?jobid=1"); code != 200 || body != "local GET /api/status?jobid=1" {
		t.Fatalf("status on a new connection: %d %q, want it served locally", code, body)
	}
	if got := p.seen(); len(got) != 1 || got[0] != HandoffSent {
		t.Fatalf("outcomes %v, want [sent]", got)
	}
}

func TestStreamHandoff_ServesLocallyWhenNobodyListens(t *testing.T) {
	p := newHandoffPair(t)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if code, body := get(t, client, http.MethodGet, p.front+"/api/events"); code != 200 || !strings.HasPrefix(body, "streams ") {
		t.Fatalf("while listening: %d %q", code, body)
	}
	// The streams process goes away: the send on the connection to it
	// fails, then dialling it does; both requests are served here.
	p.streams.Close()
	p.l.Close()
	for range 2 {
		if code, body := get(t, client, http.MethodGet, p.front+"/api/events"); code != 200 || body != "local GET /api/events" {
			t.Fatalf("with nobody listening: %d %q, want it served locally", code, body)
		}
	}
	want := []HandoffOutcome{HandoffSent, HandoffLocal, HandoffLocal}
	if got := p.seen(); strings.Join(outcomeStrings(got), ",") != strings.Join(outcomeStrings(want), ",") {
		t.Fatalf("outcomes %v, want %v", got, want)
	}
}

func outcomeStrings(os []HandoffOutcome) []string {
	var s []string
	for _, o := range os {
		s = append(s, string(o))
	}
	return s
}

func TestListenHandoff_RefusesALiveSocketAndReplacesAStaleOne(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := ListenHandoff(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ListenHandoff(sock, nil); err == nil || !strings.Contains(err.Error(), "another process listens there") {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	l.Close()
	// A socket file left by a process that is gone (as after kill -9).
	ul, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	l2, err := ListenHandoff(sock, nil)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	l2.Close()
}

func TestIsStreamRequest(t *testing.T) {
	tests := []struct {
		head string
		want bool
	}{
		{"GET /api/events HTTP/1.1\r\nHost: x\r\n", true},
		{"GET /api/events/ HTTP/1.1\r\n", true},
		{"GET /api/events?since=3&type=job_completed HTTP/1.1\r\n", true},
		{"GET /api/jobs/42/events HTTP/1.1\r\n", true},
		{"GET /api/jobs/42/events?last_event_id=9-0 HTTP/1.0\n", true},
		{"GET /api/jobs/x/events HTTP/1.1\r\n", true}, // the streams instance answers 400
		{"GET /api/jobs//events HTTP/1.1\r\n", false},
		{"GET /api/jobs/1/2/events HTTP/1.1\r\n", false},
		{"GET /api/jobs/42/stores HTTP/1.1\r\n", false},
		{"GET /api/status?jobid=1 HTTP/1.1\r\n", false},
		{"POST /api/events HTTP/1.1\r\n", false},
		{"HEAD /api/events HTTP/1.1\r\n", false},
		{"GET /api/events HTTP/2.0\r\n", false},
		{"GET /api/events HTTP/1.1", false}, // the line is not complete
		{"", false},
	}
	for _, tt := range tests {
		if got := isStreamRequest([]byte(tt.head)); got != tt.want {
			t.Errorf("isStreamRequest(%q) = %v, want %v", tt.head, got, tt.want)
		}
	}
}

// A connection that sends nothing within the header timeout is passed on
// to the local server as it is: what it sends later is served here, even
// a stream request.
func TestStreamHandoff_SilentConnectionStaysLocal(t *testing.T) {
	p := newHandoffPair(t)
	hs := NewStreamHandoff(p.sock, nil)
	t.Cleanup(func() { hs.Close() })
	front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "local "+r.URL.RequestURI())
	}))
	const headerTimeout = 50 * time.Millisecond
	front.Listener = hs.Listener(front.Listener, headerTimeout)
	front.Start()
	t.Cleanup(front.Close)

	c, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(4 * headerTimeout) // silent past the peek's timeout (not a speed assumption: longer only delays the write)
	if _, err := io.WriteString(c, "GET /api/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(resp), "local /api/events") {
		t.Fatalf("late stream request: %q, want it served locally", resp)
	}
}
