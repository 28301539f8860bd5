package jsstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// authServer starts an embedded server listening on loopback with the
// service and subscriber identities, opens the event log through the
// service's in-process connection, and returns both.
func authServer(t *testing.T) (*server.Server, *jsstore.EventLog, jsstore.Auth) {
	t.Helper()
	auth := jsstore.Auth{ServicePassword: jsstore.NewPassword(), SubscriberPassword: "subscriber-secret"}
	s, err := jsstore.StartServer(jsstore.ServerConfig{Name: "auth", StoreDir: t.TempDir(), SyncAlways: true,
		Listen: true, Port: -1, Auth: &auth})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := jsstore.ConnectInProcess(s, "service", jsstore.ServiceOptions(auth.ServicePassword)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return s, jstest.Open(t, nc, jsstore.Config{}), auth
}

// errorLog collects a connection's asynchronous errors.
type errorLog struct {
	mu   sync.Mutex
	errs []string
}

func (l *errorLog) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err.Error())
}

// violation reports whether the server refused a publish to subject.
func (l *errorLog) violation(subject string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.errs, func(e string) bool {
		return strings.Contains(e, nats.ErrPermissionViolation.Error()) && strings.Contains(e, fmt.Sprintf("Publish to %q", subject))
	})
}

func connectSubscriber(t *testing.T, s *server.Server, password string) (*nats.Conn, *errorLog) {
	t.Helper()
	errs := &errorLog{}
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(jsstore.SubscriberUser, password), nats.ErrorHandler(errs.handler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

func TestAuth_OnlyKnownIdentitiesConnect(t *testing.T) {
	s, _, auth := authServer(t)
	tests := []struct {
		name string
		opts []nats.Option
		ok   bool
	}{
		{"no credentials", nil, false},
		{"subscriber, wrong password", []nats.Option{nats.UserInfo(jsstore.SubscriberUser, "nope")}, false},
		{"service, wrong password", []nats.Option{nats.UserInfo(jsstore.ServiceUser, "nope")}, false},
		{"subscriber", []nats.Option{nats.UserInfo(jsstore.SubscriberUser, auth.SubscriberPassword)}, true},
		{"service", []nats.Option{nats.UserInfo(jsstore.ServiceUser, auth.ServicePassword)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := nats.Connect(s.ClientURL(), append(tt.opts, nats.NoReconnect())...)
			if err == nil {
				nc.Close()
			}
			if (err == nil) != tt.ok {
				t.Fatalf("connect: %v, want success %v", err, tt.ok)
			}
		})
	}
}

func TestAuth_SubscriberReceivesEveryEventOfAJobInOrder(t *testing.T) {
	s, eventLog, auth := authServer(t)
	nc, errs := connectSubscriber(t, s, auth.SubscriberPassword)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A live core subscription, and a durable consumer of its own.
	live, err := nc.SubscribeSync("rp.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, jsstore.DefaultStream)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "watcher", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("create own consumer: %v", err)
	}

	// The service writes a job.
	id, _, err := eventLog.Submit(ctx, sampleJob("a", "b", "c"), "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{fmt.Sprintf("%d %s", id, events.SubjectSubmitted)}
	fence := uint64(0)
	for i, evs := range [][]events.Event{{&events.JobStarted{Attempt: 1}}, {processed(0, 0), processed(0, 1)}, {processed(0, 2)},
		{&events.JobCompleted{Status: events.StatusCompleted, Processed: 3}}} {
		kind := []string{events.KindStarted, events.KindImages, events.KindImages, events.KindCompleted}[i]
		if fence, err = eventLog.Append(ctx, id, kind, fence, fmt.Sprintf("o/%d", fence), evs...); err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprintf("%d %s", fence, events.JobSubject(id, kind)))
	}

	var gotLive, gotDurable []string
	for range want {
		m, err := live.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("live subscription after %v: %v", gotLive, err)
		}
		if _, err := events.Decode(m.Data, m.Header.Get(events.HeaderEncoding)); err != nil {
			t.Fatal(err)
		}
		gotLive = append(gotLive, m.Subject)
	}
	batch, err := cons.Fetch(len(want), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		md, _ := m.Metadata()
		gotDurable = append(gotDurable, fmt.Sprintf("%d %s", md.Sequence.Stream, m.Subject()))
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("ack on its own consumer: %v", err)
		}
	}
	var wantSubjects []string
	for _, w := range want {
		wantSubjects = append(wantSubjects, strings.Fields(w)[1])
	}
	if !slices.Equal(gotLive, wantSubjects) {
		t.Fatalf("live subscription: %v, want %v", gotLive, wantSubjects)
	}
	if !slices.Equal(gotDurable, want) {
		t.Fatalf("durable consumer: %v, want %v", gotDurable, want)
	}
	if m, err := stream.GetMsg(ctx, id); err != nil || m.Subject != events.SubjectSubmitted {
		t.Fatalf("read message %d: %v", id, err)
	}
	if err := stream.DeleteConsumer(ctx, "watcher"); err != nil {
		t.Fatalf("delete own consumer: %v", err)
	}
	errs.mu.Lock()
	defer errs.mu.Unlock()
	if len(errs.errs) > 0 {
		t.Fatalf("asynchronous errors: %v", errs.errs)
	}
}

