package main

import (
	"strings"
	"testing"
)

func TestMain_Help(t *testing.T) {
	commands := []string{"serve", "replay", "verify", "requeue", "bench", "help"}
	topLevel := append(commands, `retailpulse COMMAND -h`, "RETAILPULSE_<FLAG>", "RETAILPULSE_DATA_DIR")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{name: "-h", args: []string{"-h"}, wantStdout: topLevel},
		{name: "--help", args: []string{"--help"}, wantStdout: topLevel},
		{name: "-help", args: []string{"-help"}, wantStdout: topLevel},
		{name: "help", args: []string{"help"}, wantStdout: topLevel},
		{name: "help -h", args: []string{"help", "-h"}, wantStdout: topLevel},
		{name: "serve -h", args: []string{"serve", "-h"}, wantStderr: []string{"RETAILPULSE_DATA_DIR", "-max-stream-bytes"}},
		{name: "help serve", args: []string{"help", "serve"}, wantStderr: []string{"RETAILPULSE_DATA_DIR", "-max-stream-bytes"}},
		{name: "help replay", args: []string{"help", "replay"}, wantStderr: []string{"-until-seq"}},
		{name: "-h before a command", args: []string{"-h", "bench"}, wantStderr: []string{"-status-rps"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: exitUsage, wantStderr: append([]string{`unknown command "frobnicate"`}, commands...)},
		{name: "help on an unknown command", args: []string{"help", "frobnicate"}, wantCode: exitUsage, wantStderr: append([]string{`unknown command "frobnicate"`}, commands...)},
		{name: "help on two commands", args: []string{"help", "serve", "bench"}, wantCode: exitUsage, wantStderr: []string{"at most one command"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runMain(t, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, stdout, stderr)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// serve's help states the environment fallback above its flags.
func TestServeConfig_HelpStatesEnvironmentFallback(t *testing.T) {
	code, _, stderr := runMain(t, "serve", "-h")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	env, flags := strings.Index(stderr, "RETAILPULSE_<FLAG>"), strings.Index(stderr, "  -addr")
	if env < 0 || flags < 0 || env > flags {
		t.Fatalf("want the environment rule above the flags:\n%s", stderr)
	}
}
