package jsstore_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

// submitN stores n one-image submissions and returns the last sequence.
func submitN(t *testing.T, s *jsstore.EventLog, n int) uint64 {
	t.Helper()
	var last uint64
	for i := range n {
		id, _, err := s.Submit(context.Background(), sampleJob(fmt.Sprintf("http://img.example/%d.jpg", i)), "")
		if err != nil {
			t.Fatal(err)
		}
		last = id
	}
	return last
}

// pauseReaders pauses the stream's consumers other than the work
// consumer (the readers' ordered consumers) for a minute and returns how
// many it paused. A paused consumer delivers nothing while it still
// answers the client library's heartbeats: the stall a reader cannot see.
func pauseReaders(t *testing.T, s *jsstore.EventLog) int {
	t.Helper()
	ctx := context.Background()
	st, err := s.JetStream().Stream(ctx, s.StreamName())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for name := range st.ListConsumers(ctx).Info() {
		if name.Name == jsstore.WorkConsumer {
			continue
		}
		if _, err := st.PauseConsumer(ctx, name.Name, time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

// TestEventLog_ScanResumesAStalledRead pauses a Scan's consumer after its
// first message (more than one pull's worth remain): the scan resumes
// after the last message delivered, on a new consumer, and hands every
// message once, in order.
func TestEventLog_ScanResumesAStalledRead(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{ReadStallTimeout: 300 * time.Millisecond})
	last := submitN(t, s, 2500) // a pull asks for 2,000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var seqs []uint64
	paused := 0
	err := s.Scan(ctx, 1, 0, func(m jsstore.Message) error {
		if len(seqs) == 0 {
			paused = pauseReaders(t, s)
		}
		seqs = append(seqs, m.Seq)
		return nil
	})
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	if paused != 1 {
		t.Fatalf("paused %d reading consumers, want the scan's one", paused)
	}
	if uint64(len(seqs)) != last {
		t.Fatalf("scan delivered %d messages, want %d", len(seqs), last)
	}
	for i, seq := range seqs {
		if seq != uint64(i+1) {
			t.Fatalf("message %d has sequence %d: not each message once, in order", i, seq)
		}
	}
	if n := jsstore.ScanResumes(s); n < 1 {
		t.Fatalf("the scan was resumed %d times, want at least once", n)
	}
}

// TestEventLog_ScanWaitsForASlowCaller: time the caller spends on a
// message is not a stall, however long; a caller's error ends the scan
// with that error.
func TestEventLog_ScanWaitsForASlowCaller(t *testing.T) {
	s := jstest.Open(t, jstest.StartSingle(t), jsstore.Config{ReadStallTimeout: 100 * time.Millisecond})
	submitN(t, s, 3)
	var seqs []uint64
	err := s.Scan(context.Background(), 1, 0, func(m jsstore.Message) error {
		seqs = append(seqs, m.Seq)
		if m.Seq == 1 {
			time.Sleep(500 * time.Millisecond)
		}
		return nil
	})
	if err != nil || fmt.Sprint(seqs) != "[1 2 3]" {
		t.Fatalf("scan: %v, delivered %v; want [1 2 3]", err, seqs)
	}
	if n := jsstore.ScanResumes(s); n != 0 {
		t.Fatalf("a slow caller was taken for a stall: %d resumes", n)
	}
	err = s.Scan(context.Background(), 2, 0, func(m jsstore.Message) error {
		return fmt.Errorf("caller stops at %d", m.Seq)
	})
	if err == nil || !strings.Contains(err.Error(), "caller stops at 2") {
		t.Fatalf("scan with a failing caller: %v, want its error", err)
	}
}
