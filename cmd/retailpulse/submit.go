package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// `retailpulse submit FILE.json|-`: submits a job and prints its id; with
// --wait it then watches the job as `retailpulse watch` does.

// maxSubmitFile bounds what submit reads: the service's default
// --max-body-bytes is 10 MiB; a larger file is sent and refused there.
const maxSubmitFile = 64 << 20

// submit: retailpulse submit FILE.json|- [--url URL] [--token T] [--wait].
func (m *Main) submit(ctx context.Context, args []string) int {
	var cc clientConfig
	fs := flag.NewFlagSet("retailpulse submit", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	cc.register(fs)
	wait := fs.Bool("wait", false, "then watch the job until it completes (as retailpulse watch, with its exit codes)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: retailpulse submit [flags] FILE.json|-\n\nSubmits the job in FILE.json (- reads standard input) and prints its id.\nExit 0 when the job was accepted, 1 when the service refused it (400, 413, 422), 2 on usage\nor connection errors and other answers. With --wait, the exit code is watch's.\n%s\n\nFlags:\n", clientEnvHelp)
		fs.PrintDefaults()
	}
	rest, err := cc.parse(fs, args, m.Getenv)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(m.Stderr, "retailpulse submit: %v\n", err)
		}
		return usageCode(err)
	}
	if len(rest) != 1 {
		fmt.Fprintln(m.Stderr, "retailpulse submit: name one file, or - for standard input")
		return exitUsage
	}
	body, err := m.readJobFile(rest[0])
	if err != nil {
		fmt.Fprintf(m.Stderr, "retailpulse submit: %v\n", err)
		return exitUsage
	}
	id, code := m.postJob(ctx, &cc, body)
	if code != exitOK || !*wait {
		return code
	}
	return m.watchJob(ctx, &cc, id)
}

// readJobFile reads the job from path, or from Stdin for "-".
func (m *Main) readJobFile(path string) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		if m.Stdin == nil {
			return nil, errors.New("no standard input")
		}
		r = m.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	body, err := io.ReadAll(io.LimitReader(r, maxSubmitFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(body) > maxSubmitFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxSubmitFile)
	}
	return body, nil
}

// postJob submits body and prints the job id. It returns the id and the
// exit code.
func (m *Main) postJob(ctx context.Context, cc *clientConfig, body []byte) (uint64, int) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := cc.request(ctx, http.MethodPost, "/api/submit/", bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(m.Stderr, "retailpulse submit: %v\n", err)
		return 0, exitUsage
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(m.Stderr, "retailpulse submit: %v\n", err)
		return 0, exitUsage
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusCreated:
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		fmt.Fprintf(m.Stderr, "retailpulse submit: job refused: %s\n", errorText(resp))
		return 0, exitError
	default:
		fmt.Fprintf(m.Stderr, "retailpulse submit: %s\n", errorText(resp))
		return 0, exitUsage
	}
	var out struct {
		JobID uint64 `json:"job_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.JobID == 0 {
		fmt.Fprintf(m.Stderr, "retailpulse submit: unexpected answer to a submit: %v\n", err)
		return 0, exitUsage
	}
	fmt.Fprintln(m.Stdout, out.JobID)
	return out.JobID, exitOK
}
