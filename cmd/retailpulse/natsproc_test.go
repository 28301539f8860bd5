//go:build unix

package main

// Helpers that run a real 3-node NATS JetStream cluster as nats-server
// processes on loopback: build the server at the version go.mod pins,
// start, SIGKILL and restart nodes on their own store dirs and ports, wait
// for the cluster to be healthy, and find the meta, stream and consumer
// leaders.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

const (
	natsServerModule = "github.com/nats-io/nats-server/v2"
	// clusterStream is the service's stream (jsstore's default name).
	clusterStream = "RETAILPULSE"
)

// natsServer is the nats-server binary, built once per test binary run.
var natsServer struct {
	once    sync.Once
	version string // as go.mod requires it, e.g. v2.15.2
	err     error
}

// natsServerBin builds the nats-server command at the version go.mod
// requires (from the module cache: no network) and returns the binary.
func natsServerBin(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not in PATH")
	}
	natsServer.once.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", natsServerModule).CombinedOutput()
		if err != nil {
			natsServer.err = fmt.Errorf("go.mod does not require %s: %v\n%s", natsServerModule, err, out)
			return
		}
		natsServer.version = strings.TrimSpace(string(out))
	})
	if natsServer.err != nil {
		t.Fatal(natsServer.err)
	}
	bin := procGoBuild(t, "nats-server", natsServerModule)
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), natsServer.version) {
		t.Fatalf("%s --version = %q (%v), want %s", bin, out, err, natsServer.version)
	}
	return bin
}

// natsNode is one server of a natsCluster. Its ports and store dir stay
// the same across restarts.
type natsNode struct {
	name                        string // server_name: n1, n2, n3
	conf, storeDir              string
	port, clusterPort, httpPort int
	procs                       []*procProc // every process started, the latest last
}

func (n *natsNode) clientURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// proc returns the node's latest process, nil before the first start.
func (n *natsNode) proc() *procProc {
	if len(n.procs) == 0 {
		return nil
	}
	return n.procs[len(n.procs)-1]
}

func (n *natsNode) running() bool { return n.proc() != nil && !n.proc().exited() }

// natsCluster is a JetStream cluster of nats-server processes, with a
// client connection that knows every node. Everything stops at cleanup.
type natsCluster struct {
	t     testing.TB
	bin   string
	nodes []*natsNode
	nc    *nats.Conn
	js    jetstream.JetStream
	http  *http.Client
}

