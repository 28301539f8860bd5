package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/httpapi"
	"github.com/retailpulse/retailpulse/metrics"
)

// Event-stream subscribers: serve's flags for them, and their wiring into
// the App (the SSE routes, and the embedded server's client port with its
// two identities).

// subscriberFlags registers the flags of event-stream subscribers.
func (cfg *serveConfig) subscriberFlags(fs *flag.FlagSet) {
	fs.IntVar(&cfg.MaxStreams, "max-streams", httpapi.DefaultMaxStreams, "event streams (SSE) open at once; 503 beyond")
	fs.StringVar(&cfg.NATSListen, "nats-listen", "", "embedded server: open its client port on `HOST:PORT` for subscribers (user \"subscriber\", read-only); empty = no port")
	fs.StringVar(&cfg.SubscriberPassword, "subscriber-password", "", "password of the read-only NATS user \"subscriber\" (required with --nats-listen)")
	fs.StringVar(&cfg.NATSPassword, "nats-password", "", "password of the service's NATS user \"retailpulse\": sent with --nats-url; with --nats-listen, required of the service's own connections (empty = random)")
	fs.StringVar(&cfg.HandOffStreams, "hand-off-streams", "", "hand every event-stream request's connection to the instance on this machine that takes them on the unix socket `PATH` (--take-streams), serving it here while none does")
	fs.StringVar(&cfg.TakeStreams, "take-streams", "", "take the event-stream connections other instances on this machine hand over on the unix socket `PATH` (--hand-off-streams), and serve them as if accepted here")
}

// minPassword is the shortest password accepted for a NATS identity.
const minPassword = 8

// validateSubscribers checks the subscriber flags and splits --nats-listen.
func (cfg *serveConfig) validateSubscribers() error {
	if cfg.MaxStreams <= 0 {
		return errors.New("--max-streams must be positive")
	}
	switch {
	case cfg.HandOffStreams != "" && cfg.TakeStreams != "":
		return errors.New("--hand-off-streams and --take-streams: an instance either hands its event streams over or takes them")
	case cfg.WorkerOnly && (cfg.HandOffStreams != "" || cfg.TakeStreams != ""):
		return errors.New("--hand-off-streams and --take-streams are for instances that serve the API; a worker (--worker-only) serves none")
	}
	if cfg.NATSListen == "" {
		switch {
		case cfg.SubscriberPassword != "":
			return errors.New("--subscriber-password needs --nats-listen (on an external NATS, subscribers are configured there: deploy/nats)")
		case cfg.NATSPassword != "" && cfg.NATSURL == "":
			return errors.New("--nats-password needs --nats-url or --nats-listen (the embedded server without a port needs no log-in)")
		}
		return nil
	}
	if cfg.NATSURL != "" {
		return errors.New("--nats-listen opens the embedded server's port; with --nats-url, subscribers connect to the external NATS (deploy/nats)")
	}
	host, portText, err := net.SplitHostPort(cfg.NATSListen)
	port, perr := strconv.Atoi(portText)
	if err != nil || perr != nil || port < 0 || port > 65535 {
		return fmt.Errorf("--nats-listen: want HOST:PORT (e.g. 127.0.0.1:4222 or :4222), got %q", cfg.NATSListen)
	}
	if len(cfg.SubscriberPassword) < minPassword {
		return fmt.Errorf("--nats-listen needs --subscriber-password (RETAILPULSE_SUBSCRIBER_PASSWORD), at least %d characters", minPassword)
	}
	if cfg.NATSPassword != "" && len(cfg.NATSPassword) < minPassword {
		return fmt.Errorf("--nats-password must be at least %d characters", minPassword)
	}
	if cfg.NATSPassword != "" && cfg.NATSPassword == cfg.SubscriberPassword {
		return errors.New("--nats-password and --subscriber-password must differ")
	}
	cfg.natsHost, cfg.natsPort = host, port
	if cfg.natsHost == "" {
		cfg.natsHost = "0.0.0.0"
	}
	if cfg.natsPort == 0 {
		cfg.natsPort = -1 // any free port (the server's 0 would mean 4222)
	}
	return nil
}

