package main

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An operator tool given a directory without the service's data exits 2
// with a message saying so. Where the service's nats/ directory is
// missing, it creates nothing.
func TestLogFlags_RefuseDirWithoutData(t *testing.T) {
	tools := [][]string{{"replay"}, {"verify"}, {"requeue", "--force"}}
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string) // nil: dir does not exist
		wantErr string
		mayAdd  bool // the embedded server may start, adding its files
	}{
		{name: "no such directory", wantErr: "no retailpulse data here (no such directory)"},
		{name: "empty directory", prepare: func(t *testing.T, dir string) {
			if err := os.Mkdir(dir, 0o750); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "no retailpulse data here (no nats/ directory)"},
		{name: "nats is a file", prepare: func(t *testing.T, dir string) {
			if err := os.Mkdir(dir, 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "nats"), nil, 0o640); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "no retailpulse data here (no nats/ directory)"},
		{name: "nats without a stream", prepare: func(t *testing.T, dir string) {
			if err := os.MkdirAll(filepath.Join(dir, "nats"), 0o750); err != nil {
				t.Fatal(err)
			}
		}, wantErr: `no retailpulse data here (no stream "RETAILPULSE" in nats/)`, mayAdd: true},
	}
	for _, tool := range tools {
		for _, tt := range tests {
			t.Run(tool[0]+"/"+tt.name, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "dta")
				if tt.prepare != nil {
					tt.prepare(t, dir)
				}
				before := listTree(t, dir)
				args := append(append([]string{}, tool...), "--data-dir", dir)
				if tool[0] == "requeue" {
					args = append(args, "1")
				}
				code, stdout, stderr := runMain(t, args...)
				if code != exitUsage {
					t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, exitUsage, stdout, stderr)
				}
				for _, want := range []string{"--data-dir " + dir, tt.wantErr, "--nats-url"} {
					if !strings.Contains(stderr, want) {
						t.Errorf("stderr lacks %q: %s", want, stderr)
					}
				}
				if after := listTree(t, dir); !tt.mayAdd && !maps.Equal(after, before) {
					t.Fatalf("entries before %v, after %v; want nothing created", before, after)
				}
			})
		}
	}
}

// listTree lists dir and everything under it (nil when it does not exist)
// as relative path -> "dir" or "file".
func listTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			out[rel] = "dir"
		} else {
			out[rel] = "file"
		}
		return nil
	})
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// serve, unlike the tools, creates a data dir that does not exist.
func TestServe_CreatesDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "data")
	startApp(t, dir).stop()
	if fi, err := os.Stat(filepath.Join(dir, "nats")); err != nil || !fi.IsDir() {
		t.Fatalf("serve on a new data dir: nats/ %v, %v", fi, err)
	}
}
