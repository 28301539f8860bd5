package jsstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/retailpulse/retailpulse/events"
)

// Config configures the stream and the work consumer. Every instance must
// use the same values (see Shared).
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
	// Shared: other instances use the same stream (an external NATS). Open
	// then refuses settings that differ from the stream's and consumer's.
	Shared bool
	// UpdateExisting makes a Shared Open apply cfg to an existing stream and
	// consumer instead of refusing a difference.
	UpdateExisting bool
	// ReadStallTimeout: a Scan whose consumer delivers nothing for this
	// long while messages it must read remain is resumed after the last
	// message it delivered, on a new consumer (one whose server failed, or
	// that the server holds paused, which the client library does not
	// always notice). This instance's own setting, not compared with
	// others'. Default 5s; negative: never.
	ReadStallTimeout time.Duration
}

func (c *Config) defaults() {
	if c.Stream == "" {
		c.Stream = DefaultStream
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
	if c.ReadStallTimeout == 0 {
		c.ReadStallTimeout = 5 * time.Second
	}
}

// WorkConsumer is the durable pull consumer every instance shares.
const WorkConsumer = "job-workers"

// EventLog is the event log on JetStream: the stream, the work consumer
// and the readers. It is safe for concurrent use.
type EventLog struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	work   jetstream.Consumer
	ccfg   jetstream.ConsumerConfig // the work consumer's configuration

	scanResumes atomic.Int64 // Scans resumed after a stall
}

// streamConfig is the stream every instance must agree on.
func (c *Config) streamConfig(maxMsg int32) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.Stream,
		Description: "retailpulse event log",
		Subjects:    events.StreamSubjects,
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    c.MaxBytes,
		MaxMsgSize:  maxMsg,
		Replicas:    c.Replicas,
		Duplicates:  c.Dedup,
		DenyDelete:  true,
		DenyPurge:   true,
		// Reads of a job must see every write acknowledged before them, so
		// they are answered by the stream leader, never by a replica.
		AllowDirect: false,
	}
}

// consumerConfig is the work consumer every instance must agree on.
func (c *Config) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:     WorkConsumer,
		Description: "jobs waiting for an owner",
		// Submissions, and jobs an operator put back (retailpulse requeue).
		FilterSubjects: []string{events.SubjectSubmitted, events.SubjectRequeued},
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        c.AckWait,
		// Deliveries are capped by the job actor (it completes a job as failed
		// after too many attempts), never by the server, which would drop the
		// job silently.
		MaxDeliver:    -1,
		MaxAckPending: 100_000,
		Replicas:      c.Replicas,
	}
}

// Open creates the stream and the work consumer, or opens them, retrying
// every failure with backoff until ctx ends (a fresh cluster has no meta
// leader or known peers for a while; a cluster without quorum answers
// nothing).
//
// With cfg.Shared (several instances on one NATS), existing settings are
// compared with cfg and a difference returns a *DriftError without changing
// anything, unless cfg.UpdateExisting. Without it (the embedded single
// node, whose data dir only this process holds) they are updated to cfg.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*EventLog, error) {
	cfg.defaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &EventLog{cfg: cfg, nc: nc, js: js, ccfg: cfg.consumerConfig()}
	scfg := cfg.streamConfig(int32(nc.MaxPayload()))
	var drift []Diff
	err = retry(ctx, func(ctx context.Context) error {
		drift = nil
		if cfg.Shared && !cfg.UpdateExisting {
			st, err := js.Stream(ctx, cfg.Stream)
			switch {
			case err == nil:
				info := st.CachedInfo()
				drift = streamDrift(info.Config, scfg)
				s.stream = st
				return nil
			case !errors.Is(err, jetstream.ErrStreamNotFound):
				return err
			}
			st, err = js.CreateStream(ctx, scfg)
			if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				return err
			}
			if err != nil {
				return errors.New("stream created concurrently; comparing again")
			}
			s.stream = st
			return nil
		}
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
	err = retry(ctx, func(ctx context.Context) error {
		if cfg.Shared && !cfg.UpdateExisting {
			c, err := js.Consumer(ctx, cfg.Stream, WorkConsumer)
			switch {
			case err == nil:
				drift = append(drift, consumerDrift(c.CachedInfo().Config, s.ccfg)...)
				s.work = c
				return nil
			case !errors.Is(err, jetstream.ErrConsumerNotFound):
				return err
			}
			c, err = js.CreateConsumer(ctx, cfg.Stream, s.ccfg)
			if err != nil {
				return err
			}
			s.work = c
			return nil
		}
		c, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, s.ccfg)
		if err != nil {
			return err
		}
		s.work = c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open store: consumer: %w", err)
	}
	if len(drift) > 0 {
		return nil, &DriftError{Diffs: drift}
	}
	return s, nil
}

