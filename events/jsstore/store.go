package jsstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/retailpulse/retailpulse/events"
)

// Config configures the stream and the work consumer. Every instance must
// use the same values: they are applied with CreateOrUpdate.
type Config struct {
	Stream   string        // stream name; default "RETAILPULSE"
	Replicas int           // 1 (single node) or 3 (cluster); default 1
	MaxBytes int64         // stream byte limit (DiscardNew); default 10 GiB
	Dedup    time.Duration // duplicate window (retried appends, Idempotency-Key); default 10m
	// AckWait is how long a job owner may stay silent before the job is
	// redelivered; owners send InProgress every AckWait/3. Default 60s.
	AckWait time.Duration
	// CompressAbove gzips submission bodies larger than this; default 64 KiB.
	CompressAbove int
}

func (c *Config) defaults() {
	if c.Stream == "" {
		c.Stream = "RETAILPULSE"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 10 << 30
	}
	if c.Dedup == 0 {
		c.Dedup = 10 * time.Minute
	}
	if c.AckWait == 0 {
		c.AckWait = 60 * time.Second
	}
	if c.CompressAbove == 0 {
		c.CompressAbove = 64 << 10
	}
}

// WorkConsumer is the durable pull consumer every instance shares.
const WorkConsumer = "job-workers"

// Store is the event log. It is safe for concurrent use.
type Store struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	work   jetstream.Consumer
}

// Open creates or updates the stream and the work consumer, retrying with
// backoff until ctx ends (a fresh cluster has no meta leader for a while).
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	cfg.defaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{cfg: cfg, nc: nc, js: js}
	maxMsg := int32(nc.MaxPayload())
	scfg := jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "retailpulse event log",
		Subjects:    events.StreamSubjects,
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    cfg.MaxBytes,
		MaxMsgSize:  maxMsg,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.Dedup,
		DenyDelete:  true,
		DenyPurge:   true,
	}
	err = retry(ctx, func(ctx context.Context) error {
		st, err := js.CreateOrUpdateStream(ctx, scfg)
		if err != nil {
			return err
		}
		s.stream = st
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open store: stream %s: %w", cfg.Stream, err)
	}
	ccfg := jetstream.ConsumerConfig{
		Durable:       WorkConsumer,
		Description:   "jobs waiting for an owner",
		FilterSubject: events.SubjectSubmitted,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		// Deliveries are capped by the job actor (it completes a job as failed
		// after too many attempts), never by the server, which would drop the
		// job silently.
		MaxDeliver:    -1,
		MaxAckPending: 100_000,
		Replicas:      cfg.Replicas,
	}
	err = retry(ctx, func(ctx context.Context) error {
		c, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, ccfg)
		if err != nil {
			return err
		}
		s.work = c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open store: consumer: %w", err)
	}
	return s, nil
}

// StreamName returns the stream's name.
func (s *Store) StreamName() string { return s.cfg.Stream }

// JetStream exposes the JetStream context (for tests and tools).
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// Submit stores a submission and returns its sequence, the job id. A
// non-empty idempotencyKey makes a retry within the dedup window return the
// first submission's id without storing anything.
func (s *Store) Submit(ctx context.Context, sub *events.JobSubmitted, idempotencyKey string) (uint64, error) {
	body, err := events.Encode(0, sub)
	if err != nil {
		return 0, err
	}
	msg := nats.NewMsg(events.SubjectSubmitted)
	msg.Header.Set(events.HeaderType, string(events.TypeJobSubmitted))
	msg.Header.Set(events.HeaderSchema, strconv.Itoa(events.SchemaVersion))
	msg.Header.Set(events.HeaderCount, "1")
	if len(body) > s.cfg.CompressAbove {
		if body, err = events.Compress(body); err != nil {
			return 0, err
		}
		msg.Header.Set(events.HeaderEncoding, events.EncodingGzip)
	}
	if int64(len(body))+1024 > s.nc.MaxPayload() {
		return 0, fmt.Errorf("%w: %d bytes stored, limit %d", events.ErrJobTooLarge, len(body), s.nc.MaxPayload()-1024)
	}
	msg.Data = body
	id := "submit/" + nuid.Next()
	if idempotencyKey != "" {
		id = "submit/key/" + idempotencyKey
	}
	var ack *jetstream.PubAck
	err = retry(ctx, func(ctx context.Context) error {
		a, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
		if err != nil {
			return classifyPublish(err)
		}
		ack = a
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("submit: %w", err)
	}
	return ack.Sequence, nil
}

// classifyPublish marks errors that retrying cannot fix as permanent.
func classifyPublish(err error) error {
	switch {
	case isStorageFull(err):
		return permanentErr{events.ErrStorageFull}
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrConnectionReconnecting):
		return err
	case apiCode(err) == jetstream.JSErrCodeStreamWrongLastSequenceConstant:
		return err // an earlier write to the subject is still in flight
	}
	return permanentErr{err}
}

func apiCode(err error) jetstream.ErrorCode {
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode
	}
	var je jetstream.JetStreamError
	if errors.As(err, &je) && je.APIError() != nil {
		return je.APIError().ErrorCode
	}
	return 0
}

