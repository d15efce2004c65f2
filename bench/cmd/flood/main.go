// Command flood is bench/memory.sh's hostile client for state that grows per
// distinct request: it sends N GETs, C at a time, each to the URL with %d
// replaced by the request's number, optionally with Basic credentials whose
// password carries the number too (N distinct credentials). Meanwhile it
// samples the server's open descriptors (/proc/PID/fd) and its TCP
// connections to one port (the upstream's, from /proc/net/tcp{,6}). It prints
// the answers by status and the peaks as KEY=VALUE lines for a shell.
//
//	flood -url 'http://127.0.0.1:5000/v2/priv.test/secret/app/manifests/v%d' -n 3000 -c 32 \
//	      -user alice -password 'wrong-%d' -pid 1234 -upstream-port 5001
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() { os.Exit(run()) }

func run() int {
	url := flag.String("url", "", "URL; %d is replaced by the request's number")
	n := flag.Int("n", 1000, "requests")
	c := flag.Int("c", 16, "concurrent requests")
	user := flag.String("user", "", "Basic auth user (none if empty)")
	password := flag.String("password", "", "Basic auth password; %d is replaced by the request's number")
	pid := flag.Int("pid", 0, "server PID whose fds and upstream connections to sample")
	upPort := flag.Int("upstream-port", 0, "count the server's TCP connections to this port")
	timeout := flag.Duration("timeout", 5*time.Minute, "bound on the whole run")
	flag.Parse()
	if *url == "" || *n < 1 || *c < 1 {
		fmt.Fprintln(os.Stderr, "flood: -url is required; -n and -c must be >= 1")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var peakFDs, peakConns atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	if *pid > 0 {
		sampler.Add(1)
		go func() {
			defer sampler.Done()
			sample(*pid, *upPort, &peakFDs, &peakConns, stop)
		}()
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *c}}
	var next atomic.Int64
	var mu sync.Mutex
	codes := map[string]int{}
	start := time.Now()
	var wg sync.WaitGroup
	for range *c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(*n); i = next.Add(1) {
				code := get(ctx, client, strings.ReplaceAll(*url, "%d", strconv.FormatInt(i, 10)), *user,
					strings.ReplaceAll(*password, "%d", strconv.FormatInt(i, 10)))
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	sampler.Wait()

	keys := make([]string, 0, len(codes))
	for k := range codes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", k, codes[k]))
	}
	fmt.Printf("CODES=%s\nELAPSED_S=%.1f\n", strings.Join(parts, ","), elapsed.Seconds())
	if *pid > 0 {
		fmt.Printf("PEAK_FDS=%d\nPEAK_UPSTREAM_CONNS=%d\n", peakFDs.Load(), peakConns.Load())
	}
	return 0
}

func get(ctx context.Context, client *http.Client, url, user, password string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "error"
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "error"
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return strconv.Itoa(resp.StatusCode)
}

// sample records the peaks of pid's open descriptors and of its TCP
// connections to port until stop is closed.
func sample(pid, port int, fds, conns *atomic.Int64, stop <-chan struct{}) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			maxInto(fds, int64(len(ents)))
		}
		if port > 0 {
			maxInto(conns, int64(countConns(pid, port)))
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func maxInto(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// countConns counts the established TCP connections to port in pid's
// network namespace (/proc/PID/net/tcp and tcp6): on loopback with one
// client of that port, the server's upstream connections.
func countConns(pid, port int) int {
	n := 0
	want := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"tcp", "tcp6"} {
		fh, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st ...; st 01 is ESTABLISHED.
			if len(fields) > 3 && strings.HasSuffix(fields[2], want) && fields[3] == "01" {
				n++
			}
		}
		_ = fh.Close()
	}
	return n
}
