// Command pullers runs N concurrent HTTP GETs of one blob, checks the sha256
// of every body against the digest, and meanwhile samples the memory of the
// server under test: its cgroup's working set (usage minus inactive file
// cache, as the kubelet counts it), its RSS, and the Go runtime figures on
// its /metrics. It prints its results as KEY=VALUE lines for a shell.
//
//	pullers -url http://127.0.0.1:5000/v2/registry.test/test/big/blobs/sha256:… -n 64 \
//	        -cgroup /sys/fs/cgroup/memory/berth-bench -pid 1234 -metrics http://127.0.0.1:5000/metrics
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() { os.Exit(run()) }

func run() int {
	url := flag.String("url", "", "blob URL (…/blobs/sha256:<hex>)")
	n := flag.Int("n", 1, "concurrent clients")
	want := flag.String("digest", "", "expected digest (default: taken from the URL)")
	cgroup := flag.String("cgroup", "", "memory cgroup directory of the server to sample (v1 or v2)")
	pid := flag.Int("pid", 0, "server PID whose VmRSS to sample")
	metrics := flag.String("metrics", "", "server /metrics URL to sample go_memstats_* from")
	interval := flag.Duration("interval", 50*time.Millisecond, "cgroup and RSS sampling interval")
	metricsEvery := flag.Duration("metrics-interval", 2*time.Second,
		"/metrics sampling interval (each scrape allocates ~150 KB in the server: sample too often and you measure the sampler)")
	timeout := flag.Duration("timeout", 10*time.Minute, "bound on the whole run")
	size := flag.Int64("size", 0, "blob size: if set with -metrics, /metrics is also scraped once when half of all bytes have arrived")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "pullers: -url is required")
		return 2
	}
	if *want == "" {
		*want = (*url)[strings.LastIndex(*url, "/")+1:]
	}
	hexWant, ok := strings.CutPrefix(*want, "sha256:")
	if !ok {
		fmt.Fprintln(os.Stderr, "pullers: only sha256 digests are supported")
		return 2
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	s := &sampler{cgroup: *cgroup, pid: *pid, metrics: *metrics}
	sctx, stop := context.WithCancel(ctx)
	// Heap bytes allocated by the server during the run, from a scrape just
	// before and just after: flat in the blob size if no copy path allocates
	// per chunk. Every scrape in between adds its own ~150 KB.
	var before goStats
	if *metrics != "" {
		before, _ = scrape(ctx, *metrics)
	}
	var sw sync.WaitGroup
	sw.Go(func() { s.loop(sctx, *interval) })
	if *metrics != "" {
		sw.Go(func() { s.metricsLoop(sctx, *metricsEvery) })
		if *size > 0 {
			sw.Go(func() { s.midScrape(sctx, int64(*n)**size/2) })
		}
	}

	res := pull(ctx, *url, *n, hexWant)
	stop()
	sw.Wait()
	s.sampleOnce() // one more after the end
	allocated, scrapes := int64(-1), 0
	if *metrics != "" {
		if after, err := scrape(ctx, *metrics); err == nil && before.allocTotal > 0 {
			allocated, scrapes = after.allocTotal-before.allocTotal, s.metricSamples+1
		}
	}

	var bytesTotal int64
	ok2, failed := 0, 0
	var firstErr string
	var ttfbMax time.Duration
	for _, r := range res.each {
		bytesTotal += r.bytes
		ttfbMax = max(ttfbMax, r.ttfb)
		if r.err == nil {
			ok2++
		} else {
			failed++
			if firstErr == "" {
				firstErr = r.err.Error()
			}
		}
	}
	secs := res.elapsed.Seconds()
	fmt.Printf("CLIENTS=%d\nOK=%d\nFAILED=%d\nBYTES=%d\nELAPSED_S=%.3f\nMBPS=%.1f\nTTFB_MAX_S=%.3f\n",
		*n, ok2, failed, bytesTotal, secs, float64(bytesTotal)/1e6/secs, ttfbMax.Seconds())
	fmt.Printf("SAMPLES=%d\nPEAK_WS=%d\nPEAK_USAGE=%d\nPEAK_RSS=%d\nPEAK_RSS_ANON=%d\nATPEAK_RSS_FILE=%d\nPEAK_THREADS=%d\n",
		s.samples, s.peakWS, s.peakUsage, s.peakRSS, s.peakAnon, s.fileAtPeak, s.peakThreads)
	fmt.Printf("PEAK_HEAP_INUSE=%d\nPEAK_STACK_INUSE=%d\nPEAK_GO_SYS=%d\nPEAK_GOROUTINES=%d\nMETRIC_SAMPLES=%d\n",
		s.peak.heapInuse, s.peak.stackInuse, s.peak.sys, s.peak.goroutines, s.metricSamples)
	fmt.Printf("MID_RSS=%d\nMID_HEAP_INUSE=%d\nMID_STACK_INUSE=%d\nMID_GO_SYS=%d\nMID_GOROUTINES=%d\n",
		s.midRSS, s.mid.heapInuse, s.mid.stackInuse, s.mid.sys, s.mid.goroutines)
	fmt.Printf("ALLOCATED=%d\nALLOC_SCRAPES=%d\n", allocated, scrapes)
	fmt.Printf("FIRST_ERROR=%q\n", firstErr)
	if failed > 0 {
		return 1
	}
	return 0
}

