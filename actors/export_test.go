package actors

import "time"

// LingerFor is how long a job actor of an engine with cfg gathers outcomes
// while it owns active jobs.
func LingerFor(cfg Config, active int) time.Duration {
	e := &Engine{cfg: cfg}
	e.active.Store(int64(active))
	return e.linger()
}