func TestAuth_SubscriberIsRefusedWrites(t *testing.T) {
	s, eventLog, auth := authServer(t)
	ctx := context.Background()
	id, _, err := eventLog.Submit(ctx, sampleJob("a"), "")
	if err != nil {
		t.Fatal(err)
	}
	nc, errs := connectSubscriber(t, s, auth.SubscriberPassword)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, jsstore.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	const st, work = jsstore.DefaultStream, jsstore.WorkConsumer
	tests := []struct {
		name    string
		subject string // the publish the server must refuse
		do      func(ctx context.Context) error
	}{
		{"publish a submission", events.SubjectSubmitted, func(ctx context.Context) error {
			_, err := js.Publish(ctx, events.SubjectSubmitted, []byte(`{"v":1}`))
			return err
		}},
		{"publish a job event", events.JobSubject(id, events.KindCompleted), func(ctx context.Context) error {
			return nc.Publish(events.JobSubject(id, events.KindCompleted), []byte(`{"v":1}`))
		}},
		{"delete the stream", "$JS.API.STREAM.DELETE." + st, func(ctx context.Context) error {
			return js.DeleteStream(ctx, st)
		}},
		{"delete a message", "$JS.API.STREAM.MSG.DELETE." + st, func(ctx context.Context) error {
			return stream.DeleteMsg(ctx, id)
		}},
		{"purge the stream", "$JS.API.STREAM.PURGE." + st, func(ctx context.Context) error {
			return stream.Purge(ctx)
		}},
		{"change the stream", "$JS.API.STREAM.UPDATE." + st, func(ctx context.Context) error {
			_, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: st, Subjects: []string{"rp.>"}})
			return err
		}},
		{"create another stream", "$JS.API.STREAM.CREATE.MINE", func(ctx context.Context) error {
			_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MINE", Subjects: []string{"mine.>"}})
			return err
		}},
		{"create a consumer named as the work consumer", "$JS.API.CONSUMER.CREATE." + st + "." + work, func(ctx context.Context) error {
			_, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: work})
			return err
		}},
		{"create it with a filter", "$JS.API.CONSUMER.CREATE." + st + "." + work + ".rp.submitted", func(ctx context.Context) error {
			_, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: work, FilterSubject: events.SubjectSubmitted})
			return err
		}},
		{"create it through the legacy durable form", "$JS.API.CONSUMER.DURABLE.CREATE." + st + "." + work, func(ctx context.Context) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.DURABLE.CREATE."+st+"."+work, []byte(`{"stream_name":"`+st+`","config":{"durable_name":"`+work+`"}}`))
			return err
		}},
		{"create a consumer named in the body", "$JS.API.CONSUMER.CREATE." + st, func(ctx context.Context) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.CREATE."+st, []byte(`{"stream_name":"`+st+`","config":{"name":"`+work+`"}}`))
			return err
		}},
		{"pull from the work consumer", "$JS.API.CONSUMER.MSG.NEXT." + st + "." + work, func(ctx context.Context) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT."+st+"."+work, []byte(`{"batch":1}`))
			return err
		}},
		{"read the work consumer", "$JS.API.CONSUMER.INFO." + st + "." + work, func(ctx context.Context) error {
			_, err := stream.Consumer(ctx, work)
			return err
		}},
		{"delete the work consumer", "$JS.API.CONSUMER.DELETE." + st + "." + work, func(ctx context.Context) error {
			return stream.DeleteConsumer(ctx, work)
		}},
		// Listing would show the work consumer and every other
		// subscriber's consumers (docs/events.md: name the consumer).
		{"list the consumers' names", "$JS.API.CONSUMER.NAMES." + st, func(ctx context.Context) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.NAMES."+st, []byte(`{}`))
			return err
		}},
		{"list the consumers", "$JS.API.CONSUMER.LIST." + st, func(ctx context.Context) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.LIST."+st, []byte(`{}`))
			return err
		}},
		{"acknowledge a work delivery", "$JS.ACK." + st + "." + work + ".1.1.1.0.0", func(ctx context.Context) error {
			return nc.Publish("$JS.ACK."+st+"."+work+".1.1.1.0.0", []byte("+ACK"))
		}},
	}
	t.Run("refused", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				actx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
				_ = tt.do(actx) // a refused request gets no answer, a refused publish no error
				_ = nc.Flush()
				jstest.CheckFor(t, 5*time.Second, func() error {
					if !errs.violation(tt.subject) {
						return fmt.Errorf("no permission violation for %s", tt.subject)
					}
					return nil
				})
			})
		}
	})
	t.Run("nothing changed", func(t *testing.T) {
		if m, err := eventLog.Submission(ctx, id); err != nil || m == nil {
			t.Fatalf("the submission: %v", err)
		}
		info, err := eventLog.Info(ctx)
		if err != nil || info.LastSeq != id {
			t.Fatalf("stream last sequence %d (%v), want %d: nothing written", info.LastSeq, err, id)
		}
		c, err := eventLog.JetStream().Consumer(ctx, st, work)
		if err != nil {
			t.Fatal(err)
		}
		if f := c.CachedInfo().Config.FilterSubjects; len(f) != 2 {
			t.Fatalf("work consumer changed: filters %v", f)
		}
		if _, err := eventLog.JetStream().Stream(ctx, "MINE"); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("another stream: %v", err)
		}
	})
}

