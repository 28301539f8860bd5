package events

import (
	"context"
	"fmt"
	"time"
)

// Message is one stored message of the log as a projection applies it: its
// stream sequence and subject, when the log stored it, and its decoded
// body (or why the body could not be decoded).
type Message struct {
	Seq     uint64
	Subject string
	Time    time.Time // when the log stored it
	Batch   Batch
	Err     error // the body could not be decoded; the message is skipped
}

// ApplyReport says what applying a run of messages did.
type ApplyReport struct {
	ApplyResult
	// Problems lists the messages that could not be applied (undecodable,
	// for a job never submitted, naming images outside the job). The
	// sequence still advances past them, so one bad message cannot stall a
	// projection; the caller logs them.
	Problems []error
}

// ApplyMessages applies msgs in order (see Apply) and reports what they
// did. It never fails: the in-memory model cannot fail to store. ctx is
// not used. Same concurrency rule as Apply.
func (m *ReadModel) ApplyMessages(_ context.Context, msgs []Message) (ApplyReport, error) {
	var rep ApplyReport
	for _, msg := range msgs {
		if msg.Err != nil {
			m.Skip(msg.Seq)
			rep.Problems = append(rep.Problems, fmt.Errorf("seq %d (%s): undecodable: %w", msg.Seq, msg.Subject, msg.Err))
			continue
		}
		res, err := m.Apply(msg.Seq, msg.Subject, msg.Batch)
		rep.Applied += res.Applied
		rep.Duplicates += res.Duplicates
		if err != nil {
			rep.Problems = append(rep.Problems, err)
		}
	}
	return rep, nil
}