// startNATSCluster starts a 3-node cluster (server names n1..n3, cluster
// "rp-test"), each node with its own config file, store dir and loopback
// ports, fsyncing every write, and waits until it is healthy.
func startNATSCluster(t testing.TB) *natsCluster {
	t.Helper()
	c := &natsCluster{t: t, bin: natsServerBin(t), http: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{}}}
	t.Cleanup(c.http.CloseIdleConnections)
	dir := t.TempDir()
	used := map[int]bool{}
	for i := range 3 {
		c.nodes = append(c.nodes, &natsNode{
			name:        fmt.Sprintf("n%d", i+1),
			conf:        filepath.Join(dir, fmt.Sprintf("n%d.conf", i+1)),
			storeDir:    filepath.Join(dir, fmt.Sprintf("n%d-store", i+1)),
			port:        natsFreePort(t, used),
			clusterPort: natsFreePort(t, used),
			httpPort:    natsFreePort(t, used),
		})
	}
	var routes []string
	for _, n := range c.nodes {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", n.clusterPort))
	}
	for _, n := range c.nodes {
		if err := os.WriteFile(n.conf, []byte(natsNodeConfig(n, routes)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Registered before the nodes start, so it runs after they are killed.
	t.Cleanup(func() {
		if t.Failed() {
			c.logOutput()
		}
	})
	start := time.Now()
	for i := range c.nodes {
		c.spawn(i)
	}
	for i := range c.nodes {
		c.waitStarted(i)
	}
	c.waitHealthy(60 * time.Second)
	t.Logf("nats cluster of %d nodes healthy after %s (%s)", len(c.nodes), time.Since(start).Round(time.Millisecond), c.URLs())

	// Connection errors are expected (nodes get killed); the default
	// handler would print each one.
	quiet := nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})
	nc, err := nats.Connect(c.URLs(), nats.Name("cluster-test"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if c.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	c.nc = nc
	procOnFailure(t, func() { t.Logf("nats cluster state at the failure:\n%s", c.describe()) })
	return c
}

// describe returns the stream's and the work consumer's state as the
// cluster reports them, and each node's health, for failure logs.
func (c *natsCluster) describe() string {
	var b strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st, err := c.js.Stream(ctx, clusterStream); err != nil {
		fmt.Fprintf(&b, "stream: %v\n", err)
	} else if si, err := st.Info(ctx); err != nil {
		fmt.Fprintf(&b, "stream info: %v\n", err)
	} else {
		js, _ := json.Marshal(struct {
			State   jetstream.StreamState  `json:"state"`
			Cluster *jetstream.ClusterInfo `json:"cluster"`
		}{si.State, si.Cluster})
		fmt.Fprintf(&b, "stream: %s\n", js)
	}
	if cons, err := c.js.Consumer(ctx, clusterStream, jsstore.WorkConsumer); err != nil {
		fmt.Fprintf(&b, "work consumer: %v\n", err)
	} else if ci, err := cons.Info(ctx); err != nil {
		fmt.Fprintf(&b, "work consumer info: %v\n", err)
	} else {
		ci.Config = jetstream.ConsumerConfig{}
		js, _ := json.Marshal(ci)
		fmt.Fprintf(&b, "work consumer: %s\n", js)
	}
	for i, n := range c.nodes {
		if !n.running() {
			fmt.Fprintf(&b, "%s: not running\n", n.name)
			continue
		}
		code, body, err := c.monitor(i, "/healthz")
		fmt.Fprintf(&b, "%s: /healthz %d %s %v\n", n.name, code, strings.TrimSpace(string(body)), err)
	}
	return b.String()
}

// natsNodeConfig is a node's config file, like deploy/nats/nats-server.conf
// but on loopback: sync_interval always makes a write's acknowledgement
// mean it is on disk on a quorum of nodes.
func natsNodeConfig(n *natsNode, routes []string) string {
	return fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
max_payload: 8MB

jetstream {
  store_dir: %s
  sync_interval: always
}

cluster {
  name: rp-test
  listen: 127.0.0.1:%d
  no_advertise: true
  routes: [
    %s
  ]
}
`, n.name, n.port, n.httpPort, strconv.Quote(n.storeDir), n.clusterPort, strings.Join(routes, "\n    "))
}

// natsFreePort returns a free loopback port below the kernel's ephemeral
// range: a node restarts on its ports, and while it is down an outgoing
// connection could otherwise be given one of them.
func natsFreePort(t testing.TB, used map[int]bool) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 12000 {
				low = n
			}
		}
	}
	for range 200 {
		port := 10000 + rand.IntN(low-10000)
		if used[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		used[port] = true
		return port
	}
	t.Fatalf("no free port between 10000 and %d", low)
	return 0
}

// URLs returns every node's client URL, comma-separated (for --nats-url).
func (c *natsCluster) URLs() string {
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, n.clientURL())
	}
	return strings.Join(urls, ",")
}

func (c *natsCluster) spawn(i int) {
	n := c.nodes[i]
	// Output is logged by the cluster's cleanup, without route chatter.
	n.procs = append(n.procs, procSpawn(c.t, fmt.Sprintf("nats %s (start %d)", n.name, len(n.procs)+1), -1, c.bin, "-c", n.conf))
}

// natsNoise matches log lines about routes coming and going, which every
// kill and restart produces by the dozen.
var natsNoise = regexp.MustCompile(`Route connection created|Router connection closed|Error trying to connect to route|Duplicate Route`)

// logOutput logs every node process's output, route chatter dropped, at
// most the last 12 KiB of each.
func (c *natsCluster) logOutput() {
	for _, n := range c.nodes {
		for k, p := range n.procs {
			var keep []string
			for _, line := range strings.Split(p.out.String(), "\n") {
				if !natsNoise.MatchString(line) {
					keep = append(keep, line)
				}
			}
			out := strings.Join(keep, "\n")
			if len(out) > 12<<10 {
				out = "...\n" + out[len(out)-12<<10:]
			}
			state := "running"
			if p.exited() {
				state = p.state.String()
			}
			c.t.Logf("output of nats %s (start %d, %s):\n%s", n.name, k+1, state, out)
		}
	}
}

// waitStarted waits until node i's monitoring port answers with JetStream
// enabled (the node may not have caught up with the cluster yet).
func (c *natsCluster) waitStarted(i int) {
	c.t.Helper()
	n := c.nodes[i]
	jstest.CheckFor(c.t, 30*time.Second, func() error {
		if p := n.proc(); p.exited() {
			c.t.Fatalf("nats %s exited at start: %v\n%s", n.name, p.state, p.out)
		}
		code, body, err := c.monitor(i, "/healthz?js-enabled-only=true")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("nats %s: /healthz?js-enabled-only=true: %d %s", n.name, code, body)
		}
		return nil
	})
}

// start starts node i (again, after kill) on its store dir and ports and
// waits until it has started; it does not wait for it to catch up.
func (c *natsCluster) start(i int) {
	c.t.Helper()
	if c.nodes[i].running() {
		c.t.Fatalf("nats %s is already running", c.nodes[i].name)
	}
	c.spawn(i)
	c.waitStarted(i)
}

// kill SIGKILLs node i and waits until it is reaped.
func (c *natsCluster) kill(i int) {
	c.t.Helper()
	if !c.nodes[i].running() {
		c.t.Fatalf("nats %s is not running", c.nodes[i].name)
	}
	c.nodes[i].proc().kill()
}

// monitor GETs path from node i's monitoring port.
func (c *natsCluster) monitor(i int, path string) (int, []byte, error) {
	resp, err := c.http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", c.nodes[i].httpPort, path))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// natsJSZ is the part of /jsz the tests read.
type natsJSZ struct {
	Meta *struct {
		Leader string `json:"leader"`
		Size   int    `json:"cluster_size"`
	} `json:"meta_cluster"`
}

// metaLeaderSeen returns the meta leader node i sees ("" when none).
func (c *natsCluster) metaLeaderSeen(i int) (string, error) {
	code, body, err := c.monitor(i, "/jsz")
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("nats %s: /jsz: %d %s", c.nodes[i].name, code, body)
	}
	var jsz natsJSZ
	if err := json.Unmarshal(body, &jsz); err != nil {
		return "", fmt.Errorf("nats %s: /jsz: %v", c.nodes[i].name, err)
	}
	if jsz.Meta == nil {
		return "", nil
	}
	return jsz.Meta.Leader, nil
}

// healthy reports nil when every running node answers /healthz with 200
// (JetStream current: meta, streams and consumers) and all of them name
// the same running meta leader.
func (c *natsCluster) healthy() error {
	leader := ""
	for i, n := range c.nodes {
		if !n.running() {
			continue
		}
		code, body, err := c.monitor(i, "/healthz")
		if err != nil {
			return fmt.Errorf("nats %s: /healthz: %v", n.name, err)
		}
		if code != http.StatusOK {
			return fmt.Errorf("nats %s: /healthz: %d %s", n.name, code, body)
		}
		seen, err := c.metaLeaderSeen(i)
		if err != nil {
			return err
		}
		switch {
		case seen == "":
			return fmt.Errorf("nats %s sees no meta leader", n.name)
		case leader != "" && seen != leader:
			return fmt.Errorf("nats %s sees meta leader %s, another node %s", n.name, seen, leader)
		}
		leader = seen
	}
	if i, ok := c.index(leader); !ok || !c.nodes[i].running() {
		return fmt.Errorf("meta leader %q is not a running node", leader)
	}
	return nil
}

// waitHealthy waits until healthy and returns how long that took.
func (c *natsCluster) waitHealthy(total time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	jstest.CheckFor(c.t, total, c.healthy)
	return time.Since(start)
}

// index returns the node whose server name is name.
func (c *natsCluster) index(name string) (int, bool) {
	for i, n := range c.nodes {
		if n.name == name {
			return i, true
		}
	}
	return 0, false
}

// leader polls find (which returns a server name) until it names a running
// node, and returns that node.
func (c *natsCluster) leader(what string, find func(ctx context.Context) (string, error)) int {
	c.t.Helper()
	var idx int
	jstest.CheckFor(c.t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		name, err := find(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		i, ok := c.index(name)
		if !ok || !c.nodes[i].running() {
			return fmt.Errorf("%s is %q, not a running node", what, name)
		}
		idx = i
		return nil
	})
	return idx
}

// metaLeader returns the node every running node names as meta leader.
func (c *natsCluster) metaLeader() int {
	c.t.Helper()
	return c.leader("meta leader", func(context.Context) (string, error) {
		leader := ""
		for i, n := range c.nodes {
			if !n.running() {
				continue
			}
			seen, err := c.metaLeaderSeen(i)
			if err != nil {
				return "", err
			}
			if leader != "" && seen != leader {
				return "", fmt.Errorf("nodes disagree: %s and %s", leader, seen)
			}
			leader = seen
		}
		return leader, nil
	})
}

// streamLeader returns the node leading stream.
func (c *natsCluster) streamLeader(stream string) int {
	c.t.Helper()
	return c.leader("stream leader", func(ctx context.Context) (string, error) {
		st, err := c.js.Stream(ctx, stream)
		if err != nil {
			return "", err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return "", err
		}
		if info.Cluster == nil {
			return "", errors.New("no cluster info")
		}
		return info.Cluster.Leader, nil
	})
}

// consumerLeader returns the node leading the stream's consumer.
func (c *natsCluster) consumerLeader(stream, consumer string) int {
	c.t.Helper()
	return c.leader("consumer leader", func(ctx context.Context) (string, error) {
		cons, err := c.js.Consumer(ctx, stream, consumer)
		if err != nil {
			return "", err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return "", err
		}
		if info.Cluster == nil {
			return "", errors.New("no cluster info")
		}
		return info.Cluster.Leader, nil
	})
}

// roles describes what node i leads, for logs.
func (c *natsCluster) roles(i int) string {
	c.t.Helper()
	var r []string
	if c.metaLeader() == i {
		r = append(r, "meta leader")
	}
	if c.streamLeader(clusterStream) == i {
		r = append(r, "stream leader")
	}
	if c.consumerLeader(clusterStream, jsstore.WorkConsumer) == i {
		r = append(r, "consumer leader")
	}
	if len(r) == 0 {
		return c.nodes[i].name + ": follower"
	}
	return c.nodes[i].name + ": " + strings.Join(r, ", ")
}

// attach returns a store on the cluster's stream for reading the log.
func (c *natsCluster) attach(ctx context.Context) *jsstore.EventLog {
	c.t.Helper()
	store, err := jsstore.Attach(ctx, c.nc, clusterStream)
	if err != nil {
		c.t.Fatal(err)
	}
	return store
}

// stepDown asks a stream's or consumer's raft group (subject: the JetStream
// API's LEADER.STEPDOWN subject for it) to hand leadership to node to.
func (c *natsCluster) stepDown(subject string, to int) error {
	req, err := json.Marshal(map[string]any{"placement": map[string]string{"preferred": c.nodes[to].name}})
	if err != nil {
		return err
	}
	msg, err := c.nc.Request(subject, req, 5*time.Second)
	if err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	var resp struct {
		Success bool `json:"success"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("%s: %s: %w", subject, msg.Data, err)
	}
	if !resp.Success {
		return fmt.Errorf("%s: %s", subject, msg.Data)
	}
	return nil
}

// spreadLeaders moves the stream's and the consumer's leaders so that the
// meta leader, the stream leader and the consumer leader are three
// different nodes: a kill then takes exactly one role. (Only the system
// account may move the meta leader, so the other two move around it.) It
// waits until the cluster is healthy again.
func (c *natsCluster) spreadLeaders(stream, consumer string) {
	c.t.Helper()
	streamSubj := "$JS.API.STREAM.LEADER.STEPDOWN." + stream
	consSubj := "$JS.API.CONSUMER.LEADER.STEPDOWN." + stream + "." + consumer
	for attempt := 1; ; attempt++ {
		meta := c.metaLeader()
		ws, wc := (meta+1)%len(c.nodes), (meta+2)%len(c.nodes)
		s, cons := c.streamLeader(stream), c.consumerLeader(stream, consumer)
		if s == ws && cons == wc && c.metaLeader() == meta {
			c.waitHealthy(30 * time.Second)
			return
		}
		if attempt > 5 {
			c.t.Fatalf("could not spread the leaders: meta %s, stream %s, consumer %s", c.nodes[meta].name, c.nodes[s].name, c.nodes[cons].name)
		}
		moves := []struct {
			subj      string
			now, want int
			leader    func() int
		}{
			{streamSubj, s, ws, func() int { return c.streamLeader(stream) }},
			{consSubj, cons, wc, func() int { return c.consumerLeader(stream, consumer) }},
		}
		for _, m := range moves {
			if m.now == m.want {
				continue
			}
			if err := c.stepDown(m.subj, m.want); err != nil {
				c.t.Logf("spread leaders (attempt %d): %v", attempt, err)
				continue
			}
			deadline := time.Now().Add(10 * time.Second)
			for m.leader() != m.want && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
}
