package loadgen

import (
	"context"
	"time"
)

// lagSampler reads the target's retailpulse_projection_lag_seconds (how
// old the last message its read model applied was when it was committed)
// every interval during a run and keeps the largest value.
type lagSampler struct {
	cancel context.CancelFunc
	done   chan struct{}
	max    float64
	seen   bool
}

// lagSampleInterval is how often the lag is read.
const lagSampleInterval = 250 * time.Millisecond

func startLagSampler(ctx context.Context, c *apiClient) *lagSampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &lagSampler{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(lagSampleInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if m, ok := c.scrape(ctx); ok {
				if lag, has := m["retailpulse_projection_lag_seconds"]; has {
					s.seen = true
					s.max = max(s.max, lag)
				}
			}
		}
	}()
	return s
}

// finish stops sampling and returns the largest lag seen; nil when the
// target does not expose it.
func (s *lagSampler) finish() *float64 {
	s.cancel()
	<-s.done
	if !s.seen {
		return nil
	}
	m := s.max
	return &m
}
