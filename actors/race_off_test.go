//go:build !race

package actors

// raceDetector: see race_on_test.go.
const raceDetector = false
