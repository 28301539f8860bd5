package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// apiClient talks to the target service.
type apiClient struct {
	base string
	http *http.Client
}

func newAPIClient(base string) *apiClient {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
	}
	return &apiClient{base: strings.TrimRight(base, "/"), http: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}
}

func (c *apiClient) close() { c.http.CloseIdleConnections() }

func (c *apiClient) do(ctx context.Context, method, path string, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, resp.Header, b, err
}

// submit posts a job, retrying 503s (the service's back-pressure) after
// their Retry-After, capped at one second, up to 20 times.
func (c *apiClient) submit(ctx context.Context, body []byte) (id uint64, retries int, err error) {
	for ; ; retries++ {
		code, hdr, resp, err := c.do(ctx, http.MethodPost, "/api/submit/", body)
		if err != nil {
			return 0, retries, err
		}
		if code == http.StatusServiceUnavailable && retries < 20 {
			if err := sleep(ctx, retryAfter(hdr)); err != nil {
				return 0, retries, err
			}
			continue
		}
		if code != http.StatusCreated {
			return 0, retries, fmt.Errorf("submit: %d %s", code, snippet(resp))
		}
		var out struct {
			JobID *uint64 `json:"job_id"`
		}
		if err := json.Unmarshal(resp, &out); err != nil || out.JobID == nil {
			return 0, retries, fmt.Errorf("submit: answer %s: no job_id", snippet(resp))
		}
		return *out.JobID, retries, nil
	}
}

func retryAfter(h http.Header) time.Duration {
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s >= 0 {
		return min(time.Duration(s)*time.Second, time.Second)
	}
	return 100 * time.Millisecond
}

// jobStatus is a status answer. job_id is a string in the spec; a number
// is accepted too.
type jobStatus struct {
	Status string          `json:"status"`
	JobID  json.RawMessage `json:"job_id"`
	Error  []storeError    `json:"error"`
}

type storeError struct {
	StoreID string `json:"store_id"`
	Error   string `json:"error"`
}

func (c *apiClient) status(ctx context.Context, id uint64) (int, jobStatus, error) {
	code, _, body, err := c.do(ctx, http.MethodGet, "/api/status?jobid="+strconv.FormatUint(id, 10), nil)
	var st jobStatus
	if err == nil && code == http.StatusOK {
		if err = json.Unmarshal(body, &st); err != nil {
			err = fmt.Errorf("status of job %d: %s: %v", id, snippet(body), err)
		}
	}
	return code, st, err
}

// statusCode issues one status request and discards the answer.
func (c *apiClient) statusCode(ctx context.Context, id uint64) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/api/status?jobid="+strconv.FormatUint(id, 10), nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
