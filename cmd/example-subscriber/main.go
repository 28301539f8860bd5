// Command example-subscriber is an example event-stream subscriber: a
// program outside the service that follows retailpulse's event log over
// NATS and prints the perimeter of every image the service processes.
//
// It reads through a durable JetStream consumer of its own, so it survives
// its own restart: the consumer remembers what it acknowledged, and the
// next run continues after it. A message is acknowledged only after its
// images are printed; a graceful stop (SIGINT, SIGTERM) finishes the
// messages it holds first, so nothing is printed twice. After a crash, the
// messages it held unacknowledged are delivered again (at least once).
//
//	retailpulse serve --nats-listen 127.0.0.1:4222 --subscriber-password s3cret-pw &
//	RETAILPULSE_SUBSCRIBER_PASSWORD=s3cret-pw go run ./cmd/example-subscriber
//
// See docs/events.md, "Consuming the log".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/retailpulse/retailpulse/events"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// config is the command line, with environment fallbacks.
type config struct {
	url, user, password, durable, stream string
	job                                  uint64
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	var cfg config
	fs := flag.NewFlagSet("example-subscriber", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.url, "nats-url", orEnv(getenv, "RETAILPULSE_NATS_URL", "nats://127.0.0.1:4222"), "the NATS server (env RETAILPULSE_NATS_URL)")
	fs.StringVar(&cfg.user, "user", "subscriber", "NATS user")
	fs.StringVar(&cfg.password, "password", getenv("RETAILPULSE_SUBSCRIBER_PASSWORD"), "NATS password (env RETAILPULSE_SUBSCRIBER_PASSWORD)")
	fs.StringVar(&cfg.durable, "durable", "perimeters", "name of this subscriber's durable consumer: runs with the same name continue where the last one stopped")
	fs.StringVar(&cfg.stream, "stream", "RETAILPULSE", "the event log's stream")
	fs.Uint64Var(&cfg.job, "job", 0, "follow only this job (0: every job)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := follow(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "example-subscriber: %v\n", err)
		return 1
	}
	return 0
}

func orEnv(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// follow prints every image outcome until ctx ends.
func follow(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	nc, err := nats.Connect(cfg.url, nats.UserInfo(cfg.user, cfg.password), nats.Name("example-subscriber"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect %s: %w", cfg.url, err)
	}
	defer nc.Drain()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	// Image outcomes are stored in batches on rp.job.<id>.images.
	filter := "rp.job.*.images"
	if cfg.job != 0 {
		filter = fmt.Sprintf("rp.job.%d.images", cfg.job)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Created on the first run (from the start of the log); later runs find
	// it and continue after what it acknowledged.
	cons, err := js.CreateOrUpdateConsumer(cctx, cfg.stream, jetstream.ConsumerConfig{
		Durable:       cfg.durable,
		FilterSubject: filter,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1000,
	})
	if err != nil {
		return fmt.Errorf("consumer %s: %w", cfg.durable, err)
	}
	msgs, err := cons.Messages(jetstream.PullMaxMessages(100), jetstream.PullHeartbeat(time.Second), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "example-subscriber: following %s on %s as %q\n", filter, cfg.stream, cfg.durable)
	// On a signal, stop pulling but finish the messages already received.
	stopped := context.AfterFunc(ctx, msgs.Drain)
	defer stopped()
	for {
		m, err := msgs.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := printImages(stdout, m); err != nil {
			return err
		}
		// Acknowledged once printed, and confirmed, so a restart never
		// prints it again.
		if err := m.DoubleAck(context.Background()); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
	}
}

// printImages writes one line per image of a batch message.
func printImages(w io.Writer, m jetstream.Msg) error {
	b, err := events.Decode(m.Data(), m.Headers().Get(events.HeaderEncoding))
	if err != nil {
		return fmt.Errorf("%s: %w", m.Subject(), err)
	}
	for _, ev := range b.Events {
		switch e := ev.(type) {
		case *events.ImageProcessed:
			fmt.Fprintf(w, "job %d visit %d image %d store %s: perimeter %d (%dx%d)\n", b.JobID, e.Visit, e.Index, e.StoreID, e.Perimeter, e.Width, e.Height)
		case *events.ImageFailed:
			fmt.Fprintf(w, "job %d visit %d image %d store %s: failed (%s)\n", b.JobID, e.Visit, e.Index, e.StoreID, e.Reason)
		}
	}
	return nil
}
