package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// parseConfig parses args with env as the environment.
func parseConfig(args []string, env map[string]string) (serveConfig, error) {
	var cfg serveConfig
	fs := cfg.flagSet("test", io.Discard)
	err := cfg.parse(fs, args, func(k string) string { return env[k] })
	return cfg, err
}

func TestServeConfig_LengthLimits(t *testing.T) {
	tests := []struct {
		name                string
		args                []string
		env                 map[string]string
		wantStoreID, wantVT int
		wantErr             string
	}{
		{name: "defaults", wantStoreID: 128, wantVT: 64},
		{name: "flags", args: []string{"--max-store-id-length", "16", "--max-visit-time-length", "32"}, wantStoreID: 16, wantVT: 32},
		{name: "environment", env: map[string]string{"RETAILPULSE_MAX_STORE_ID_LENGTH": "20", "RETAILPULSE_MAX_VISIT_TIME_LENGTH": "40"}, wantStoreID: 20, wantVT: 40},
		{name: "flag beats environment", args: []string{"--max-store-id-length", "16"}, env: map[string]string{"RETAILPULSE_MAX_STORE_ID_LENGTH": "20"}, wantStoreID: 16, wantVT: 64},
		{name: "zero store_id length", args: []string{"--max-store-id-length", "0"}, wantErr: "--max-store-id-length must be positive"},
		{name: "negative store_id length", env: map[string]string{"RETAILPULSE_MAX_STORE_ID_LENGTH": "-1"}, wantErr: "--max-store-id-length must be positive"},
		{name: "zero visit_time length", args: []string{"--max-visit-time-length", "0"}, wantErr: "--max-visit-time-length must be positive"},
		{name: "not a number", env: map[string]string{"RETAILPULSE_MAX_VISIT_TIME_LENGTH": "x"}, wantErr: "RETAILPULSE_MAX_VISIT_TIME_LENGTH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(tt.args, tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MaxStoreIDLength != tt.wantStoreID || cfg.MaxVisitTimeLength != tt.wantVT {
				t.Fatalf("limits = %d, %d; want %d, %d", cfg.MaxStoreIDLength, cfg.MaxVisitTimeLength, tt.wantStoreID, tt.wantVT)
			}
		})
	}
}

func TestServeConfig_RedactedLogsLengthLimits(t *testing.T) {
	cfg, err := parseConfig([]string{"--max-store-id-length", "16", "--max-visit-time-length", "32", "--api-token", "secret"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	attrs := cfg.redacted()
	got := map[string]string{}
	for i := 0; i+1 < len(attrs); i += 2 {
		got[fmt.Sprint(attrs[i])] = fmt.Sprint(attrs[i+1])
	}
	if got["max_store_id_length"] != "16" || got["max_visit_time_length"] != "32" {
		t.Fatalf("redacted() = %v, want max_store_id_length=16 and max_visit_time_length=32", attrs)
	}
	if strings.Contains(fmt.Sprint(attrs), "secret") {
		t.Fatalf("redacted() shows the token: %v", attrs)
	}
}

func TestServeConfig_ByteSizeFlags(t *testing.T) {
	tests := []struct {
		name                 string
		args                 []string
		env                  map[string]string
		wantStream, wantBody int64
		wantErr              []string
	}{
		{name: "defaults", wantStream: 10 << 30, wantBody: 10 << 20},
		{name: "units", args: []string{"--max-stream-bytes", "512MiB", "--max-body-bytes", "64KiB"}, wantStream: 512 << 20, wantBody: 64 << 10},
		{name: "plain bytes and decimal units", args: []string{"--max-stream-bytes", "1GB", "--max-body-bytes", "1048576"}, wantStream: 1e9, wantBody: 1 << 20},
		{name: "environment", env: map[string]string{"RETAILPULSE_MAX_STREAM_BYTES": "2gib", "RETAILPULSE_MAX_BODY_BYTES": "1MB"}, wantStream: 2 << 30, wantBody: 1e6},
		{name: "flag beats environment", args: []string{"--max-body-bytes", "2MiB"}, env: map[string]string{"RETAILPULSE_MAX_BODY_BYTES": "1MiB"}, wantStream: 10 << 30, wantBody: 2 << 20},
		{name: "garbage flag", args: []string{"--max-stream-bytes", "lots"}, wantErr: []string{"-max-stream-bytes", "want a byte size"}},
		{name: "negative flag", args: []string{"--max-body-bytes", "-1"}, wantErr: []string{"-max-body-bytes", "negative"}},
		{name: "fraction of a byte", args: []string{"--max-body-bytes", "1.5B"}, wantErr: []string{"-max-body-bytes", "whole number of bytes"}},
		{name: "overflow", args: []string{"--max-stream-bytes", "9000000TiB"}, wantErr: []string{"-max-stream-bytes", "too large"}},
		{name: "garbage environment", env: map[string]string{"RETAILPULSE_MAX_STREAM_BYTES": "10XB"}, wantErr: []string{"RETAILPULSE_MAX_STREAM_BYTES", "--max-stream-bytes", `unknown unit "XB"`}},
		{name: "negative environment", env: map[string]string{"RETAILPULSE_MAX_BODY_BYTES": "-5KiB"}, wantErr: []string{"RETAILPULSE_MAX_BODY_BYTES", "--max-body-bytes", "negative"}},
		{name: "below the stream minimum", args: []string{"--max-stream-bytes", "1MB"}, wantErr: []string{"--max-stream-bytes must be at least 1 MiB"}},
		{name: "zero body", args: []string{"--max-body-bytes", "0KiB"}, wantErr: []string{"--max-body-bytes must be positive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(tt.args, tt.env)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error; want one containing %q", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("err = %v, want it to contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MaxStreamBytes != tt.wantStream || cfg.MaxBodyBytes != tt.wantBody {
				t.Fatalf("stream %d body %d, want %d %d", cfg.MaxStreamBytes, cfg.MaxBodyBytes, tt.wantStream, tt.wantBody)
			}
		})
	}
}

// serve -h shows the byte-size defaults with their units.
func TestServeConfig_HelpShowsByteSizeDefaults(t *testing.T) {
	_, _, stderr := runMain(t, "serve", "-h")
	for _, want := range []string{"-max-stream-bytes size", "(default 10GiB)", "-max-body-bytes size", "(default 10MiB)"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("serve -h lacks %q:\n%s", want, stderr)
		}
	}
}

// Under --log-format json every line is one JSON object, durations read as
// text, and process notices (signals) go through the same logger.
func TestLogger_JSONLinesAndReadableDurations(t *testing.T) {
	var buf bytes.Buffer
	m := &Main{Stderr: &buf}
	m.logger.Store(newLogger(&buf, "info", "json"))
	m.logger.Load().Info("job completed", "took", 2*time.Millisecond)
	m.notice("shutting down; a second signal exits at once", "signal", "terminated")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), buf.String())
	}
	for _, l := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
	}
	if !strings.Contains(lines[0], `"took":"2ms"`) {
		t.Errorf("duration not readable: %s", lines[0])
	}
	if !strings.Contains(lines[1], `"msg":"shutting down; a second signal exits at once"`) {
		t.Errorf("notice: %s", lines[1])
	}
}

