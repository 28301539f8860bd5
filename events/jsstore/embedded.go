// Package jsstore is the event log on NATS JetStream: the embedded server,
// the stream and consumers, fenced appends, job loading, the projection's
// follower and the work queue. Everything that touches NATS lives here.
package jsstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/retailpulse/retailpulse/events"
)

// ServerConfig configures an embedded NATS server.
type ServerConfig struct {
	Name     string // server name; unique within a cluster
	StoreDir string // JetStream data; required (an unset one would fall back to the temp dir)
	// SyncAlways fsyncs every write before acknowledging it. Off, JetStream
	// fsyncs every SyncInterval and a power loss can drop acknowledged writes
	// made within that window.
	SyncAlways   bool
	SyncInterval time.Duration // used when !SyncAlways; 0 = server default (2 min)
	MaxPayload   int32         // largest message; 0 = DefaultMaxPayload
	MaxStore     int64         // JetStream file storage limit; 0 = server default

	// Listen on Host:Port for clients (Port -1 = random). When false the
	// server takes no network connections at all (single-node mode).
	Listen bool
	Host   string
	Port   int
	// Cluster: set ClusterName to join routes (requires Listen).
	ClusterName string
	ClusterHost string
	ClusterPort int
	Routes      []*url.URL
	// Auth, if set, requires every client to log in (see Auth).
	Auth *Auth

	Logger *slog.Logger // warn and above are bridged; nil = silent
}

// DefaultMaxPayload lets a large submission (100,000 URLs, compressed) fit
// in one message, so it is stored atomically.
const DefaultMaxPayload = 8 << 20

// StartServer starts an embedded NATS server with JetStream and waits until
// it accepts connections. The caller owns the server and must Shutdown it.
// Signals are never handled by the server (NoSigs): its own handler would
// os.Exit on SIGTERM before our graceful shutdown runs.
func StartServer(cfg ServerConfig) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("start nats: store dir is required")
	}
	opts := &server.Options{
		ServerName:            cfg.Name,
		JetStream:             true,
		StoreDir:              cfg.StoreDir,
		SyncAlways:            cfg.SyncAlways,
		SyncInterval:          cfg.SyncInterval,
		MaxPayload:            cfg.MaxPayload,
		JetStreamMaxStore:     cfg.MaxStore,
		NoSigs:                true,
		NoLog:                 cfg.Logger == nil,
		DontListen:            !cfg.Listen,
		Host:                  cfg.Host,
		Port:                  cfg.Port,
		DisableShortFirstPing: true,
	}
	if opts.MaxPayload == 0 {
		opts.MaxPayload = DefaultMaxPayload
	}
	if cfg.Auth != nil {
		if cfg.Auth.ServicePassword == "" {
			return nil, errors.New("start nats: Auth needs a service password")
		}
		opts.Users = cfg.Auth.users()
	}
	if cfg.Listen && opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if cfg.ClusterName != "" {
		if !cfg.Listen {
			return nil, errors.New("start nats: a cluster needs Listen")
		}
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: cfg.ClusterHost, Port: cfg.ClusterPort}
		if opts.Cluster.Host == "" {
			opts.Cluster.Host = "127.0.0.1"
		}
		opts.Routes = cfg.Routes
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	if cfg.Logger != nil {
		s.SetLoggerV2(slogBridge{cfg.Logger.With("component", "nats")}, false, false, false)
	}
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, errors.New("start nats: server not ready after 30s")
	}
	return s, nil
}

// ConnectInProcess connects to an embedded server without a socket; opts
// are added (ServiceOptions for a server with Auth).
func ConnectInProcess(s *server.Server, name string, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect("", append([]nats.Option{nats.InProcessServer(s), nats.Name(name), nats.MaxReconnects(-1)}, opts...)...)
}

// Connect connects to an external NATS server or cluster (comma-separated
// URLs); opts are added (ServiceOptions for the service).
func Connect(urls, name string, logger *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(urls, append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if logger != nil && err != nil {
				logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			if logger != nil {
				logger.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
			}
		})}, opts...)...)
}

// slogBridge passes the server's warnings and errors to slog.
type slogBridge struct{ l *slog.Logger }

func (b slogBridge) Noticef(string, ...any) {}
func (b slogBridge) Debugf(string, ...any)  {}
func (b slogBridge) Tracef(string, ...any)  {}
func (b slogBridge) Warnf(format string, v ...any) {
	b.l.Warn(fmt.Sprintf(format, v...))
}
func (b slogBridge) Errorf(format string, v ...any) {
	b.l.Error(fmt.Sprintf(format, v...))
}
func (b slogBridge) Fatalf(format string, v ...any) {
	b.l.Error(fmt.Sprintf(format, v...), "fatal", true)
}

// attemptTimeout bounds one try of a retried operation: a request that
// gets no answer (no leader, several clients creating the same stream on a
// fresh cluster at once) must not use up the caller's whole deadline, and
// a submit bounded at a few seconds gets more than one try.
const attemptTimeout = 2 * time.Second

// retry calls fn with capped exponential backoff until it succeeds, returns
// a permanent error (wrapped in permanentErr), or ctx ends. Each try gets
// its own context, bounded by attemptTimeout. When ctx's deadline passes
// while the last error was transient, the error wraps
// events.ErrUnavailable; when ctx is cancelled, ctx.Err().
func retry(ctx context.Context, fn func(ctx context.Context) error) error {
	delay := 50 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		var p permanentErr
		if errors.As(err, &p) {
			return p.err
		}
		if ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
		}
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%w: %w (last error: %v)", events.ErrUnavailable, ctx.Err(), err)
			}
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
		delay = min(delay*2, time.Second)
	}
}

type permanentErr struct{ err error }

func (p permanentErr) Error() string { return p.err.Error() }