// isStorageFull reports a write refused for lack of space: the stream's byte
// limit (DiscardNew), the account's or the server's storage.
func isStorageFull(err error) bool {
	var ae *jetstream.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode {
	case 10047, 10023: // storage resources exceeded, insufficient resources
		return true
	case 10077: // store failed: maximum bytes / no space left
		return true
	}
	return ae.Code == 503 && ae.ErrorCode != 0
}

// Submission returns the submission stored at seq, or events.ErrJobNotFound
// when seq holds no submission.
func (s *Store) Submission(ctx context.Context, id uint64) (*events.JobSubmitted, error) {
	m, err := s.stream.GetMsg(ctx, id)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, events.ErrJobNotFound
		}
		return nil, fmt.Errorf("load job %d: %w", id, err)
	}
	if m.Subject != events.SubjectSubmitted {
		return nil, events.ErrJobNotFound
	}
	b, err := events.Decode(m.Data, m.Header.Get(events.HeaderEncoding))
	if err != nil {
		return nil, fmt.Errorf("load job %d: %w", id, err)
	}
	sub, ok := b.Events[0].(*events.JobSubmitted)
	if !ok {
		return nil, fmt.Errorf("load job %d: first event is %s", id, b.Events[0].EventType())
	}
	return sub, nil
}

// LoadJob reads a job's whole history.
func (s *Store) LoadJob(ctx context.Context, id uint64) (*events.History, error) {
	sub, err := s.Submission(ctx, id)
	if err != nil {
		return nil, err
	}
	h := &events.History{ID: id, Submitted: sub}
	last, err := s.lastOfJob(ctx, id)
	if err != nil {
		return nil, err
	}
	if last == nil {
		return h, nil
	}
	h.LastSeq = last.Sequence
	err = s.scan(ctx, []string{events.JobFilter(id)}, 1, h.LastSeq, func(m Message) error {
		if m.Err != nil {
			return fmt.Errorf("seq %d: %w", m.Seq, m.Err)
		}
		h.Records = append(h.Records, events.Record{Seq: m.Seq, Subject: m.Subject, MsgID: m.MsgID, Events: m.Batch.Events})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load job %d: %w", id, err)
	}
	return h, nil
}

// lastOfJob returns the job's last message, or nil if it has none.
func (s *Store) lastOfJob(ctx context.Context, id uint64) (*jetstream.RawStreamMsg, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, events.JobFilter(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("last message of job %d: %w", id, err)
	}
	return m, nil
}

// Append stores evs atomically as one message on rp.job.<id>.<kind>,
// fenced: it succeeds only if the job's last message is still at fence
// (0 = the job has none). msgID must be unique to this append attempt (same
// on retries). It returns the new message's sequence.
//
// Retries of an append whose answer was lost are safe and resolved to the
// first write: a duplicate ack (cluster), or a wrong-last-sequence answer
// (standalone 10071, cluster 10071/10164) after which the job's last message
// carries our msgID. Any other owner's write makes it return
// events.ErrFenced: the caller has lost the job and must stop writing.
// events.ErrStorageFull is returned when the log refuses the write for lack
// of space. ctx cancellation abandons the append (it may or may not have
// been stored).
func (s *Store) Append(ctx context.Context, id uint64, kind string, fence uint64, msgID string, evs ...events.Event) (uint64, error) {
	body, err := events.Encode(id, evs...)
	if err != nil {
		return 0, err
	}
	msg := nats.NewMsg(events.JobSubject(id, kind))
	msg.Data = body
	msg.Header.Set(events.HeaderType, events.HeaderTypeOf(evs))
	msg.Header.Set(events.HeaderSchema, strconv.Itoa(events.SchemaVersion))
	msg.Header.Set(events.HeaderCount, strconv.Itoa(len(evs)))
	filter := events.JobFilter(id)
	var seq uint64
	err = retry(ctx, func(ctx context.Context) error {
		ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID),
			jetstream.WithExpectLastSequenceForSubject(fence, filter))
		if err == nil {
			seq = ack.Sequence // a duplicate ack carries the first write's sequence
			return nil
		}
		switch apiCode(err) {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			last, lerr := s.lastOfJob(ctx, id)
			if lerr != nil {
				return lerr
			}
			if last != nil && last.Header.Get(jetstream.MsgIDHeader) == msgID {
				seq = last.Sequence
				return nil
			}
			if apiCode(err) == jetstream.JSErrCodeStreamWrongLastSequenceConstant && last != nil && last.Sequence == fence {
				return err // our write is still in flight: ask again
			}
			return permanentErr{events.ErrFenced}
		}
		return classifyPublish(err)
	})
	if err != nil {
		return 0, fmt.Errorf("append %s to job %d: %w", kind, id, err)
	}
	return seq, nil
}

// Attach opens an existing stream without changing its configuration (for
// operator tools reading a data dir). It creates no consumer: NextJob must
// not be called on the result.
func Attach(ctx context.Context, nc *nats.Conn, streamName string) (*Store, error) {
	cfg := Config{Stream: streamName}
	cfg.defaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("attach stream %s: %w", cfg.Stream, err)
	}
	return &Store{cfg: cfg, nc: nc, js: js, stream: st}, nil
}
