// Package jstest starts real NATS JetStream servers for tests: an embedded
// single node, or a 3-node cluster on loopback in one process.
package jstest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/retailpulse/retailpulse/events/jsstore"
)

// CheckFor polls fn until it returns nil, failing tb after total.
func CheckFor(tb testing.TB, total time.Duration, fn func() error) {
	tb.Helper()
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %s: %v", total, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// StartSingle starts an embedded single node (no listener, SyncAlways) in
// tb.TempDir() and returns a connection to it. Both stop at cleanup.
func StartSingle(tb testing.TB) *nats.Conn {
	tb.Helper()
	s, err := jsstore.StartServer(jsstore.ServerConfig{Name: "single", StoreDir: tb.TempDir(), SyncAlways: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := jsstore.ConnectInProcess(s, "test")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// StartCluster starts a 3-node JetStream cluster on loopback ports and
// returns its servers and a connection that knows all three.
func StartCluster(tb testing.TB) ([]*server.Server, *nats.Conn) {
	tb.Helper()
	// Every node needs its routes up front (JetStream refuses a cluster
	// without them), so reserve the three cluster ports first.
	var routes []*url.URL
	var ports []int
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		l.Close()
		u, _ := url.Parse(fmt.Sprintf("nats-route://127.0.0.1:%d", ports[len(ports)-1]))
		routes = append(routes, u)
	}
	servers := make([]*server.Server, 3)
	errs := make(chan error, 3)
	for i := range 3 {
		dir := tb.TempDir()
		go func() {
			s, err := jsstore.StartServer(jsstore.ServerConfig{
				Name: fmt.Sprintf("n%d", i+1), StoreDir: dir, SyncAlways: true,
				Listen: true, Port: -1, ClusterName: "rp-test", ClusterPort: ports[i], Routes: routes,
			})
			servers[i] = s
			errs <- err
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			tb.Fatal(err)
		}
	}
	for _, s := range servers {
		tb.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	}
	CheckFor(tb, 20*time.Second, func() error {
		for _, s := range servers {
			if s.NumRoutes() < 2 {
				return fmt.Errorf("%s has %d routes", s.Name(), s.NumRoutes())
			}
			if !s.JetStreamIsClustered() || !s.JetStreamIsCurrent() {
				return fmt.Errorf("%s: jetstream not current", s.Name())
			}
		}
		return nil
	})
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.ClientURL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return servers, nc
}

// Open opens the store on nc, failing tb on error.
func Open(tb testing.TB, nc *nats.Conn, cfg jsstore.Config) *jsstore.EventLog {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := jsstore.Open(ctx, nc, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// Backend is a kind of deployment a contract test runs against.
type Backend struct {
	Name string
	Open func(tb testing.TB, cfg jsstore.Config) *jsstore.EventLog
}

// Backends are the embedded single node and a 3-node cluster (R3 stream).
var Backends = []Backend{
	{"single", func(tb testing.TB, cfg jsstore.Config) *jsstore.EventLog {
		return Open(tb, StartSingle(tb), cfg)
	}},
	{"cluster", func(tb testing.TB, cfg jsstore.Config) *jsstore.EventLog {
		_, nc := StartCluster(tb)
		cfg.Replicas = 3
		return Open(tb, nc, cfg)
	}},
}