type result struct {
	bytes int64
	ttfb  time.Duration
	err   error
}

type results struct {
	each    []result
	elapsed time.Duration
}

// pull runs n GETs at once, each on its own connection, and hashes each body.
func pull(ctx context.Context, url string, n int, hexWant string) results {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		DisableCompression:  true,
		DisableKeepAlives:   true,
		MaxConnsPerHost:     0,
		MaxIdleConnsPerHost: n,
		ReadBufferSize:      256 << 10,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	out := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			out[i] = one(ctx, client, url, hexWant)
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	return results{each: out, elapsed: time.Since(t0)}
}

func one(ctx context.Context, client *http.Client, url, hexWant string) result {
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return result{err: err}
	}
	resp, err := client.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	ttfb := time.Since(t0)
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return result{ttfb: ttfb, err: fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))}
	}
	h := sha256.New()
	buf := make([]byte, 256<<10)
	n, err := io.CopyBuffer(counter{h}, resp.Body, buf)
	if err != nil {
		return result{bytes: n, ttfb: ttfb, err: fmt.Errorf("after %d bytes: %w", n, err)}
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return result{bytes: n, ttfb: ttfb, err: fmt.Errorf("got %d bytes, Content-Length %d", n, resp.ContentLength)}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != hexWant {
		return result{bytes: n, ttfb: ttfb, err: fmt.Errorf("sha256 %s, want %s", got, hexWant)}
	}
	if dg := resp.Header.Get("Docker-Content-Digest"); dg != "" && dg != "sha256:"+hexWant {
		return result{bytes: n, ttfb: ttfb, err: fmt.Errorf("Docker-Content-Digest %s", dg)}
	}
	return result{bytes: n, ttfb: ttfb}
}

// received counts body bytes across all clients, for the mid-transfer scrape.
var received atomic.Int64

type counter struct{ w io.Writer }

func (c counter) Write(p []byte) (int, error) {
	received.Add(int64(len(p)))
	return c.w.Write(p)
}

// goStats are the Go runtime figures read from /metrics.
type goStats struct {
	heapInuse, stackInuse, sys, goroutines int64
	allocTotal                             int64 // go_memstats_alloc_bytes_total
}

type sampler struct {
	cgroup, metrics string
	pid             int

	mu                         sync.Mutex
	samples, metricSamples     int
	peakWS, peakUsage, peakRSS int64
	peakAnon, fileAtPeak       int64
	peakThreads                int64
	last, peak, mid            goStats
	midRSS                     int64
}

func (s *sampler) loop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	s.sampleOnce()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sampleOnce()
		}
	}
}

