package jsstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/retailpulse/retailpulse/events"
)

// Snapshots stores read model snapshots in a JetStream object store beside
// the event stream. A snapshot is only a shortcut for restarts: Load
// refuses one that does not belong to the current stream (recreated, or
// behind a restored backup) and the caller then replays the whole log.
// Safe for concurrent use; concurrent saves are harmless (last one wins,
// any valid snapshot serves).
type Snapshots struct {
	eventLog *EventLog
	obs      jetstream.ObjectStore
}

const (
	snapshotObject    = "readmodel"
	metaStreamCreated = "stream-created"
	metaSnapshotSeq   = "seq"
)

// Snapshots opens (creating if needed) the snapshot bucket.
func (s *EventLog) Snapshots(ctx context.Context) (*Snapshots, error) {
	var obs jetstream.ObjectStore
	err := retry(ctx, func(ctx context.Context) error {
		o, err := s.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      s.cfg.Stream + "_SNAPSHOTS",
			Description: "read model snapshots (a restart shortcut; the event stream is authoritative)",
			Storage:     jetstream.FileStorage,
			Replicas:    s.cfg.Replicas,
		})
		obs = o
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot bucket: %w", err)
	}
	return &Snapshots{eventLog: s, obs: obs}, nil
}

func (sn *Snapshots) streamCreated(ctx context.Context) (string, uint64, error) {
	si, err := sn.eventLog.stream.Info(ctx)
	if err != nil {
		return "", 0, err
	}
	return si.Created.UTC().Format(time.RFC3339Nano), si.State.LastSeq, nil
}

// Save stores a snapshot of model and returns the sequence it covers.
func (sn *Snapshots) Save(ctx context.Context, model *events.ReadModel) (uint64, error) {
	created, _, err := sn.streamCreated(ctx)
	if err != nil {
		return 0, fmt.Errorf("save snapshot: %w", err)
	}
	data, seq, err := model.MarshalSnapshot(sn.eventLog.cfg.Stream)
	if err != nil {
		return 0, err
	}
	meta := jetstream.ObjectMeta{Name: snapshotObject, Metadata: map[string]string{
		metaStreamCreated: created, metaSnapshotSeq: strconv.FormatUint(seq, 10),
	}}
	if _, err := sn.obs.Put(ctx, meta, bytes.NewReader(data)); err != nil {
		return 0, fmt.Errorf("save snapshot: %w", err)
	}
	return seq, nil
}

// ErrNoSnapshot: no snapshot has been saved.
var ErrNoSnapshot = errors.New("no snapshot")

// Load returns the latest snapshot as a read model, checked against the
// current stream: same stream incarnation, and not ahead of the log. Its
// content is verified by the object store's digest and by
// events.RestoreSnapshot.
func (sn *Snapshots) Load(ctx context.Context) (*events.ReadModel, error) {
	info, err := sn.obs.GetInfo(ctx, snapshotObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, ErrNoSnapshot
	}
	if err != nil {
		return nil, fmt.Errorf("load snapshot: %w", err)
	}
	created, last, err := sn.streamCreated(ctx)
	if err != nil {
		return nil, fmt.Errorf("load snapshot: %w", err)
	}
	if got := info.Metadata[metaStreamCreated]; got != created {
		return nil, fmt.Errorf("load snapshot: taken of a stream created %s, this one was created %s", got, created)
	}
	data, err := sn.obs.GetBytes(ctx, snapshotObject)
	if err != nil {
		return nil, fmt.Errorf("load snapshot: %w", err)
	}
	model, err := events.RestoreSnapshot(data, sn.eventLog.cfg.Stream)
	if err != nil {
		return nil, err
	}
	if model.LastSeq() > last {
		return nil, fmt.Errorf("load snapshot: covers sequence %d, the log ends at %d", model.LastSeq(), last)
	}
	return model, nil
}

// ExistingSnapshots binds the snapshot bucket without creating it (for
// read-only tools); ErrNoSnapshot if there is none.
func (s *EventLog) ExistingSnapshots(ctx context.Context) (*Snapshots, error) {
	obs, err := s.js.ObjectStore(ctx, s.cfg.Stream+"_SNAPSHOTS")
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, ErrNoSnapshot
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot bucket: %w", err)
	}
	return &Snapshots{eventLog: s, obs: obs}, nil
}
