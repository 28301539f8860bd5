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

// Delivery is one job handed to this instance by the work consumer: a
// submission, or a job an operator requeued. The owner keeps it alive with
// InProgress and acks it only after the job's terminal event is stored.
// Not safe for concurrent use.
type Delivery struct {
	eventLog *EventLog
	msg      jetstream.Msg
	ID       uint64 // the job id: the submission's stream sequence
	Attempt  int    // deliveries of this message; 1 on the first
	requeue  bool   // delivered through a requeue message, not the submission
}

// JobID returns the job id.
func (d *Delivery) JobID() uint64 { return d.ID }

// Attempts returns the delivery count (1 on first delivery).
func (d *Delivery) Attempts() int { return d.Attempt }

// Submission returns the job's submission. A delivered submission carries
// it (no read, so a replica that is behind cannot answer "no such job"); a
// requeue reads it from the stream leader. events.ErrJobNotFound means the
// delivery is proven to name no runnable job (an undecodable submission,
// or a requeue of a sequence that holds no submission).
func (d *Delivery) Submission(ctx context.Context) (*events.JobSubmitted, error) {
	if d.requeue {
		return d.eventLog.Submission(ctx, d.ID)
	}
	sub, err := DecodeSubmission(d.msg.Data(), d.msg.Headers().Get(events.HeaderEncoding))
	if err != nil {
		return nil, fmt.Errorf("%w: delivered submission %d: %v", events.ErrJobNotFound, d.ID, err)
	}
	return sub, nil
}

// InProgress resets the redelivery timer (not confirmed).
func (d *Delivery) InProgress() error { return d.msg.InProgress() }

// Ack removes the job from the queue. It returns nil only once the server
// confirmed it, retrying (e.g. across a consumer leader change) until ctx
// ends.
func (d *Delivery) Ack(ctx context.Context) error { return d.confirm(ctx, "+ACK") }

// Release hands the job back for redelivery after delay (graceful shutdown,
// transient failure), confirmed by the server and retried until ctx ends:
// a hand-back that reached no consumer leader would leave the job waiting
// out the ack wait. A zero delay is sent as 1ms: a plain Nak ignores
// backoff.
func (d *Delivery) Release(ctx context.Context, delay time.Duration) error {
	return d.confirm(ctx, fmt.Sprintf(`-NAK {"delay":%d}`, max(delay, time.Millisecond)))
}

// Term removes a delivery that names no runnable job from the queue for
// good. Only for deliveries proven not to be a job (see Submission).
func (d *Delivery) Term(ctx context.Context) error { return d.confirm(ctx, "+TERM") }

// confirm sends an acknowledgement of kind body as a request: the
// consumer leader answers it, so a nil return means it was applied.
func (d *Delivery) confirm(ctx context.Context, body string) error {
	return retry(ctx, func(ctx context.Context) error {
		if _, err := d.eventLog.nc.RequestWithContext(ctx, d.msg.Reply(), []byte(body)); err != nil {
			return classify(err)
		}
		return nil
	})
}

// NextJob blocks until a job is available or ctx ends. It fetches exactly
// one message: pre-buffered messages would run out their ack timers while
// waiting for a free job slot and be processed twice. If ctx ends while a
// fetch is outstanding, a job that arrives anyway is released at once.
func (s *EventLog) NextJob(ctx context.Context) (*Delivery, error) {
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
					rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_ = r.d.Release(rctx, 0)
				}
			}()
			return nil, ctx.Err()
		}
	}
}

// fetchOne waits up to wait for one job; (nil, nil) when none came. A
// message that is neither a submission nor a requeue is terminated.
func (s *EventLog) fetchOne(wait time.Duration) (*Delivery, error) {
	batch, err := s.work.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		return nil, err
	}
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			return nil, err
		}
		d := &Delivery{eventLog: s, msg: m, ID: md.Sequence.Stream, Attempt: int(md.NumDelivered)}
		if m.Subject() != events.SubjectSubmitted {
			id, kind, ok := events.ParseJobSubject(m.Subject())
			if !ok || kind != events.KindRequeued {
				_ = m.Term()
				continue
			}
			d.ID, d.requeue = id, true
		}
		return d, nil
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return nil, err
	}
	return nil, nil
}

