package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"
)

const bigBlobSize = 64 << 20

// TestCoalescedColdFetch sends 16 concurrent GETs for one 64 MiB blob that
// berth does not have: every client gets the whole, correct blob, and the
// upstream serves it exactly once.
func TestCoalescedColdFetch(t *testing.T) {
	tools := requireE2E(t, "docker-registry")
	reg := startRegistry(t, tools["docker-registry"])
	dg := pushBigBlob(t, reg.Addr, "test/big", bigBlobSize)
	b := startBerth(t, reg.Addr, berthOptions{})

	const clients = 16
	url := fmt.Sprintf("%s/v2/registry.test/test/big/blobs/%s", b.URL, dg)
	start := make(chan struct{})
	errs := make([]error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A client (and connection) of its own for each.
			c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableCompression: true}}
			defer c.CloseIdleConnections()
			<-start
			errs[i] = fetchAndHash(c, url, dg, bigBlobSize)
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d concurrent cold GETs of a %d MiB blob took %s", clients, bigBlobSize>>20, time.Since(t0).Round(time.Millisecond))
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}

	if n := reg.settledBlobGets(t, "test/big", dg); n != 1 {
		t.Errorf("the upstream served the blob %d times, want exactly 1 (coalesced)", n)
	}
	m := scrape(t, b)
	count := func(result string) float64 {
		return metric(m, "berth_cache_requests_total", map[string]string{"kind": "blob", "result": result})
	}
	hit, miss, coalesced := count("hit"), count("miss"), count("coalesced")
	t.Logf("berth_cache_requests_total{kind=blob}: miss=%v coalesced=%v hit=%v", miss, coalesced, hit)
	if miss != 1 || hit+miss+coalesced != clients {
		t.Errorf("cache lookups: miss=%v coalesced=%v hit=%v; want 1 miss and %d in all", miss, coalesced, hit, clients)
	}
	if coalesced < 1 {
		t.Errorf("no request joined the fill in progress (coalesced=%v)", coalesced)
	}
}

// fetchAndHash GETs url and checks the status, length and digest of the body.
func fetchAndHash(c *http.Client, url, dg string, size int64) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("status %s: %s", resp.Status, body)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("after %d bytes: %w", n, err)
	}
	if n != size {
		return fmt.Errorf("got %d bytes, want %d", n, size)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != dg {
		return fmt.Errorf("body hashes to %s, want %s", got, dg)
	}
	return nil
}
