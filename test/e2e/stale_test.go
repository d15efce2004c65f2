package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestStaleWhenUpstreamDown pulls an image through berth, stops the upstream,
// and checks that the tag (past its TTL) and the blobs are still served, that
// the stale answer is counted, and that a blob berth never fetched fails fast
// with 502.
func TestStaleWhenUpstreamDown(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "crane")
	reg := startRegistry(t, tools["docker-registry"])
	im := pushImage(t, tools["crane"], reg.Addr, "test/app", "v1", 2, false)
	other := pushImage(t, tools["crane"], reg.Addr, "test/app", "other", 1, false)
	const ttl = time.Second
	b := startBerth(t, reg.Addr, berthOptions{Args: []string{"--tag-ttl", ttl.String()}})

	if dg, _ := getManifest(t, b, im.Repo, im.Tag); dg != im.Digest {
		t.Fatalf("berth serves %s for the tag, the upstream says %s", dg, im.Digest)
	}
	for _, blob := range im.Blobs() {
		checkBlob(t, b, im.Repo, blob)
	}

	if code := reg.stop(10 * time.Second); code != 0 && code != -1 {
		t.Logf("docker-registry exited with code %d", code)
	}
	time.Sleep(ttl + 500*time.Millisecond)

	t0 := time.Now()
	dg, _ := getManifest(t, b, im.Repo, im.Tag)
	t.Logf("stale tag answered in %s", time.Since(t0).Round(time.Millisecond))
	if dg != im.Digest {
		t.Errorf("with the upstream down berth serves %s for the tag, want the last known %s", dg, im.Digest)
	}
	for _, blob := range im.Blobs() {
		checkBlob(t, b, im.Repo, blob)
	}
	if n := metric(scrape(t, b), "berth_tag_stale_served_total", map[string]string{"upstream": "registry.test"}); n < 1 {
		t.Errorf("berth_tag_stale_served_total{upstream=registry.test} = %v, want >= 1", n)
	}
	if len(b.logLines(t, "serving stale tag: upstream unavailable")) == 0 {
		t.Errorf("berth did not log that it served a stale tag")
	}

	// A blob berth never fetched cannot be served: 502, promptly.
	url := fmt.Sprintf("%s/v2/registry.test/%s/blobs/%s", b.URL, other.Repo, other.Layers[0])
	t0 = time.Now()
	resp, body := do(t, http.MethodGet, url, nil)
	took := time.Since(t0)
	t.Logf("uncached blob with the upstream down: %s in %s", resp.Status, took.Round(time.Millisecond))
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("GET of an uncached blob with the upstream down: %s, want 502: %s", resp.Status, truncate(body, 300))
	} else if code, err := ociError(body); err != nil || code != "UNAVAILABLE" {
		t.Errorf("502 body: code %q, %v", code, err)
	}
	if took > 20*time.Second {
		t.Errorf("the 502 took %s: berth should give up on an unreachable upstream quickly", took)
	}
}