// ReclaimJobs makes every delivered but unacknowledged job available again
// at once, instead of after the ack wait, and returns how many there were.
// Jobs already acked stay acked. Only for a process that knows it is the
// work consumer's sole user (the embedded single node, whose data dir it
// holds locked): the owners of those deliveries are gone. Call it before
// taking jobs.
//
// It shortens the consumer's ack wait for a moment, so the server itself
// queues exactly its pending deliveries for redelivery (it re-checks them
// 100 ms after an ack-wait change), then restores it.
func (s *EventLog) ReclaimJobs(ctx context.Context) (int, error) {
	var pending int
	err := retry(ctx, func(ctx context.Context) error {
		ci, err := s.work.Info(ctx)
		if err != nil {
			return err
		}
		pending = ci.NumAckPending
		return nil
	})
	if err != nil || pending == 0 {
		return 0, err
	}
	short := s.ccfg
	short.AckWait = time.Millisecond
	if err := s.updateWork(ctx, short); err != nil {
		return 0, err
	}
	select {
	case <-time.After(500 * time.Millisecond):
	case <-ctx.Done():
	}
	// Restore even when ctx has ended: a consumer left with a 1ms ack wait
	// would redeliver every job continuously.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.updateWork(rctx, s.ccfg); err != nil {
		return 0, fmt.Errorf("restore ack wait: %w", err)
	}
	return pending, ctx.Err()
}

func (s *EventLog) updateWork(ctx context.Context, cfg jetstream.ConsumerConfig) error {
	return retry(ctx, func(ctx context.Context) error {
		c, err := s.js.UpdateConsumer(ctx, s.cfg.Stream, cfg)
		if err != nil {
			return err
		}
		s.work = c
		return nil
	})
}

// WorkState is the work consumer's progress.
type WorkState struct {
	// AckFloor: every delivery at or below this stream sequence is acked.
	AckFloor uint64
	// Delivered: the highest stream sequence delivered so far.
	Delivered uint64
	// AckPending: deliveries not acked yet, all above AckFloor.
	AckPending int
	// Waiting: messages not delivered yet.
	Waiting uint64
}

// WorkState reads the work consumer's state from its leader.
func (s *EventLog) WorkState(ctx context.Context) (WorkState, error) {
	var ws WorkState
	err := retry(ctx, func(ctx context.Context) error {
		ci, err := s.js.Consumer(ctx, s.cfg.Stream, WorkConsumer)
		if err != nil {
			return classify(err)
		}
		info := ci.CachedInfo()
		ws = WorkState{AckFloor: info.AckFloor.Stream, Delivered: info.Delivered.Stream, AckPending: info.NumAckPending, Waiting: info.NumPending}
		return nil
	})
	return ws, err
}

// Requeue refusals.
var (
	// ErrJobTerminal: the job has completed; there is nothing to requeue.
	ErrJobTerminal = errors.New("job already completed")
	// ErrRequeued: the job's last event is a requeue; it waits for an owner.
	ErrRequeued = errors.New("job already requeued and not taken since")
)

// Requeue puts an unfinished job back on the work queue by appending a
// JobRequeued event on rp.job.<id>.requeued, which the work consumer
// delivers like a submission. The append is fenced on the job's last
// message, like every write to a job: if the job moves meanwhile it returns
// events.ErrFenced and stores nothing. An owner still running the job loses
// its fence, so at most one owner writes after a requeue. It returns
// events.ErrJobNotFound, ErrJobTerminal or ErrRequeued when there is
// nothing to requeue; retried with the same job state, it stores the event
// once.
func (s *EventLog) Requeue(ctx context.Context, id uint64, ev *events.JobRequeued) (uint64, error) {
	if _, err := s.Submission(ctx, id); err != nil {
		return 0, err
	}
	last, err := s.lastOfJob(ctx, id)
	if err != nil {
		return 0, err
	}
	fence := uint64(0)
	if last != nil {
		switch _, kind, _ := events.ParseJobSubject(last.Subject); kind {
		case events.KindCompleted:
			return 0, fmt.Errorf("requeue job %d: %w", id, ErrJobTerminal)
		case events.KindRequeued:
			return 0, fmt.Errorf("requeue job %d: %w", id, ErrRequeued)
		}
		fence = last.Sequence
	}
	msgID := fmt.Sprintf("requeue/%d/%d", id, fence)
	return s.Append(ctx, id, events.KindRequeued, fence, msgID, ev)
}

// Probe reports whether the log can take writes now: the stream has a
// leader that answers (so a quorum of its replicas is up). It returns an
// error wrapping events.ErrUnavailable otherwise.
func (s *EventLog) Probe(ctx context.Context) error {
	si, err := s.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", events.ErrUnavailable, err)
	}
	if si.Cluster != nil && si.Cluster.Leader == "" {
		return fmt.Errorf("%w: stream has no leader", events.ErrUnavailable)
	}
	return nil
}
