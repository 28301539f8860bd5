package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/retailpulse/retailpulse/events/jsstore/jstest"
)

func TestGCPercentFor_Table(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name               string
		floor, live, roots int64
		want               int
	}{
		{"live data large: Go's pace", 160 * mib, 100 * mib, 10 * mib, 100},
		{"goal exactly the floor: Go's pace", 160 * mib, 60 * mib, 40 * mib, 100},
		{"small live heap reaches the floor", 160 * mib, 20 * mib, 0, 700},
		{"roots count in the goal", 160 * mib, 20 * mib, 20 * mib, 350},
		{"a tiny live heap counts as 4 MiB", 160 * mib, 1024, 0, 3900},
		{"bounded", 1 << 40, 0, 0, 100_000},
		{"negative roots ignored", 160 * mib, 20 * mib, -5, 700},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := gcPercentFor(tt.floor, tt.live, tt.roots)
			if got != tt.want {
				t.Fatalf("gcPercentFor(%d, %d, %d) = %d, want %d", tt.floor, tt.live, tt.roots, got, tt.want)
			}
			live := max(tt.live, 4<<20)
			if goal := live + (live+max(tt.roots, 0))*int64(got)/100; got > 100 && got < 100_000 && (goal < tt.floor*99/100 || goal > tt.floor*101/100) {
				t.Fatalf("heap goal %d, want about the floor %d", goal, tt.floor)
			}
		})
	}
}

func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// The tuner raises GOGC while live data is small, sets it again after
// each collection, and restores what it found when stopped.
func TestGCTuner_PacesAndRestores(t *testing.T) {
	before := gogc()
	stop := startGCTuner(context.Background(), 1<<30, func(string) string { return "" }, slog.New(slog.DiscardHandler))
	if got := gogc(); got <= 100 {
		t.Fatalf("GOGC %d with a 1 GiB floor and a small live heap, want more than 100", got)
	}
	// A collection with a larger live heap lowers it.
	keep := make([][]byte, 0, 300)
	for range 300 {
		keep = append(keep, make([]byte, 1<<20))
	}
	highest := gogc()
	runtime.GC()
	jstest.CheckFor(t, 10*time.Second, func() error {
		if got := gogc(); got >= highest {
			return fmt.Errorf("GOGC still %d after a collection with 300 MiB live", got)
		}
		return nil
	})
	runtime.KeepAlive(keep)
	stop()
	if got := gogc(); got != before {
		t.Fatalf("GOGC %d after stop, want %d restored", got, before)
	}
}

func TestGCTuner_LeavesGoDefaultsWhenAsked(t *testing.T) {
	tests := []struct {
		name  string
		floor int64
		env   map[string]string
	}{
		{"--gc-floor 0", 0, nil},
		{"GOGC in the environment", 1 << 30, map[string]string{"GOGC": "50"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := gogc()
			stop := startGCTuner(context.Background(), tt.floor, func(k string) string { return tt.env[k] }, slog.New(slog.DiscardHandler))
			defer stop()
			if got := gogc(); got != before {
				t.Fatalf("GOGC %d, want %d untouched", got, before)
			}
		})
	}
}

func TestMemoryLimit_Files(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name  string
		files []string
		want  int64
	}{
		{"v2 limit", []string{write("v2", "268435456\n"), missing}, 256 << 20},
		{"v2 unlimited", []string{write("v2max", "max\n"), write("v1a", "1073741824\n")}, 0},
		{"v1 limit when v2 is missing", []string{missing, write("v1", "536870912\n")}, 512 << 20},
		{"v1 unlimited", []string{missing, write("v1max", "9223372036854771712\n")}, 0},
		{"garbage", []string{write("bad", "lots\n")}, 0},
		{"none", []string{missing}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := memoryLimit(tt.files); got != tt.want {
				t.Fatalf("memoryLimit = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestFloorWithin_Table(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name                         string
		floor, container, goMemLimit int64
		want                         int64
	}{
		{"no limits", 160 * mib, 0, math.MaxInt64, 160 * mib},
		{"a roomy container", 160 * mib, 2048 * mib, math.MaxInt64, 160 * mib},
		{"a 256 MiB container", 160 * mib, 256 * mib, math.MaxInt64, 128 * mib},
		{"GOMEMLIMIT lower than the container", 160 * mib, 1024 * mib, 200 * mib, 100 * mib},
		{"GOMEMLIMIT alone", 160 * mib, 0, 128 * mib, 64 * mib},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := floorWithin(tt.floor, tt.container, tt.goMemLimit); got != tt.want {
				t.Fatalf("floorWithin = %d, want %d", got, tt.want)
			}
		})
	}
}
