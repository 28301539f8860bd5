//go:build unix

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/retailpulse/retailpulse/events"
	"github.com/retailpulse/retailpulse/events/jsstore"
	"github.com/retailpulse/retailpulse/storemaster"
)

// BenchmarkReadSide measures the read side over a long finished history,
// with the real binary as a child process:
//
//   - the first start without a read model database (built from the log),
//   - a restart with the database, and one after kill -9 (time to ready),
//   - 200 status requests/s and 200 /api/visits requests/s (an area and a
//     7-day range) at once, open loop, for RETAILPULSE_HISTORY_LOAD (30s):
//     latency percentiles and errors,
//   - the child's RSS (VmHWM: peak since its start; VmRSS at the end) and
//     the database's size per image.
//
// The history: RETAILPULSE_HISTORY_JOBS jobs (default 1,000,000) of 2
// visits x 5 images to stores of RETAILPULSE_STORES (a store master CSV;
// default the sample), visit times spread over the year before
// 2026-11-30, 2% of images failed; four messages per job (submitted,
// started, the outcomes, completed). RETAILPULSE_HISTORY_DIR keeps the data
// dir (and reuses it when it holds a history): populating a million jobs
// takes minutes. With RETAILPULSE_HISTORY_EXTERNAL_NATS=1 the history is
// served by a nats-server process and the instance runs with --nats-url
// (its database in the data dir's instance/): the cluster's deployment,
// where reads wait for the log's end on every request. Results are printed
// (MEASURED: lines; the benchmark log would cut them) and reported as
// metrics. RETAILPULSE_BENCH_BINARY runs that binary instead of building
// this tree's.
func BenchmarkReadSide(b *testing.B) {
	jobs := envInt("RETAILPULSE_HISTORY_JOBS", 1_000_000)
	load := 30 * time.Second
	if d, err := time.ParseDuration(os.Getenv("RETAILPULSE_HISTORY_LOAD")); err == nil {
		load = d
	}
	stores := storemaster.Sample()
	var storeFlags []string
	if path := os.Getenv("RETAILPULSE_STORES"); path != "" {
		var err error
		if stores, err = storemaster.LoadFile(path); err != nil {
			b.Fatal(err)
		}
		storeFlags = []string{"--stores", path}
	}
	dir := os.Getenv("RETAILPULSE_HISTORY_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	ids := historyIDs(b, dir)
	if len(ids) == 0 {
		start := time.Now()
		ids = populateHistory(b, dir, jobs, stores.Stores())
		measured("populated %d jobs in %s", len(ids), time.Since(start).Round(time.Second))
	}
	finishWork(b, dir)
	b.Logf("history: %d jobs, %d images", len(ids), 10*len(ids))
	bin := os.Getenv("RETAILPULSE_BENCH_BINARY") // another build to measure
	if bin == "" {
		bin = procBuild(b)
	}
	flags := append([]string{"--gpu-pause", "0"}, storeFlags...)
	dataDir := dir
	var natsServer *exec.Cmd
	if os.Getenv("RETAILPULSE_HISTORY_EXTERNAL_NATS") != "" {
		// The deployment of a cluster: NATS in a process of its own (here
		// one node serving the history's store), the instance a client
		// whose data dir holds only its database.
		var url string
		natsServer, url = startNATSServer(b, filepath.Join(dir, "nats"))
		dataDir = filepath.Join(dir, "instance")
		if err := os.MkdirAll(dataDir, 0o750); err != nil {
			b.Fatal(err)
		}
		flags = append(flags, "--nats-url", url)
		measured("external NATS: nats-server with the history, RSS %.1f MiB after its start", pidRSS(b, natsServer.Process.Pid)/(1<<20))
	}

	b.ResetTimer()
	for range b.N {
		if _, err := os.Stat(filepath.Join(dataDir, readModelFile)); err != nil {
			start := time.Now()
			c := procStartWithin(b, 2*time.Hour, bin, "cold", dataDir, flags...)
			measured("first start without a database: ready after %s (built from the log)", time.Since(start).Round(time.Second))
			c.stop(b, time.Minute)
		}
		start := time.Now()
		c := procStartWithin(b, 5*time.Minute, bin, "restart", dataDir, flags...)
		restart := time.Since(start)
		measured("restart with the database: ready after %s", restart.Round(time.Millisecond))
		b.ReportMetric(restart.Seconds(), "s/restart")
		_, idle := procMemory(b, c)
		measured("child RSS when ready: %.1f MiB (%s)", idle/(1<<20), goMemory(c))

		areas := map[string]bool{}
		for _, s := range stores.Stores() {
			areas[s.AreaCode] = true
		}
		var areaList []string
		for a := range areas {
			areaList = append(areaList, a)
		}
		sort.Strings(areaList)
		year := time.Date(2025, 11, 30, 0, 0, 0, 0, time.UTC)
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
		get := func(path string) error {
			resp, err := client.Get(c.url + path)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := bufio.NewReader(resp.Body).WriteTo(discard{}); err != nil {
				return err
			}
			if resp.StatusCode != 200 {
				return fmt.Errorf("%s: %d", path, resp.StatusCode)
			}
			return nil
		}
		var wg sync.WaitGroup
		var status, visits loadResult
		wg.Go(func() {
			status = openLoop(200, load, func(r *rand.Rand) error {
				return get(fmt.Sprintf("/api/status?jobid=%d", ids[r.IntN(len(ids))]))
			})
		})
		wg.Go(func() {
			visits = openLoop(200, load, func(r *rand.Rand) error {
				from := year.AddDate(0, 0, r.IntN(358))
				return get(fmt.Sprintf("/api/visits?area=%s&startdate=%s&enddate=%s", areaList[r.IntN(len(areaList))],
					from.Format(time.DateOnly), from.AddDate(0, 0, 6).Format(time.DateOnly)))
			})
		})
		wg.Wait()
		hwm, rss := procMemory(b, c)
		measured("status at 200/s: %s", status)
		measured("visits (area, 7 days) at 200/s: %s", visits)
		measured("child RSS: peak %.1f MiB since start, %.1f MiB at the end of the load (%s)", hwm/(1<<20), rss/(1<<20), goMemory(c))
		b.ReportMetric(status.p(0.99).Seconds()*1000, "status-p99-ms")
		b.ReportMetric(visits.p(0.99).Seconds()*1000, "visits-p99-ms")
		b.ReportMetric(hwm/(1<<20), "peak-rss-MiB")
		if natsServer != nil {
			measured("external NATS: nats-server RSS %.1f MiB at the end of the load", pidRSS(b, natsServer.Process.Pid)/(1<<20))
		}
		dbBytes := fileSize(filepath.Join(dataDir, readModelFile)) + fileSize(filepath.Join(dataDir, readModelFile+"-wal"))
		measured("database %.1f MiB, %.0f bytes per image; event log %.1f MiB",
			float64(dbBytes)/(1<<20), float64(dbBytes)/float64(10*len(ids)), float64(dirSize(filepath.Join(dir, "nats")))/(1<<20))
		b.ReportMetric(float64(dbBytes)/float64(10*len(ids)), "db-bytes/image")

		c.kill()
		start = time.Now()
		c = procStartWithin(b, 5*time.Minute, bin, "after kill -9", dataDir, flags...)
		measured("restart after kill -9: ready after %s", time.Since(start).Round(time.Millisecond))
		if err := get(fmt.Sprintf("/api/status?jobid=%d", ids[len(ids)-1])); err != nil {
			b.Fatal(err)
		}
		c.stop(b, time.Minute)
	}
}

// measured prints one result line of BenchmarkReadSide.
func measured(format string, a ...any) {
	fmt.Printf("MEASURED: "+format+"\n", a...)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// loadResult is an open-loop run's latencies (from each request's
// scheduled time) and errors.
type loadResult struct {
	lat    []time.Duration
	errors int
	first  error
}

func (r loadResult) p(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(q*float64(len(r.lat))))]
}

