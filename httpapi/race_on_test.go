//go:build race

package httpapi

// raceDetector: this test binary runs under the race detector, which makes
// sync.Pool drop items at random, so allocations cannot be counted.
const raceDetector = true
