package jsstore

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Diff is one setting on which an existing stream or work consumer and this
// instance's Config disagree.
type Diff struct {
	Setting string // Config field in snake case: "replicas", "ack_wait", ...
	Have    string // what the existing stream or consumer has
	Want    string // what this instance's Config asks for
}

// DriftError reports that the shared stream or work consumer differs from
// this instance's Config. Nothing was changed.
type DriftError struct{ Diffs []Diff }

func (e *DriftError) Error() string {
	parts := make([]string, len(e.Diffs))
	for i, d := range e.Diffs {
		parts[i] = fmt.Sprintf("%s: existing %s, this instance %s", d.Setting, d.Have, d.Want)
	}
	return "settings differ from the shared stream: " + strings.Join(parts, "; ")
}

// streamDrift lists the settings of have that differ from want.
func streamDrift(have, want jetstream.StreamConfig) []Diff {
	var out []Diff
	add := func(setting string, h, w any) {
		if fmt.Sprint(h) != fmt.Sprint(w) {
			out = append(out, Diff{setting, fmt.Sprint(h), fmt.Sprint(w)})
		}
	}
	add("replicas", max(have.Replicas, 1), max(want.Replicas, 1))
	add("max_bytes", have.MaxBytes, want.MaxBytes)
	add("dedup", have.Duplicates, want.Duplicates)
	add("max_msg_size", have.MaxMsgSize, want.MaxMsgSize)
	add("subjects", sorted(have.Subjects), sorted(want.Subjects))
	add("storage", have.Storage, want.Storage)
	add("retention", have.Retention, want.Retention)
	add("discard", have.Discard, want.Discard)
	add("deny_delete", have.DenyDelete, want.DenyDelete)
	add("deny_purge", have.DenyPurge, want.DenyPurge)
	add("allow_direct", have.AllowDirect, want.AllowDirect)
	return out
}

// consumerDrift lists the settings of the work consumer have that differ
// from want.
func consumerDrift(have, want jetstream.ConsumerConfig) []Diff {
	var out []Diff
	add := func(setting string, h, w any) {
		if fmt.Sprint(h) != fmt.Sprint(w) {
			out = append(out, Diff{setting, fmt.Sprint(h), fmt.Sprint(w)})
		}
	}
	filters := func(c jetstream.ConsumerConfig) []string {
		if c.FilterSubject != "" {
			return []string{c.FilterSubject}
		}
		return sorted(c.FilterSubjects)
	}
	add("ack_wait", have.AckWait, want.AckWait)
	add("consumer_replicas", max(have.Replicas, 1), max(want.Replicas, 1))
	add("consumer_filter", filters(have), filters(want))
	add("ack_policy", have.AckPolicy, want.AckPolicy)
	add("max_deliver", have.MaxDeliver, want.MaxDeliver)
	add("max_ack_pending", have.MaxAckPending, want.MaxAckPending)
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
