package jsstore

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/retailpulse/retailpulse/events"
)

// Readers for event-stream subscribers (the SSE endpoints): the log's end,
// a job's messages in a range of sequences, every message in a range, and
// a live tail. Each hands a message to fn as an events.Record with the
// error of decoding its body (nil when it decoded), on the caller's
// goroutine, in stream order; fn returning an error stops the read with
// that error. Cancelling ctx stops a read with ctx.Err().

// Pulls of the subscriber readers, as consume's: short, with frequent
// heartbeats, so a dead server's consumer is recreated within seconds.
const (
	pullExpiry    = 5 * time.Second
	pullHeartbeat = time.Second
)

// LastSeq returns the stream's last sequence as its leader knows it.
func (s *EventLog) LastSeq(ctx context.Context) (uint64, error) {
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.LastSeq, nil
}

// JobCompleted returns the sequence of the job's job_completed message, or
// 0 while it has none (also for an id that names no job). Read from the
// stream leader.
func (s *EventLog) JobCompleted(ctx context.Context, id uint64) (uint64, error) {
	m, err := s.getMsg(ctx, 0, events.JobSubject(id, events.KindCompleted))
	if err != nil {
		return 0, fmt.Errorf("job %d: completion: %w", id, err)
	}
	if m == nil {
		return 0, nil
	}
	return m.Sequence, nil
}

// ReadJob delivers the job's messages with sequences in [from, to]: its
// submission (at sequence id) and the messages on rp.job.<id>.>. It
// returns events.ErrJobNotFound when from <= id and sequence id holds no
// submission. The submission comes from the stream leader; the rest from
// an ordered consumer filtered on the job's subjects, read up to the job's
// last message as the leader knows it when ReadJob starts (or to, if that
// comes first), so the read ends even when nothing more is appended.
func (s *EventLog) ReadJob(ctx context.Context, id, from, to uint64, fn func(events.Record, error) error) error {
	from = max(from, 1)
	if from <= id {
		if to < id {
			return nil
		}
		m, err := s.getMsg(ctx, id, "")
		if err != nil {
			return fmt.Errorf("read job %d: %w", id, err)
		}
		if m == nil || m.Subject != events.SubjectSubmitted {
			return events.ErrJobNotFound
		}
		b, derr := events.Decode(m.Data, m.Header.Get(events.HeaderEncoding))
		rec := events.Record{Seq: m.Sequence, Subject: m.Subject, MsgID: m.Header.Get(jetstream.MsgIDHeader), Events: b.Events}
		if err := fn(rec, derr); err != nil {
			return err
		}
		from = id + 1
	}
	if from > to {
		return nil
	}
	filter := events.JobFilter(id)
	last, err := s.getMsg(ctx, 0, filter)
	if err != nil {
		return fmt.Errorf("read job %d: %w", id, err)
	}
	if last == nil || last.Sequence < from {
		return nil
	}
	end := min(last.Sequence, to)
	err = s.consumeFiltered(ctx, from, []string{filter}, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		seq := md.Sequence.Stream
		if seq > end {
			return true, nil
		}
		if err := fn(recordOf(m, md)); err != nil {
			return true, err
		}
		return seq >= end, nil
	})
	if err != nil {
		return fmt.Errorf("read job %d: %w", id, err)
	}
	return nil
}

// ReadAll delivers every message with a sequence in [from, to] (to = 0:
// up to the last message stored when ReadAll starts, as the leader knows
// it; a larger to is cut to that).
func (s *EventLog) ReadAll(ctx context.Context, from, to uint64, fn func(events.Record, error) error) error {
	return s.Scan(ctx, from, to, func(m Message) error {
		return fn(events.Record{Seq: m.Seq, Subject: m.Subject, MsgID: m.MsgID, Events: m.Batch.Events}, m.Err)
	})
}

// Tail delivers every message stored after sequence after, live, until
// ctx ends (it then returns ctx.Err()) or fn returns an error. It reads
// through an ordered pull consumer with 1 s heartbeats, so a lost server
// is noticed within seconds and the consumer recreated where it stopped.
func (s *EventLog) Tail(ctx context.Context, after uint64, fn func(events.Record, error) error) error {
	err := s.consume(ctx, after+1, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		if err := fn(recordOf(m, md)); err != nil {
			return true, err
		}
		return false, nil
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("tail: %w", err)
	}
	return err
}

// recordOf decodes a consumed message.
func recordOf(m jetstream.Msg, md *jetstream.MsgMetadata) (events.Record, error) {
	b, err := events.Decode(m.Data(), m.Headers().Get(events.HeaderEncoding))
	return events.Record{Seq: md.Sequence.Stream, Subject: m.Subject(), MsgID: m.Headers().Get(jetstream.MsgIDHeader), Events: b.Events}, err
}

// consumeFiltered is consume (read.go) restricted to filter subjects: an
// ordered consumer from sequence from, short pulls with 1 s heartbeats.
func (s *EventLog) consumeFiltered(ctx context.Context, from uint64, filters []string, fn func(jetstream.Msg, *jetstream.MsgMetadata) (done bool, err error)) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from
	}
	cons, err := s.js.OrderedConsumer(ctx, s.cfg.Stream, cfg)
	if err != nil {
		return err
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(500), jetstream.PullExpiry(pullExpiry), jetstream.PullHeartbeat(pullHeartbeat))
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