func (r loadResult) String() string {
	return fmt.Sprintf("%d requests, p50 %.2fms p99 %.2fms max %.2fms, %d errors (%v)", len(r.lat),
		ms(r.p(0.5)), ms(r.p(0.99)), ms(r.p(1)), r.errors, r.first)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// openLoop calls fn rps times a second for d, each call on its own
// goroutine at its scheduled time whatever the earlier ones do, and
// measures each from that time.
func openLoop(rps int, d time.Duration, fn func(*rand.Rand) error) loadResult {
	var mu sync.Mutex
	var res loadResult
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rps)
	start := time.Now()
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if at.Sub(start) >= d {
			break
		}
		time.Sleep(time.Until(at))
		wg.Go(func() {
			err := fn(rand.New(rand.NewPCG(uint64(i), 1)))
			lat := time.Since(at)
			mu.Lock()
			res.lat = append(res.lat, lat)
			if err != nil {
				res.errors++
				if res.first == nil {
					res.first = err
				}
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	sort.Slice(res.lat, func(i, j int) bool { return res.lat[i] < res.lat[j] })
	return res
}

// startNATSServer runs nats-server (built from the module this project
// requires) with JetStream on storeDir, which an embedded server wrote,
// until the benchmark ends, and returns it and its client URL.
func startNATSServer(tb testing.TB, storeDir string) (*exec.Cmd, string) {
	bin := filepath.Join(tb.TempDir(), "nats-server")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		tb.Fatalf("build nats-server: %v\n%s", err, out)
	}
	addr := procFreeAddr(tb)
	_, port, _ := strings.Cut(addr, ":")
	// As the embedded server: 8 MiB messages (a large job is one message).
	conf := filepath.Join(tb.TempDir(), "nats.conf")
	text := fmt.Sprintf("host: 127.0.0.1\nport: %s\nmax_payload: 8MB\njetstream {\n  store_dir: %q\n}\n", port, storeDir)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	out := &procBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if tb.Failed() {
			tb.Logf("nats-server output:\n%s", out)
		}
	})
	url := "nats://" + addr
	deadline := time.Now().Add(5 * time.Minute)
	for {
		nc, err := nats.Connect(url)
		if err == nil {
			js, _ := jetstream.New(nc)
			_, err = js.Stream(context.Background(), "RETAILPULSE")
			nc.Close()
			if err == nil {
				return cmd, url
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("nats-server on %s: %v\n%s", storeDir, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pidRSS reads a process's resident set.
func pidRSS(tb testing.TB, pid int) float64 {
	_, rss := pidMemory(tb, pid)
	return rss
}

// procMemory reads the child's peak and current resident set.
func procMemory(tb testing.TB, c *procChild) (hwm, rss float64) {
	return pidMemory(tb, c.cmd.Process.Pid)
}

// pidMemory reads a process's peak and current resident set.
func pidMemory(tb testing.TB, pid int) (hwm, rss float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == "kB" {
			n, _ := strconv.ParseFloat(f[1], 64)
			switch f[0] {
			case "VmHWM:":
				hwm = n * 1024
			case "VmRSS:":
				rss = n * 1024
			}
		}
	}
	return hwm, rss
}

// goMemory summarises the child's Go memory from its /metrics.
func goMemory(c *procChild) string {
	_, body, err := c.get("/metrics")
	if err != nil {
		return err.Error()
	}
	var out []string
	for line := range strings.Lines(string(body)) {
		for _, name := range []string{"go_memstats_heap_inuse_bytes", "go_memstats_sys_bytes", "go_goroutines"} {
			if rest, ok := strings.CutPrefix(line, name+" "); ok {
				v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
				if strings.HasSuffix(name, "bytes") {
					out = append(out, fmt.Sprintf("%s %.1f MiB", strings.TrimPrefix(name, "go_memstats_"), v/(1<<20)))
				} else {
					out = append(out, fmt.Sprintf("%s %.0f", name, v))
				}
			}
		}
	}
	return strings.Join(out, ", ")
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// finishWork acknowledges every job on dir's work queue, as the owners
// that completed them would have: a finished history leaves nothing for
// the service's engine to take.
func finishWork(tb testing.TB, dir string) {
	ns, err := jsstore.StartServer(jsstore.ServerConfig{Name: "populate", StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	nc, err := jsstore.ConnectInProcess(ns, "populate")
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	log, err := jsstore.Open(ctx, nc, jsstore.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	cons, err := log.JetStream().Consumer(ctx, log.StreamName(), jsstore.WorkConsumer)
	if err != nil {
		tb.Fatal(err)
	}
	acked := 0
	for {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			tb.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			if err := m.Ack(); err != nil {
				tb.Fatal(err)
			}
			n++
		}
		if batch.Error() != nil && !errors.Is(batch.Error(), nats.ErrTimeout) {
			tb.Fatal(batch.Error())
		}
		acked += n
		if n == 0 {
			break
		}
	}
	ws, err := log.WorkState(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if acked > 0 || ws.AckPending > 0 || ws.Waiting > 0 {
		measured("work queue: acknowledged %d jobs; now %+v", acked, ws)
	}
}

// historyIDs returns the job ids a populated data dir holds (from its
// history.ids), or none.
func historyIDs(tb testing.TB, dir string) []uint64 {
	b, err := os.ReadFile(filepath.Join(dir, "history.ids"))
	if err != nil {
		return nil
	}
	var ids []uint64
	for f := range strings.FieldsSeq(string(b)) {
		id, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			tb.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// populateHistory writes jobs finished jobs into dir's event log (lazy
// fsync: what is measured is reading them) and lists their ids in
// dir/history.ids.
func populateHistory(tb testing.TB, dir string, jobs int, stores []storemaster.Store) []uint64 {
	ns, err := jsstore.StartServer(jsstore.ServerConfig{Name: "populate", StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	nc, err := jsstore.ConnectInProcess(ns, "populate")
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	log, err := jsstore.Open(ctx, nc, jsstore.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	end := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	var (
		mu   sync.Mutex
		ids  []uint64
		wg   sync.WaitGroup
		work = make(chan int)
		done = 0
	)
	for range 16 {
		wg.Go(func() {
			for j := range work {
				r := rand.New(rand.NewPCG(uint64(j), 2))
				sub := &events.JobSubmitted{Count: 2, SubmittedAt: end}
				var outcomes []events.Event
				var failed []events.StoreError
				failedStore := map[string]bool{}
				for v := range 2 {
					store := stores[r.IntN(len(stores))].ID
					at := end.Add(-time.Duration(r.Int64N(int64(365 * 24 * time.Hour))))
					visit := events.Visit{StoreID: store, VisitTime: at.Format(time.RFC3339)}
					for i := range 5 {
						url := fmt.Sprintf("https://images.example.com/visits/%d/%d/%d.jpg", j, v, i)
						visit.ImageURLs = append(visit.ImageURLs, url)
						ref := events.ImageRef{Visit: v, Index: i}
						if r.IntN(50) == 0 {
							f := &events.ImageFailed{ImageRef: ref, StoreID: store, URL: url, Reason: "http 404", At: end}
							outcomes = append(outcomes, f)
							if !failedStore[store] {
								failedStore[store] = true
								failed = append(failed, events.StoreError{StoreID: store, Error: f.StoreErrorText()})
							}
						} else {
							outcomes = append(outcomes, &events.ImageProcessed{ImageRef: ref, StoreID: store, Width: 640, Height: 480, Perimeter: 2240, At: end})
						}
					}
					sub.Visits = append(sub.Visits, visit)
				}
				id, _, err := log.Submit(ctx, sub, "")
				if err != nil {
					tb.Error(err)
					return
				}
				token := "populate-" + strconv.FormatUint(id, 10)
				fence, err := log.Append(ctx, id, events.KindStarted, 0, token+"/0", &events.JobStarted{Attempt: 1, Owner: "populate", At: end})
				if err == nil {
					fence, err = log.Append(ctx, id, events.KindImages, fence, token+"/"+strconv.FormatUint(fence, 10), outcomes...)
				}
				if err == nil {
					c := &events.JobCompleted{Status: events.StatusCompleted, Processed: 10 - len(failed), Failed: len(failed), At: end}
					if len(failed) > 0 {
						c.Status, c.Errors = events.StatusFailed, failed
					}
					_, err = log.Append(ctx, id, events.KindCompleted, fence, token+"/"+strconv.FormatUint(fence, 10), c)
				}
				if err != nil {
					tb.Error(err)
					return
				}
				mu.Lock()
				ids = append(ids, id)
				if done++; done%100_000 == 0 {
					tb.Logf("populated %d jobs", done)
				}
				mu.Unlock()
			}
		})
	}
	for j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()
	if tb.Failed() {
		tb.FailNow()
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var sb strings.Builder
	for _, id := range ids {
		sb.WriteString(strconv.FormatUint(id, 10))
		sb.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join(dir, "history.ids"), []byte(sb.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	return ids
}