// soleConsumer reports whether, on the embedded server, this process is
// the only one that can take jobs: true unless its client port is open to
// other instances of the service (--nats-listen with --nats-password, as
// for a worker beside an API instance). Only a sole consumer may take back
// unacked jobs at its start: a worker's would still be in its hands.
func (cfg *serveConfig) soleConsumer() bool {
	return cfg.NATSListen == "" || cfg.NATSPassword == ""
}

func secret(s string) string {
	if s == "" {
		return ""
	}
	return "(set)"
}

// embeddedServer completes the embedded server's configuration with the
// client port and its identities when --nats-listen is set, and returns
// the options of the service's own connection.
func (cfg *serveConfig) embeddedServer(sc *jsstore.ServerConfig) []nats.Option {
	if cfg.NATSListen == "" {
		return jsstore.ServiceOptions("")
	}
	password := cfg.NATSPassword
	if password == "" {
		password = jsstore.NewPassword()
	}
	sc.Listen, sc.Host, sc.Port = true, cfg.natsHost, cfg.natsPort
	sc.Auth = &jsstore.Auth{ServicePassword: password, SubscriberPassword: cfg.SubscriberPassword}
	return jsstore.ServiceOptions(password)
}

// externalOptions are the options of the service's connection to
// --nats-url.
func (cfg *serveConfig) externalOptions() []nats.Option {
	return jsstore.ServiceOptions(cfg.NATSPassword)
}

// setUpStreams creates the event-stream service for the HTTP API, with its
// metrics, and the metrics of subscribers on the embedded server's port.
// Streams end when the HTTP server shuts down (see wireStreams).
func (a *App) setUpStreams() (*httpapi.Streams, error) {
	sm := metrics.NewStreamMetrics(a.registry)
	if a.ns != nil && a.cfg.NATSListen != "" {
		traffic := jsstore.NewUserTraffic(a.ns, jsstore.SubscriberUser)
		sm.ObserveNATSSubscribers(traffic.Read)
		a.log.Info("nats listening for subscribers", "url", a.ns.ClientURL(), "user", jsstore.SubscriberUser)
	}
	a.streamMetrics = sm
	return httpapi.NewStreams(httpapi.StreamsConfig{
		Log:        a.eventLog,
		MaxStreams: a.cfg.MaxStreams,
		Observer:   sm,
		Logger:     a.log,
		OnMessage:  a.activity.observe,
	})
}

// wireStreams ends every event stream when the HTTP server starts shutting
// down, so that open streams do not hold the shutdown up.
func (a *App) wireStreams() {
	a.httpServer.RegisterOnShutdown(a.streams.Close)
}

// newStreamHandoff creates the handoff of event streams to another process
// (--hand-off-streams), or nil. Call it once, after the stream metrics.
func (a *App) newStreamHandoff() *httpapi.StreamHandoff {
	if a.cfg.HandOffStreams == "" {
		return nil
	}
	a.handoff = httpapi.NewStreamHandoff(a.cfg.HandOffStreams, a.log)
	a.handoff.Observe = func(o httpapi.HandoffOutcome) { a.streamMetrics.StreamHandedOff(string(o)) }
	a.log.Info("event streams are handed to the instance taking them", "socket", a.cfg.HandOffStreams)
	return a.handoff
}

// listenHandoff opens the unix socket of --take-streams.
func (a *App) listenHandoff() (err error) {
	if a.cfg.TakeStreams == "" {
		return nil
	}
	if a.handoffL, err = httpapi.ListenHandoff(a.cfg.TakeStreams, a.log); err != nil {
		return fmt.Errorf("%w: --take-streams: %v", errConfig, err)
	}
	a.log.Info("taking event streams handed over", "socket", a.cfg.TakeStreams)
	return nil
}

// runStreams runs the shared tail of the event streams until ctx ends.
func (a *App) runStreams(ctx context.Context) {
	_ = a.streams.Run(ctx)
}

// NATSClientURL is the embedded server's client URL with --nats-listen,
// else "".
func (a *App) NATSClientURL() string {
	if a.ns == nil || a.cfg.NATSListen == "" {
		return ""
	}
	return a.ns.ClientURL()
}

// The event log as the event-stream routes read it.
var _ httpapi.EventLog = (*jsstore.EventLog)(nil)