func TestUserTraffic_CountsConnectionsAndMessagesSentAcrossCloses(t *testing.T) {
	s, eventLog, auth := authServer(t)
	traffic := jsstore.NewUserTraffic(s, jsstore.SubscriberUser)
	if open, sent := traffic.Read(); open != 0 || sent != 0 {
		t.Fatalf("before any subscriber: %d open, %d sent", open, sent)
	}
	nc, _ := connectSubscriber(t, s, auth.SubscriberPassword)
	sub, err := nc.SubscribeSync("rp.>")
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	for i := range 3 {
		if _, _, err := eventLog.Submit(context.Background(), sampleJob(fmt.Sprint(i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	open, sent := traffic.Read()
	if open != 1 || sent < 3 {
		t.Fatalf("one subscriber that received 3 messages: %d open, %d sent", open, sent)
	}
	nc.Close()
	jstest.CheckFor(t, 5*time.Second, func() error {
		o, sAfter := traffic.Read()
		if o != 0 || sAfter < sent {
			return fmt.Errorf("after the subscriber left: %d open, %d sent (was %d)", o, sAfter, sent)
		}
		return nil
	})
	// The service's own connections are not the subscriber's.
	if o, _ := jsstore.NewUserTraffic(s, jsstore.ServiceUser).Read(); o != 1 {
		t.Fatalf("service connections: %d, want 1", o)
	}
}
