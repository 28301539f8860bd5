package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkService_Status measures GET /api/status against the real
// service in process (embedded NATS, the read model on disk), for a
// completed job (answered from the database) and an ongoing one (whose
// image never answers while the benchmark runs), from keep-alive clients
// in parallel. The client's cost is included.
func BenchmarkService_Status(b *testing.B) {
	hang := make(chan struct{})
	b.Cleanup(func() { close(hang) })
	img := newImageServer(b)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	b.Cleanup(slow.Close)
	app := startApp(b, b.TempDir())
	done := app.submit(b, jobBody(visit{storeA, []string{img.URL + "/4x4.png"}, "t"}))
	app.waitDone(b, done)
	ongoing := app.submit(b, jobBody(visit{storeA, []string{slow.URL + "/x.png"}, "t"}))
	for _, tt := range []struct {
		name string
		id   uint64
	}{{"completed", done}, {"ongoing", ongoing}} {
		b.Run(tt.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			url := fmt.Sprintf("%s/api/status?jobid=%d", app.url, tt.id)
			b.ReportAllocs()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
