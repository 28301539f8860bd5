package jsstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/retailpulse/retailpulse/events"
)

func TestClassify_ByKindAndCode(t *testing.T) {
	api := func(code jetstream.ErrorCode, status int) error {
		return fmt.Errorf("publish: %w", &jetstream.APIError{ErrorCode: code, Code: status, Description: "x"})
	}
	const (
		transient = "transient"
		full      = "full"
		permanent = "permanent"
	)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"attempt deadline", fmt.Errorf("publish: %w", context.DeadlineExceeded), transient},
		{"nats timeout", nats.ErrTimeout, transient},
		{"no stream response", jetstream.ErrNoStreamResponse, transient},
		{"no responders", nats.ErrNoResponders, transient},
		{"reconnecting", nats.ErrConnectionReconnecting, transient},
		{"temporarily unavailable 10008", api(10008, 503), transient},
		{"expected last seq not ready 10163", api(10163, 503), transient},
		{"write in flight 10164", api(jetstream.JSErrCodeStreamWrongLastSequenceConstant, 400), transient},
		{"stream max bytes 10077", api(10077, 503), full},
		{"storage resources 10047", api(10047, 500), full},
		{"insufficient resources 10023", api(10023, 503), full},
		{"other 503 api error", api(10075, 503), permanent},
		{"bad request", api(10052, 400), permanent},
		{"plain error", errors.New("boom"), permanent},
		{"cancelled", context.Canceled, permanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify(tt.err)
			var p permanentErr
			kind := transient
			switch {
			case errors.As(got, &p) && errors.Is(p.err, events.ErrStorageFull):
				kind = full
			case errors.As(got, &p):
				kind = permanent
			}
			if kind != tt.want {
				t.Fatalf("classify(%v) is %s, want %s", tt.err, kind, tt.want)
			}
		})
	}
}

// A retried operation whose deadline passes while the log is unavailable
// reports events.ErrUnavailable; a cancelled one reports the cancellation.
func TestRetry_UnavailableAtDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	err := retry(ctx, func(context.Context) error { return nats.ErrNoResponders })
	if !errors.Is(err, events.ErrUnavailable) {
		t.Fatalf("after the deadline: %v, want ErrUnavailable", err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	err = retry(cctx, func(context.Context) error { return nats.ErrNoResponders })
	if errors.Is(err, events.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("after cancel: %v, want context.Canceled only", err)
	}
}
