package main

import (
	"fmt"
	"io"
	"strings"
	"testing"
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
