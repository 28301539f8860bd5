package imagefetch

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
)

// BenchmarkFetcher_Dimensions fetches a 640x480 JPEG's dimensions from a
// loopback server per op, with the service's fetcher defaults (per-host
// limit 32): one request at a time, and 256 at once to one host. The
// body is padded after the image's end marker, as a large photo's scan data
// follows its header. The server ignores Range, so the fetcher reads the
// whole body up to the header and drains the rest of a small one.
// conns/op counts the TCP connections the server accepted per image.
func BenchmarkFetcher_Dimensions(b *testing.B) {
	img := encodeJPEG(b, 640, 480)
	for _, size := range []int{len(img), 100_000} {
		body := append(append([]byte(nil), img...), make([]byte, max(0, size-len(img)))...)
		for _, par := range []int{1, 256} {
			b.Run(fmt.Sprintf("bytes=%d/concurrent=%d", len(body), par), func(b *testing.B) {
				benchFetch(b, serveBytes("image/jpeg", body), 640, 480, par)
			})
		}
	}
}

// BenchmarkFetcher_Photo fetches a camera-like photo's dimensions: 2.5 MB,
// its frame header after 24 KiB of metadata, 256 at once to one host. The
// host honours Range (the fetcher asks for 64 KiB and drains it, keeping
// the connection) or ignores it (the fetcher reads the whole body up to
// the header and closes the connection). served/op is the body bytes the
// host wrote per image.
func BenchmarkFetcher_Photo(b *testing.B) {
	body := photo(b, 640, 480, 24<<10, 2_500_000)
	for _, tt := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"host=honours-range", newRangeHost(body).ServeHTTP},
		{"host=ignores-range", serveBytes("image/jpeg", body)},
	} {
		b.Run(tt.name+"/concurrent=256", func(b *testing.B) {
			benchFetch(b, tt.h, 640, 480, 256)
		})
	}
}

// BenchmarkFetcher_DrainBaseline is the comparison for the above: a plain
// client that reads the header the same way, then drains the rest of the
// body so its connection is reused. It is not the fetcher; it shows what
// keeping connections alive would be worth.
func BenchmarkFetcher_DrainBaseline(b *testing.B) {
	body := append(encodeJPEG(b, 640, 480), make([]byte, 100_000)...)[:100_000]
	b.Run(fmt.Sprintf("bytes=%d/concurrent=256", len(body)), func(b *testing.B) {
		var conns atomic.Int64
		ts := MustServeUnstarted(b, serveBytes("image/jpeg", body))
		ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
		ts.Start()
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
		b.Cleanup(client.CloseIdleConnections)
		var n atomic.Int64
		b.ReportAllocs()
		b.SetParallelism(max(1, 256/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := client.Get(ts.URL + "/" + strconv.FormatInt(n.Add(1), 10) + ".jpg")
				if err != nil {
					b.Error(err)
					return
				}
				if _, _, err := decodeHeader(resp.Body, 16<<20); err != nil {
					b.Error(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
		b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "images/s")
		b.ReportMetric(float64(conns.Load())/float64(n.Load()), "conns/op")
	})
}

func benchFetch(b *testing.B, h http.HandlerFunc, width, height, par int) {
	var conns, served atomic.Int64
	ts := MustServeUnstarted(b, func(w http.ResponseWriter, r *http.Request) {
		h(byteCounter{w, &served}, r)
	})
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	f := MustNewFetcher(b, Config{AllowPrivateNetworks: true})
	var n atomic.Int64
	fetch := func() {
		url := ts.URL + "/" + strconv.FormatInt(n.Add(1), 10) + ".jpg"
		if w, h, err := f.Dimensions(context.Background(), url); err != nil || w != width || h != height {
			b.Errorf("%dx%d %v", w, h, err)
		}
	}
	b.ReportAllocs()
	if par == 1 {
		for b.Loop() {
			fetch()
		}
	} else {
		b.SetParallelism(max(1, par/runtime.GOMAXPROCS(0))) // goroutines = parallelism x GOMAXPROCS
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				fetch()
			}
		})
	}
	b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "images/s")
	b.ReportMetric(float64(conns.Load())/float64(n.Load()), "conns/op")
	b.ReportMetric(float64(served.Load())/float64(n.Load()), "served/op")
}