// StreamName returns the stream's name.
func (s *EventLog) StreamName() string { return s.cfg.Stream }

// JetStream exposes the JetStream context (for tests and tools).
func (s *EventLog) JetStream() jetstream.JetStream { return s.js }

// Submit stores a submission and returns its sequence, the job id. A
// non-empty idempotencyKey makes a retry within the dedup window return the
// first submission's id without storing anything (replayed = true), if it
// asks for the same work (events.JobSubmitted.Digest); the same key with
// other content returns events.ErrIdempotencyConflict. Concurrent
// submissions with one key are resolved by the log: one is stored, the
// others wait for it and replay it. Transient failures are retried with the
// same message identity until ctx ends, so a stored submission whose
// acknowledgement was lost is never stored twice.
func (s *EventLog) Submit(ctx context.Context, sub *events.JobSubmitted, idempotencyKey string) (id uint64, replayed bool, err error) {
	body, err := events.Encode(0, sub)
	if err != nil {
		return 0, false, err
	}
	msg := nats.NewMsg(events.SubjectSubmitted)
	msg.Header.Set(events.HeaderType, string(events.TypeJobSubmitted))
	msg.Header.Set(events.HeaderSchema, strconv.Itoa(events.SchemaVersion))
	msg.Header.Set(events.HeaderCount, "1")
	if len(body) > s.cfg.CompressAbove {
		if body, err = events.Compress(body); err != nil {
			return 0, false, err
		}
		msg.Header.Set(events.HeaderEncoding, events.EncodingGzip)
	}
	if int64(len(body))+1024 > s.nc.MaxPayload() {
		return 0, false, fmt.Errorf("%w: %d bytes stored, limit %d", events.ErrJobTooLarge, len(body), s.nc.MaxPayload()-1024)
	}
	msg.Data = body
	msgID := "submit/" + nuid.Next()
	if idempotencyKey != "" {
		msgID = "submit/key/" + idempotencyKey
	}
	var ack *jetstream.PubAck
	err = retry(ctx, func(ctx context.Context) error {
		a, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID))
		if err != nil {
			return classify(err)
		}
		ack = a
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("submit: %w", err)
	}
	if !ack.Duplicate || idempotencyKey == "" {
		// A duplicate without a key is our own retry whose first answer was lost.
		return ack.Sequence, false, nil
	}
	first, err := s.Submission(ctx, ack.Sequence)
	if err != nil {
		return 0, false, fmt.Errorf("submit: read the job the key names: %w", err)
	}
	if first.Digest() != sub.Digest() {
		return 0, false, fmt.Errorf("%w: the key names job %d", events.ErrIdempotencyConflict, ack.Sequence)
	}
	return ack.Sequence, true, nil
}

// classify marks errors that retrying cannot fix as permanent, by error
// kind and JetStream error code; what it returns unwrapped is transient
// (retry tries again). A full log is permanent events.ErrStorageFull.
func classify(err error) error {
	switch {
	case isStorageFull(err):
		return permanentErr{events.ErrStorageFull}
	case isTransient(err):
		return err
	}
	return permanentErr{err}
}

// isTransient reports an error after which the same request may succeed:
// no answer in time (the attempt's own deadline included; the write may
// have been stored, so a retry must carry the same identity), no responders
// or a connection being re-established (no leader, node down), and the
// JetStream codes for "temporarily unavailable".
func isTransient(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, jetstream.ErrNoHeartbeat):
		return true
	}
	switch apiCode(err) {
	case 10008, // JetStream system temporarily unavailable (no leader, no quorum)
		10004, // incomplete results
		10163, // expected last sequence per subject temporarily unavailable
		jetstream.JSErrCodeStreamWrongLastSequenceConstant: // an earlier write to the subject is in flight
		return true
	}
	return false
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
// limit (DiscardNew answers 10077 "store failed: maximum bytes exceeded"),
// the account's or the server's storage.
func isStorageFull(err error) bool {
	switch apiCode(err) {
	case 10047, // insufficient storage resources available
		10023, // insufficient resources
		10077: // store failed (maximum bytes exceeded)
		return true
	}
	return false
}

// Submission returns the submission stored at seq, or events.ErrJobNotFound
// when seq holds no submission. Like every read of a job, it is answered by
// the stream's leader (never a replica that may be behind) and retried
// while the log is unavailable, until ctx ends (then events.ErrUnavailable
// when ctx's deadline passed).
func (s *EventLog) Submission(ctx context.Context, id uint64) (*events.JobSubmitted, error) {
	m, err := s.getMsg(ctx, id, "")
	if err != nil {
		return nil, fmt.Errorf("load job %d: %w", id, err)
	}
	if m == nil || m.Subject != events.SubjectSubmitted {
		return nil, events.ErrJobNotFound
	}
	sub, err := DecodeSubmission(m.Data, m.Header.Get(events.HeaderEncoding))
	if err != nil {
		return nil, fmt.Errorf("load job %d: %w", id, err)
	}
	return sub, nil
}