func (s *sampler) sampleOnce() {
	var usage, ws int64 = -1, -1
	var rss, anon, file, threads int64 = -1, -1, -1, -1
	if s.cgroup != "" {
		usage, ws = cgroupWS(s.cgroup)
	}
	if s.pid > 0 {
		rss, anon, file, threads = procStatus(s.pid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples++
	s.peakWS = max(s.peakWS, ws)
	s.peakUsage = max(s.peakUsage, usage)
	s.peakAnon = max(s.peakAnon, anon)
	s.peakThreads = max(s.peakThreads, threads)
	if rss > s.peakRSS {
		s.peakRSS, s.fileAtPeak = rss, file
	}
}

func (s *sampler) metricsLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if g, err := scrape(ctx, s.metrics); err == nil {
			s.mu.Lock()
			s.observe(g)
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// observe records one /metrics sample; s.mu is held.
func (s *sampler) observe(g goStats) {
	s.metricSamples++
	s.last = g
	s.peak.heapInuse = max(s.peak.heapInuse, g.heapInuse)
	s.peak.stackInuse = max(s.peak.stackInuse, g.stackInuse)
	s.peak.sys = max(s.peak.sys, g.sys)
	s.peak.goroutines = max(s.peak.goroutines, g.goroutines)
}

// midScrape scrapes /metrics once, when the bytes received pass half: in the
// middle of the transfer, where memory has reached its plateau.
func (s *sampler) midScrape(ctx context.Context, half int64) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for received.Load() < half {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	rss := int64(-1)
	if s.pid > 0 {
		rss, _, _, _ = procStatus(s.pid)
	}
	if g, err := scrape(ctx, s.metrics); err == nil {
		s.mu.Lock()
		s.mid, s.midRSS = g, rss
		s.observe(g)
		s.mu.Unlock()
	}
}

// scrapeClient asks for /metrics uncompressed: promhttp's gzip writer costs
// the server about 1 MB of allocation per scrape, which is not berth's copy
// path and would inflate the heap being measured.
var scrapeClient = &http.Client{
	Timeout:   2 * time.Second,
	Transport: &http.Transport{DisableCompression: true, MaxIdleConns: 1},
}

func scrape(ctx context.Context, url string) (goStats, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return goStats{}, err
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return goStats{}, err
	}
	defer resp.Body.Close()
	var g goStats
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			g.heapInuse = int64(f)
		case "go_memstats_stack_inuse_bytes":
			g.stackInuse = int64(f)
		case "go_memstats_sys_bytes":
			g.sys = int64(f)
		case "go_goroutines":
			g.goroutines = int64(f)
		case "go_memstats_alloc_bytes_total":
			g.allocTotal = int64(f)
		}
	}
	return g, sc.Err()
}

// cgroupWS returns the cgroup's usage and working set (usage less inactive
// file cache), v1 or v2, or -1s when unreadable.
func cgroupWS(dir string) (usage, ws int64) {
	usageFile, key := "memory.usage_in_bytes", "total_inactive_file"
	if _, err := os.Stat(filepath.Join(dir, usageFile)); errors.Is(err, os.ErrNotExist) {
		usageFile, key = "memory.current", "inactive_file"
	}
	u, err := readInt(filepath.Join(dir, usageFile))
	if err != nil {
		return -1, -1
	}
	stat, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return u, -1
	}
	var inactive int64
	for line := range strings.Lines(string(stat)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		if k == key {
			inactive, _ = strconv.ParseInt(v, 10, 64)
			break
		}
	}
	return u, max(u-inactive, 0)
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// procStatus reads VmRSS, RssAnon and RssFile (bytes) and Threads of pid,
// -1 when unreadable.
func procStatus(pid int) (rss, anon, file, threads int64) {
	rss, anon, file, threads = -1, -1, -1, -1
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return rss, anon, file, threads
	}
	for line := range strings.Lines(string(b)) {
		name, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			rss = kb << 10
		case "RssAnon":
			anon = kb << 10
		case "RssFile":
			file = kb << 10
		case "Threads":
			threads = kb
		}
	}
	return rss, anon, file, threads
}
