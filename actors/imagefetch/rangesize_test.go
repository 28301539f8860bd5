package imagefetch

import (
	"fmt"
	"net/http"
	"testing"
)

func TestRangeFor_Table(t *testing.T) {
	tests := []struct {
		end, largest, want int64
	}{
		{0, 64 << 10, 4 << 10},
		{600, 64 << 10, 4 << 10},           // a header near the start: the smallest range
		{3276, 64 << 10, 4 << 10},          // 3276 + 819 + 1 = 4096
		{3277, 64 << 10, 8 << 10},          // a quarter more no longer fits 4 KiB
		{24<<10 + 700, 64 << 10, 32 << 10}, // W2's photos: EXIF of 24 KiB
		{60_000, 64 << 10, 64 << 10},       // never above the configured size
		{600, 2 << 10, 2 << 10},            // a configured size below 4 KiB stands
	}
	for _, tt := range tests {
		if got := rangeFor(tt.end, tt.largest); got != tt.want {
			t.Errorf("rangeFor(%d, %d) = %d, want %d", tt.end, tt.largest, got, tt.want)
		}
	}
}

func TestRangeSizer_LearnsEachHost(t *testing.T) {
	r := newRangeSizer(64 << 10)
	steps := []struct {
		observe map[string]int64
		times   int
		want    map[string]int64
	}{
		{nil, 0, map[string]int64{"a": 64 << 10, "b": 64 << 10}}, // nothing known: the configured size
		{map[string]int64{"a": 600}, 1, map[string]int64{"a": 4 << 10, "b": 64 << 10}},
		{map[string]int64{"a": 30_000}, 1, map[string]int64{"a": 64 << 10}}, // one long header raises it
		{map[string]int64{"a": 600}, rangeHistory - 1, map[string]int64{"a": 64 << 10}},
		{map[string]int64{"a": 600}, 1, map[string]int64{"a": 4 << 10}}, // forgotten after rangeHistory images
		{map[string]int64{"b": 20_000}, 1, map[string]int64{"a": 4 << 10, "b": 32 << 10}},
	}
	for i, s := range steps {
		for host, end := range s.observe {
			for range s.times {
				r.observe(host, end)
			}
		}
		for host, want := range s.want {
			if got := r.first(host); got != want {
				t.Fatalf("step %d: first(%q) = %d, want %d", i, host, got, want)
			}
		}
	}
}

func TestRangeSizer_Bounded(t *testing.T) {
	r := newRangeSizer(64 << 10)
	for i := range maxRangeHosts + 100 {
		r.observe(fmt.Sprint("host", i), 600)
	}
	if n := len(r.hosts); n != maxRangeHosts {
		t.Fatalf("%d hosts remembered, want the bound %d", n, maxRangeHosts)
	}
}

// The first image of a host is asked for in one 64 KiB range; the next
// ones in ranges as large as the host's headers took. A longer header
// than learnt is read on with a continuation, and raises the size.
func TestFetcher_FirstRangeFollowsTheHostsHeaders(t *testing.T) {
	const photoSize = 2_500_000
	bodies := map[string][]byte{
		"/small.jpg": photo(t, 64, 48, 0, photoSize),
		"/exif.jpg":  photo(t, 64, 48, 24<<10, photoSize),
	}
	hosts := map[string]*rangeHost{}
	mux := http.NewServeMux()
	for path, body := range bodies {
		h := newRangeHost(body)
		hosts[path] = h
		mux.Handle(path, h)
	}
	ts := MustServe(t, mux.ServeHTTP)
	f, rec := rangedFetcher(t, testConfig())
	for _, path := range []string{"/small.jpg", "/small.jpg", "/exif.jpg", "/exif.jpg", "/small.jpg"} {
		if w, h, err := f.Dimensions(t.Context(), ts.URL+path); err != nil || w != 64 || h != 48 {
			t.Fatalf("%s: %dx%d, %v", path, w, h, err)
		}
	}
	equal(t, "ranges of small.jpg", fmt.Sprint(hosts["/small.jpg"].asked()), "[bytes=0-65535 bytes=0-4095 bytes=0-32767]")
	equal(t, "ranges of exif.jpg", fmt.Sprint(hosts["/exif.jpg"].asked()), "[bytes=0-4095 bytes=4096-16383 bytes=16384-65535 bytes=0-32767]")
	_, read := rec.get()
	equal(t, "bytes read", fmt.Sprint(read), fmt.Sprint([]int64{65536, 4096, 65536, 32768, 32768}))
}
