package jsstore

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/retailpulse/retailpulse/events"
)

// Readers for event-stream subscribers (the SSE endpoints): the log's end,
// a job's messages in a range of sequences, every message in a range, and
// a live tail. Each hands a message to fn as an events.Record with the
// error of decoding its body (nil when it decoded), on the caller's
// goroutine, in stream order; fn returning an error stops the read with
// that error. Cancelling ctx stops a read with ctx.Err().

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
// submission. Every message is read from the stream leader, one request
// each (the first of the job's messages at or after a sequence): no
// consumer is created, so any number of readers may run at once without
// using up the stream's consumers.
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
		if err := fn(rawRecord(m)); err != nil {
			return err
		}
		from = id + 1
	}
	filter := events.JobFilter(id)
	for seq := from; seq <= to; {
		m, err := s.getMsg(ctx, seq, filter)
		if err != nil {
			return fmt.Errorf("read job %d: %w", id, err)
		}
		if m == nil || m.Sequence > to {
			return nil
		}
		if err := fn(rawRecord(m)); err != nil {
			return err
		}
		seq = m.Sequence + 1
	}
	return nil
}

// rawRecord decodes a message read from the stream leader.
func rawRecord(m *jetstream.RawStreamMsg) (events.Record, error) {
	b, err := events.Decode(m.Data, m.Header.Get(events.HeaderEncoding))
	return events.Record{Seq: m.Sequence, Subject: m.Subject, MsgID: m.Header.Get(jetstream.MsgIDHeader), Events: b.Events}, err
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