func TestServeConfig_Slots(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    [3]int // job slots, image slots, min image slots
		target  time.Duration
		wantErr string
	}{
		{name: "defaults: adaptive", want: [3]int{64, 4096, 128}, target: 5 * time.Millisecond},
		{name: "fixed slots", args: []string{"--sched-latency-target", "0", "--image-slots", "1024"}, want: [3]int{64, 1024, 128}},
		{name: "fewer image slots than the floor", args: []string{"--image-slots", "1"}, want: [3]int{64, 1, 128}, target: 5 * time.Millisecond},
		{name: "API only", args: []string{"--job-slots", "0"}, want: [3]int{0, 4096, 128}, target: 5 * time.Millisecond},
		{name: "environment", env: map[string]string{"RETAILPULSE_SCHED_LATENCY_TARGET": "2ms", "RETAILPULSE_MIN_IMAGE_SLOTS": "256"}, want: [3]int{64, 4096, 256}, target: 2 * time.Millisecond},
		{name: "worker: fixed slots", args: []string{"--worker-only", "--nats-url", "nats://n1:4222"}, want: [3]int{64, 4096, 128}},
		{name: "worker: adaptive when asked", args: []string{"--worker-only", "--nats-url", "nats://n1:4222", "--sched-latency-target", "3ms"}, want: [3]int{64, 4096, 128}, target: 3 * time.Millisecond},
		{name: "worker: adaptive from the environment", args: []string{"--worker-only", "--nats-url", "nats://n1:4222"}, env: map[string]string{"RETAILPULSE_SCHED_LATENCY_TARGET": "4ms"}, want: [3]int{64, 4096, 128}, target: 4 * time.Millisecond},
		{name: "worker without a shared log", args: []string{"--worker-only"}, wantErr: "--worker-only needs --nats-url"},
		{name: "worker without job slots", args: []string{"--worker-only", "--nats-url", "nats://n1:4222", "--job-slots", "0"}, wantErr: "--worker-only with --job-slots 0"},
		{name: "negative job slots", args: []string{"--job-slots", "-1"}, wantErr: "--job-slots must not be negative"},
		{name: "zero image slots", args: []string{"--image-slots", "0"}, wantErr: "--image-slots must be positive"},
		{name: "zero floor", args: []string{"--min-image-slots", "0"}, wantErr: "--min-image-slots must be positive"},
		{name: "negative target", args: []string{"--sched-latency-target", "-1ms"}, wantErr: "--sched-latency-target must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(tt.args, tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := [3]int{cfg.JobSlots, cfg.ImageSlots, cfg.MinImageSlots}; got != tt.want || cfg.SchedLatencyTarget != tt.target {
				t.Fatalf("slots %v target %v, want %v %v", got, cfg.SchedLatencyTarget, tt.want, tt.target)
			}
		})
	}
}