// DecodeSubmission decodes the body of a message on the submission subject.
func DecodeSubmission(data []byte, encoding string) (*events.JobSubmitted, error) {
	b, err := events.Decode(data, encoding)
	if err != nil {
		return nil, err
	}
	if len(b.Events) != 1 {
		return nil, fmt.Errorf("submission holds %d events", len(b.Events))
	}
	sub, ok := b.Events[0].(*events.JobSubmitted)
	if !ok {
		return nil, fmt.Errorf("submission holds a %s event", b.Events[0].EventType())
	}
	return sub, nil
}

// LoadJob reads a job's whole history.
func (s *EventLog) LoadJob(ctx context.Context, id uint64) (*events.History, error) {
	sub, err := s.Submission(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.History(ctx, id, sub)
}

// History reads every message on the job's subjects, given its submission.
// It reads message by message from the stream leader (no consumer is
// created, so it neither needs the meta leader nor leaves anything behind),
// up to the job's last message as the leader knows it.
func (s *EventLog) History(ctx context.Context, id uint64, sub *events.JobSubmitted) (*events.History, error) {
	h := &events.History{ID: id, Submitted: sub}
	filter := events.JobFilter(id)
	last, err := s.getMsg(ctx, 0, filter)
	if err != nil {
		return nil, fmt.Errorf("load job %d: %w", id, err)
	}
	if last == nil {
		return h, nil
	}
	h.LastSeq = last.Sequence
	for seq := id + 1; ; {
		m := last
		if seq < last.Sequence {
			if m, err = s.getMsg(ctx, seq, filter); err != nil {
				return nil, fmt.Errorf("load job %d: %w", id, err)
			}
			if m == nil || m.Sequence > last.Sequence {
				return nil, fmt.Errorf("load job %d: no message from seq %d to the last, %d", id, seq, last.Sequence)
			}
		}
		b, err := events.Decode(m.Data, m.Header.Get(events.HeaderEncoding))
		if err != nil {
			return nil, fmt.Errorf("load job %d: seq %d: %w", id, m.Sequence, err)
		}
		h.Records = append(h.Records, events.Record{Seq: m.Sequence, Subject: m.Subject, MsgID: m.Header.Get(jetstream.MsgIDHeader), Events: b.Events})
		if m.Sequence >= last.Sequence {
			return h, nil
		}
		seq = m.Sequence + 1
	}
}

// getMsg reads one message from the stream leader: with lastFor set, the
// last message on that filter; with next set too, the first message at or
// after seq on it; otherwise the message at seq. nil when there is none.
// Transient failures are retried until ctx ends.
func (s *EventLog) getMsg(ctx context.Context, seq uint64, filter string) (*jetstream.RawStreamMsg, error) {
	var m *jetstream.RawStreamMsg
	err := retry(ctx, func(ctx context.Context) error {
		var err error
		switch {
		case seq == 0:
			m, err = s.stream.GetLastMsgForSubject(ctx, filter)
		case filter != "":
			m, err = s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		default:
			m, err = s.stream.GetMsg(ctx, seq)
		}
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			m, err = nil, nil
		}
		if err != nil {
			return classify(err)
		}
		return nil
	})
	return m, err
}

// lastOfJob returns the job's last message, or nil if it has none.
func (s *EventLog) lastOfJob(ctx context.Context, id uint64) (*jetstream.RawStreamMsg, error) {
	m, err := s.getMsg(ctx, 0, events.JobFilter(id))
	if err != nil {
		return nil, fmt.Errorf("last message of job %d: %w", id, err)
	}
	return m, nil
}

// FenceHolds reports whether the job's last message is still at fence
// (0 = the job has none): false means another owner has written since.
func (s *EventLog) FenceHolds(ctx context.Context, id, fence uint64) (bool, error) {
	last, err := s.lastOfJob(ctx, id)
	if err != nil {
		return false, err
	}
	if last == nil {
		return fence == 0, nil
	}
	return last.Sequence == fence, nil
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
func (s *EventLog) Append(ctx context.Context, id uint64, kind string, fence uint64, msgID string, evs ...events.Event) (uint64, error) {
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
		return classify(err)
	})
	if err != nil {
		return 0, fmt.Errorf("append %s to job %d: %w", kind, id, err)
	}
	return seq, nil
}

// Attach opens an existing stream without changing its configuration (for
// operator tools reading a data dir). It creates no consumer: NextJob must
// not be called on the result.
func Attach(ctx context.Context, nc *nats.Conn, streamName string) (*EventLog, error) {
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
	return &EventLog{cfg: cfg, nc: nc, js: js, stream: st}, nil
}
