package main

import (
	"bufio"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// TestDockerContext_KeepsWhatTheBuildNeeds reads deploy/Dockerfile's ignore
// file and requires every non-test Go source of the module and every file
// a //go:embed directive names to stay in the build context, so that the
// container build compiles what `go build` does here. The matcher follows
// Docker's rules for the patterns the file uses: a pattern excludes a path
// it matches or a directory above it, "**/" matches any number of
// directories, "!" re-includes, and the last matching pattern wins.
func TestDockerContext_KeepsWhatTheBuildNeeds(t *testing.T) {
	root := filepath.Join("..", "..")
	patterns := readIgnore(t, filepath.Join(root, "deploy", "Dockerfile.dockerignore"))
	var needed []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == ".git" || rel == "data" || strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		needed = append(needed, rel)
		embeds, err := embedPatterns(p)
		if err != nil {
			return err
		}
		for _, e := range embeds {
			matches, _ := filepath.Glob(filepath.Join(filepath.Dir(p), e))
			if len(matches) == 0 {
				t.Errorf("%s: //go:embed %s matches nothing", rel, e)
			}
			for _, m := range matches {
				_ = filepath.WalkDir(m, func(q string, d fs.DirEntry, err error) error {
					if err == nil && !d.IsDir() {
						r, _ := filepath.Rel(root, q)
						needed = append(needed, filepath.ToSlash(r))
					}
					return err
				})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(needed) < 20 {
		t.Fatalf("found only %d files the build needs", len(needed))
	}
	for _, p := range needed {
		if ignored(patterns, p) {
			t.Errorf("%s is needed by the build but deploy/Dockerfile.dockerignore leaves it out of the context", p)
		}
	}
	// The patterns do keep things out.
	for _, p := range []string{"README.md", "docs/design.md", "docs/dashboard-jobs.png", "deploy/Dockerfile", ".git/HEAD"} {
		if !ignored(patterns, p) {
			t.Errorf("%s should be left out of the context", p)
		}
	}
}

func readIgnore(t *testing.T, file string) []string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out
}

// embedPatterns returns the patterns of the //go:embed directives in a Go
// source file.
func embedPatterns(file string) ([]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "//go:embed "); ok {
			out = append(out, strings.Fields(rest)...)
		}
	}
	return out, nil
}

// ignored reports whether the last pattern matching p (or a directory
// above it) excludes it.
func ignored(patterns []string, p string) bool {
	excluded := false
	for _, pat := range patterns {
		include := strings.HasPrefix(pat, "!")
		pat = strings.TrimPrefix(pat, "!")
		if matchesPathOrParent(pat, p) {
			excluded = !include
		}
	}
	return excluded
}

func matchesPathOrParent(pat, p string) bool {
	for q := p; q != "." && q != "/" && q != ""; q = path.Dir(q) {
		if match(pat, q) {
			return true
		}
	}
	return false
}

// match matches p against pat, where a leading "**/" stands for any number
// of directories.
func match(pat, p string) bool {
	if rest, ok := strings.CutPrefix(pat, "**/"); ok {
		for q := p; ; {
			if match(rest, q) {
				return true
			}
			i := strings.Index(q, "/")
			if i < 0 {
				return false
			}
			q = q[i+1:]
		}
	}
	ok, _ := path.Match(pat, p)
	return ok
}
