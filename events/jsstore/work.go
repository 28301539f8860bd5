package jsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/retailpulse/retailpulse/events"
)

// Delivery is one job handed to this instance by the work consumer. The
// owner keeps it alive with InProgress and acks it only after the job's
// terminal event is stored. Not safe for concurrent Ack/Nak calls.
type Delivery struct {
	msg     jetstream.Msg
	ID      uint64 // the job id: the submission's stream sequence
	Attempt int    // 1 on first delivery
}

// InProgress resets the redelivery timer.
func (d *Delivery) InProgress() error { return d.msg.InProgress() }

// Ack removes the job from the queue; it waits for the server's
// confirmation so a returned nil means the job will not be redelivered.
func (d *Delivery) Ack(ctx context.Context) error { return d.msg.DoubleAck(ctx) }

// Release hands the job back for redelivery after delay (graceful shutdown,
// transient failure). A zero delay is sent as 1ms: a plain Nak ignores
// backoff and redelivers at once.
func (d *Delivery) Release(delay time.Duration) error {
	return d.msg.NakWithDelay(max(delay, time.Millisecond))
}

// NextJob blocks until a job is available or ctx ends. It fetches exactly
// one message: pre-buffered messages would run out their ack timers while
// waiting for a free job slot and be processed twice. If ctx ends while a
// fetch is outstanding, a job that arrives anyway is released at once.
func (s *Store) NextJob(ctx context.Context) (*Delivery, error) {
	type result struct {
		d   *Delivery
		err error
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ch := make(chan result, 1)
		go func() {
			d, err := s.fetchOne(5 * time.Second)
			ch <- result{d, err}
		}()
		select {
		case r := <-ch:
			if r.d != nil {
				return r.d, nil
			}
			if r.err != nil {
				select { // transient (reconnecting, leader change): back off a little
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(200 * time.Millisecond):
				}
			}
		case <-ctx.Done():
			go func() {
				if r := <-ch; r.d != nil {
					_ = r.d.Release(0)
				}
			}()
			return nil, ctx.Err()
		}
	}
}

// fetchOne waits up to wait for one job; (nil, nil) when none came.
func (s *Store) fetchOne(wait time.Duration) (*Delivery, error) {
	batch, err := s.work.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		return nil, err
	}
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			_ = m.Term()
			continue
		}
		return &Delivery{msg: m, ID: md.Sequence.Stream, Attempt: int(md.NumDelivered)}, nil
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return nil, err
	}
	return nil, nil
}

// Info is the stream's state.
type Info struct {
	LastSeq  uint64
	Msgs     uint64
	Bytes    uint64
	MaxBytes int64
}

// Info returns the stream's current state.
func (s *Store) Info(ctx context.Context) (Info, error) {
	si, err := s.stream.Info(ctx)
	if err != nil {
		return Info{}, fmt.Errorf("stream info: %w", err)
	}
	return Info{LastSeq: si.State.LastSeq, Msgs: si.State.Msgs, Bytes: si.State.Bytes, MaxBytes: si.Config.MaxBytes}, nil
}

// Follow delivers every message after sequence `after`, in stream order, to
// apply, until ctx ends (it then returns ctx.Err()). caughtUp, if not nil,
// is called once, when the messages stored before Follow started have all
// been delivered. A message that cannot be decoded is passed with its error
// so the caller can log it and move on. apply runs on Follow's goroutine.
func (s *Store) Follow(ctx context.Context, after uint64, apply func(seq uint64, subject string, b events.Batch, err error), caughtUp func()) error {
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	target := info.LastSeq
	signalled := false
	signal := func(seq uint64) {
		if !signalled && seq >= target {
			signalled = true
			if caughtUp != nil {
				caughtUp()
			}
		}
	}
	signal(after)
	err = s.consume(ctx, nil, after+1, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		seq := md.Sequence.Stream
		b, derr := events.Decode(m.Data(), m.Headers().Get(events.HeaderEncoding))
		apply(seq, m.Subject(), b, derr)
		signal(seq)
		if md.NumPending == 0 {
			signal(target)
		}
		return false, nil
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("follow: %w", err)
	}
	return err
}

// Message is one stored message as Scan delivers it.
type Message struct {
	Seq     uint64
	Subject string
	MsgID   string // Nats-Msg-Id
	Time    time.Time
	Batch   events.Batch
	Err     error // the body could not be decoded
}

// Scan delivers the messages with sequences in [from, to] in order (to = 0:
// up to the last message stored when Scan starts). fn returning an error
// stops the scan with that error.
func (s *Store) Scan(ctx context.Context, from, to uint64, fn func(Message) error) error {
	return s.scan(ctx, nil, from, to, fn)
}

// scan is Scan restricted to filters (nil = every subject).
func (s *Store) scan(ctx context.Context, filters []string, from, to uint64, fn func(Message) error) error {
	if to == 0 {
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		to = info.LastSeq
	}
	from = max(from, 1)
	if to < from {
		return nil
	}
	err := s.consume(ctx, filters, from, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		seq := md.Sequence.Stream
		if seq > to {
			return true, nil
		}
		b, derr := events.Decode(m.Data(), m.Headers().Get(events.HeaderEncoding))
		msg := Message{Seq: seq, Subject: m.Subject(), MsgID: m.Headers().Get(jetstream.MsgIDHeader), Time: md.Timestamp, Batch: b, Err: derr}
		if err := fn(msg); err != nil {
			return true, err
		}
		return seq >= to || md.NumPending == 0, nil
	})
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	return nil
}

// consume reads the stream from sequence from (filtered by filters, nil =
// all) through an ordered consumer and hands each message to fn until fn
// reports done or an error, or ctx ends (then it returns ctx.Err()).
func (s *Store) consume(ctx context.Context, filters []string, from uint64, fn func(jetstream.Msg, *jetstream.MsgMetadata) (done bool, err error)) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from
	}
	cons, err := s.js.OrderedConsumer(ctx, s.cfg.Stream, cfg)
	if err != nil {
		return err
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(2000))
	if err != nil {
		return err
	}
	defer iter.Stop()
	stop := context.AfterFunc(ctx, iter.Stop)
	defer stop()
	for {
		m, err := iter.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		if done, err := fn(m, md); done || err != nil {
			return err
		}
	}
}

// JobID returns the job id.
func (d *Delivery) JobID() uint64 { return d.ID }

// Attempts returns the delivery count (1 on first delivery).
func (d *Delivery) Attempts() int { return d.Attempt }

// ReclaimJobs makes every delivered but unacknowledged job available again
// at once, instead of after the ack wait. Only for a process that knows it
// is the work consumer's sole user (the embedded single node, whose data
// dir it holds locked): the owners of those deliveries are gone. With other
// live instances it would hand their jobs out twice (fencing would still
// keep the log correct, at the cost of redone work).
func (s *Store) ReclaimJobs(ctx context.Context) error {
	return retry(ctx, func(ctx context.Context) error {
		_, err := s.js.ResetConsumer(ctx, s.cfg.Stream, WorkConsumer)
		return err
	})
}
