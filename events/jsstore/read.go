package jsstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/retailpulse/retailpulse/events"
)

// Info is the stream's state.
type Info struct {
	LastSeq  uint64
	Msgs     uint64
	Bytes    uint64
	MaxBytes int64
	// Created is when the stream was created: it tells incarnations of one
	// stream name apart.
	Created time.Time
}

// Info returns the stream's current state.
func (s *EventLog) Info(ctx context.Context) (Info, error) {
	si, err := s.stream.Info(ctx)
	if err != nil {
		return Info{}, fmt.Errorf("stream info: %w", err)
	}
	return Info{LastSeq: si.State.LastSeq, Msgs: si.State.Msgs, Bytes: si.State.Bytes, MaxBytes: si.Config.MaxBytes, Created: si.Created}, nil
}

// Follow delivers every message after sequence `after`, in stream order, to
// apply, until ctx ends (it then returns ctx.Err()). caughtUp, if not nil,
// is called once, when the messages stored before Follow started have all
// been delivered. A message that cannot be decoded is passed with its error
// so the caller can log it and move on. apply runs on Follow's goroutine.
func (s *EventLog) Follow(ctx context.Context, after uint64, apply func(seq uint64, subject string, b events.Batch, err error), caughtUp func()) error {
	return s.FollowMessages(ctx, after, func(m events.Message) { apply(m.Seq, m.Subject, m.Batch, m.Err) }, caughtUp)
}

// FollowMessages is Follow delivering each message with the time the log
// stored it.
func (s *EventLog) FollowMessages(ctx context.Context, after uint64, apply func(events.Message), caughtUp func()) error {
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
	err = s.consume(ctx, after+1, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		seq := md.Sequence.Stream
		b, derr := events.Decode(m.Data(), m.Headers().Get(events.HeaderEncoding))
		apply(events.Message{Seq: seq, Subject: m.Subject(), Time: md.Timestamp, Batch: b, Err: derr})
		// Caught up means the leader's last sequence as of the start was
		// applied. NumPending is not used: a replica that is behind would
		// report nothing pending early.
		signal(seq)
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
// up to the last message stored when Scan starts, as the stream leader
// knows it; a larger to is cut to that). fn returning an error stops the
// scan with that error. A read that stalls (see Config.ReadStallTimeout)
// is resumed after the last message delivered: fn still sees each message
// once, in order.
func (s *EventLog) Scan(ctx context.Context, from, to uint64, fn func(Message) error) error {
	// Read up to the stream's last sequence as its leader knows it; the
	// consumer may be served by a replica that has not reached it yet, so
	// its NumPending cannot tell where the log ends.
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	if to == 0 || to > info.LastSeq {
		to = info.LastSeq
	}
	next := max(from, 1)
	for next <= to {
		var fnErr error
		err := s.watched(ctx, func(ctx context.Context, turn func()) error {
			return s.consume(ctx, next, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
				seq := md.Sequence.Stream
				if seq > to {
					return true, nil
				}
				b, derr := events.Decode(m.Data(), m.Headers().Get(events.HeaderEncoding))
				msg := Message{Seq: seq, Subject: m.Subject(), MsgID: m.Headers().Get(jetstream.MsgIDHeader), Time: md.Timestamp, Batch: b, Err: derr}
				turn()
				fnErr = fn(msg)
				turn()
				next = seq + 1
				return fnErr != nil || seq >= to, fnErr
			})
		})
		switch {
		case fnErr != nil:
			return fmt.Errorf("scan: %w", fnErr)
		case errors.Is(err, errReadStalled):
			s.scanResumes.Add(1)
			continue
		case err != nil:
			return fmt.Errorf("scan: %w", err)
		}
		return nil
	}
	return nil
}

// errReadStalled: a read's consumer delivered nothing for ReadStallTimeout.
var errReadStalled = errors.New("read stalled")

// watched runs read with a context that ends, with cause errReadStalled,
// once read has waited ReadStallTimeout for the log. read calls turn as
// it hands a message to its caller and again once the caller returns:
// the time in between is the caller's, however long, never a stall. It
// returns read's error, or errReadStalled when the stall ended it.
func (s *EventLog) watched(ctx context.Context, read func(ctx context.Context, turn func()) error) error {
	stall := s.cfg.ReadStallTimeout
	if stall <= 0 {
		return read(ctx, func() {})
	}
	rctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var turns atomic.Int64 // odd while the caller has a message
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(stall / 4)
		defer t.Stop()
		last, since := turns.Load(), time.Now()
		for {
			select {
			case <-done:
				return
			case <-rctx.Done():
				return
			case <-t.C:
			}
			if n := turns.Load(); n != last || n%2 == 1 {
				last, since = n, time.Now()
			} else if time.Since(since) >= stall {
				stop(errReadStalled)
				return
			}
		}
	}()
	err := read(rctx, func() { turns.Add(1) })
	if ctx.Err() == nil && errors.Is(context.Cause(rctx), errReadStalled) {
		return errReadStalled
	}
	return err
}

// consume reads the whole stream from sequence from through an ordered consumer and hands each message to fn until fn
// reports done or an error, or ctx ends (then it returns ctx.Err()).
func (s *EventLog) consume(ctx context.Context, from uint64, fn func(jetstream.Msg, *jetstream.MsgMetadata) (done bool, err error)) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from
	}
	cons, err := s.js.OrderedConsumer(ctx, s.cfg.Stream, cfg)
	if err != nil {
		return err
	}
	// Short pulls with frequent heartbeats: when the server holding the
	// (single-replica) ordered consumer dies, the missing heartbeats make it
	// recreate itself elsewhere within seconds, not after the 30 s default
	// pull's heartbeat window.
	iter, err := cons.Messages(jetstream.PullMaxMessages(2000), jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(time.Second))
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
