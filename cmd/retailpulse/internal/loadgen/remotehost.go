package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// HostConfig describes the images an image host serves.
type HostConfig struct {
	ImageBytes     int
	Photo          bool
	HeaderOffsetKB int
	IgnoresRange   bool
}

// spec is the image the host serves.
func (hc HostConfig) spec() imageSpec {
	return imageSpec{size: hc.ImageBytes, photo: hc.Photo, headerBytes: hc.HeaderOffsetKB << 10}
}

// ServeImages runs an image host, the same one Run starts in process, on
// each of addrs (host:port; port 0 picks one) until ctx ends, so that the
// images come from a process of their own. It writes one line naming the
// hosts' base URLs to out once they listen. The host reports its counters
// at /_stats, which Run reads when Config.ImageHostURLs names the host.
func ServeImages(ctx context.Context, hc HostConfig, addrs []string, out io.Writer) error {
	h, err := listenImageHost(hc.spec(), addrs, hc.IgnoresRange)
	if err != nil {
		return err
	}
	defer h.close()
	fmt.Fprintf(out, "image host serving %d-byte images at %v (/img/<n>.jpg, /missing/<n>.jpg; counters at %s)\n", len(h.body), h.urls, statsPath)
	<-ctx.Done()
	return nil
}

// remoteHost is an image host in another process, reached at urls (ports
// of one ServeImages process).
type remoteHost struct {
	urls   []string
	client *http.Client
}

func (h *remoteHost) stats(ctx context.Context) (hostStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.urls[0]+statsPath, nil)
	if err != nil {
		return hostStats{}, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return hostStats{}, fmt.Errorf("image host: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return hostStats{}, fmt.Errorf("image host: %s answered %s", h.urls[0]+statsPath, resp.Status)
	}
	var st hostStats
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return hostStats{}, fmt.Errorf("image host: %s: %w", h.urls[0]+statsPath, err)
	}
	return st, nil
}
