// Command burst is bench/compare.sh's client: N concurrent clients each GET one
// blob R times in a row, all starting together, and it reports wall time,
// throughput and the time to the first byte of each body (median and worst),
// as KEY=VALUE lines for a shell. With -verify every body's sha256 is checked
// against the digest in the URL (costs client CPU: compare.sh verifies the cold
// burst, where correctness is the question, and not the warm one, where the
// client's hashing would cap the figure being measured).
//
//	burst -url http://127.0.0.1:5000/v2/test/big/blobs/sha256:… -n 16 -r 4
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

func main() { os.Exit(run()) }

func run() int {
	url := flag.String("url", "", "blob URL (…/blobs/sha256:<hex>)")
	n := flag.Int("n", 16, "concurrent clients")
	r := flag.Int("r", 1, "sequential GETs per client")
	verify := flag.Bool("verify", false, "check every body's sha256 against the URL's digest")
	timeout := flag.Duration("timeout", 10*time.Minute, "bound on the whole burst")
	flag.Parse()
	hexWant, ok := strings.CutPrefix((*url)[strings.LastIndex(*url, "/")+1:], "sha256:")
	if *url == "" || !ok || *n < 1 || *r < 1 {
		fmt.Fprintln(os.Stderr, "burst: -url …/blobs/sha256:<hex> is required; -n and -r must be >= 1")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res := burst(ctx, *url, *n, *r, hexWant, *verify)
	report(os.Stdout, res)
	if res.failed > 0 {
		return 1
	}
	return 0
}

type results struct {
	ok, failed int
	bytes      int64
	wall       time.Duration
	ttfb       []time.Duration // one per successful GET
	firstErr   error
}

type one struct {
	ttfb  time.Duration
	bytes int64
	err   error
}

func burst(ctx context.Context, url string, n, r int, hexWant string, verify bool) results {
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: n,
		DisableCompression:  true,
		// Blob bodies are large: a bigger read buffer than the default 4 KiB
		// keeps the client from being the bottleneck on loopback.
		ReadBufferSize: 256 << 10,
	}}
	out := make(chan one, n*r)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			buf := make([]byte, 256<<10)
			<-start
			for range r {
				out <- get(ctx, client, url, hexWant, verify, buf)
			}
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	var res results
	res.wall = time.Since(t0)
	close(out)
	for o := range out {
		res.bytes += o.bytes
		if o.err != nil {
			res.failed++
			if res.firstErr == nil {
				res.firstErr = o.err
			}
			continue
		}
		res.ok++
		res.ttfb = append(res.ttfb, o.ttfb)
	}
	return res
}

// get fetches url once. ttfb is the time to the first byte of the body: a
// client that gets headers early and then waits for the fill has not got its
// first byte.
func get(ctx context.Context, client *http.Client, url, hexWant string, verify bool, buf []byte) one {
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return one{err: err}
	}
	resp, err := client.Do(req)
	if err != nil {
		return one{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return one{err: fmt.Errorf("GET: %s", resp.Status)}
	}
	var h hash.Hash
	if verify {
		h = sha256.New()
	}
	var o one
	for {
		k, rerr := resp.Body.Read(buf)
		if k > 0 {
			if o.bytes == 0 {
				o.ttfb = time.Since(t0)
			}
			o.bytes += int64(k)
			if h != nil {
				h.Write(buf[:k])
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			o.err = rerr
			return o
		}
	}
	if resp.ContentLength >= 0 && o.bytes != resp.ContentLength {
		o.err = fmt.Errorf("short body: %d of %d bytes", o.bytes, resp.ContentLength)
	} else if h != nil && hex.EncodeToString(h.Sum(nil)) != hexWant {
		o.err = errors.New("body does not match its digest")
	}
	return o
}

func report(w io.Writer, res results) {
	slices.Sort(res.ttfb)
	median, worst := time.Duration(-1), time.Duration(-1)
	if k := len(res.ttfb); k > 0 {
		median, worst = res.ttfb[k/2], res.ttfb[k-1]
		if k%2 == 0 {
			median = (res.ttfb[k/2-1] + res.ttfb[k/2]) / 2
		}
	}
	mbps := 0.0
	if res.wall > 0 {
		mbps = float64(res.bytes) / 1e6 / res.wall.Seconds()
	}
	errText := ""
	if res.firstErr != nil {
		errText = res.firstErr.Error()
	}
	fmt.Fprintf(w, "OK=%d\nFAILED=%d\nBYTES=%d\nWALL_S=%.3f\nMBPS=%.0f\nTTFB_MEDIAN_S=%.3f\nTTFB_MAX_S=%.3f\nFIRST_ERROR=%q\n",
		res.ok, res.failed, res.bytes, res.wall.Seconds(), mbps, median.Seconds(), worst.Seconds(), errText)
}
