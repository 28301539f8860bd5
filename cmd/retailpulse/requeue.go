package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
)

// queuePlace is where an unfinished job stands on the work consumer.
type queuePlace int

const (
	placeWaiting   queuePlace = iota // not delivered yet: an owner will take it
	placeDelivered                   // delivered and not known to be acked: in flight, or stranded
	placeAcked                       // acked, so never delivered again: stranded
)

// placeOf tells where an unfinished job whose latest delivery message (its
// submission, or its latest requeue) is at stream sequence dseq stands.
func placeOf(dseq uint64, ws jsstore.WorkState) queuePlace {
	switch {
	case dseq > ws.Delivered:
		return placeWaiting
	case dseq <= ws.AckFloor || ws.AckPending == 0:
		return placeAcked
	}
	return placeDelivered
}

// findStranded lists the unfinished jobs of r that the work consumer will
// never deliver again, one line each. A job is reported when it is provably
// acked (at or below the ack floor, or nothing is pending at all), or when
// more unfinished jobs are delivered than deliveries are pending, so some
// of them must be acked (then all such jobs are listed as possibly
// stranded). ws must have been read before the log r was folded.
func findStranded(r *rebuilt, ws jsstore.WorkState) []string {
	var out []string
	var delivered []uint64
	for _, v := range r.model.Jobs() {
		if v.Status != events.StatusOngoing {
			continue
		}
		dseq := max(v.ID, r.queue[v.ID])
		switch placeOf(dseq, ws) {
		case placeAcked:
			out = append(out, fmt.Sprintf("job %d: unfinished (%d of %d images settled) and acked on the work queue: nothing will run it", v.ID, v.Processed+v.Failed, v.Images))
		case placeDelivered:
			delivered = append(delivered, v.ID)
		}
	}
	if len(delivered) > ws.AckPending {
		slices.Sort(delivered)
		for _, id := range delivered {
			out = append(out, fmt.Sprintf("job %d: possibly stranded: %d unfinished jobs are delivered but only %d deliveries are pending", id, len(delivered), ws.AckPending))
		}
	}
	return out
}

// requeue: retailpulse requeue [--force] [--reason TEXT] JOB...
func (m *Main) requeue(ctx context.Context, args []string) int {
	var lf logFlags
	fs := flag.NewFlagSet("retailpulse requeue", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	lf.register(fs)
	force := fs.Bool("force", false, "requeue jobs that may still be in flight too (their owner loses the job; nothing is recorded twice)")
	reason := fs.String("reason", "", "why, recorded in the job's requeue event")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: retailpulse requeue [flags] JOB...\n\nPuts unfinished jobs that no owner will run (see verify's STRANDED lines) back on the work queue.\nEach requeue is an event in the job's history, fenced like every write to a job.\nExit 0 when every job was requeued, 1 when some were not, 2 on usage or connection errors.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageCode(err)
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(m.Stderr, "retailpulse requeue: name at least one job id")
		return exitUsage
	}
	var ids []uint64
	for _, a := range fs.Args() {
		id, err := events.ParseJobID(a)
		if err != nil {
			fmt.Fprintf(m.Stderr, "retailpulse requeue: %v\n", err)
			return exitUsage
		}
		ids = append(ids, id)
	}
	eventLog, closeFn, err := lf.open(ctx)
	if err != nil {
		fmt.Fprintf(m.Stderr, "retailpulse requeue: %v\n", err)
		return exitUsage
	}
	defer closeFn()
	host, _ := os.Hostname()
	by := fmt.Sprintf("retailpulse requeue on %s", host)
	code := exitOK
	for _, id := range ids {
		msg, err := requeueOne(ctx, eventLog, id, *force, &events.JobRequeued{By: by, Reason: *reason, At: time.Now().UTC()})
		if err != nil {
			fmt.Fprintf(m.Stdout, "job %d: not requeued: %v\n", id, err)
			code = exitError
			continue
		}
		fmt.Fprintf(m.Stdout, "job %d: %s\n", id, msg)
	}
	return code
}

var errNotStranded = errors.New("not stranded")

// requeueOne requeues one job if it is unfinished and no owner will run it
// (or force is set and it may be in flight).
func requeueOne(ctx context.Context, eventLog *jsstore.EventLog, id uint64, force bool, ev *events.JobRequeued) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ws, err := eventLog.WorkState(ctx)
	if err != nil {
		return "", err
	}
	h, err := eventLog.LoadJob(ctx, id)
	if err != nil {
		return "", err
	}
	dseq := id
	for _, r := range h.Records {
		if _, kind, _ := events.ParseJobSubject(r.Subject); kind == events.KindRequeued {
			dseq = r.Seq
		}
	}
	switch placeOf(dseq, ws) {
	case placeWaiting:
		return "", fmt.Errorf("%w: waiting for an owner (delivery message %d not delivered yet)", errNotStranded, dseq)
	case placeDelivered:
		if !force {
			return "", fmt.Errorf("%w for sure: delivered and may be in flight; give --force to requeue it anyway", errNotStranded)
		}
	}
	seq, err := eventLog.Requeue(ctx, id, ev)
	if err != nil {
		return "", err
	}
	return "requeued (event at sequence " + strconv.FormatUint(seq, 10) + ")", nil
}
