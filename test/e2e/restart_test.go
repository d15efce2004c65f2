package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRestartRecovery restarts berth on the same data directory with a
// leftover temporary file from an interrupted fill and the upstream gone:
// the leftover is removed and the cached image is still served.
func TestRestartRecovery(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "crane")
	reg := startRegistry(t, tools["docker-registry"])
	im := pushImage(t, tools["crane"], reg.Addr, "test/app", "v1", 2, false)
	b := startBerth(t, reg.Addr, berthOptions{})

	if dg, _ := getManifest(t, b, im.Repo, im.Tag); dg != im.Digest {
		t.Fatalf("berth serves %s for the tag, the upstream says %s", dg, im.Digest)
	}
	for _, blob := range im.Blobs() {
		checkBlob(t, b, im.Repo, blob)
	}
	if code := b.stop(15 * time.Second); code != 0 {
		t.Fatalf("berth exited with code %d on SIGTERM", code)
	}
	reg.stop(10 * time.Second)

	leftover := filepath.Join(b.DataDir, "tmp", "fill-xyz")
	if err := os.WriteFile(leftover, []byte("half a blob"), 0o600); err != nil {
		t.Fatal(err)
	}
	b2 := startBerth(t, reg.Addr, berthOptions{DataDir: b.DataDir})
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover %s still there after restart (stat: %v)", leftover, err)
	}
	if len(b2.logLines(t, "removed leftover temporary file")) == 0 {
		t.Errorf("berth did not log removing the leftover")
	}

	if dg, _ := getManifest(t, b2, im.Repo, im.Digest); dg != im.Digest {
		t.Errorf("after restart, manifest by digest: %s, want %s", dg, im.Digest)
	}
	if dg, _ := getManifest(t, b2, im.Repo, im.Tag); dg != im.Digest {
		t.Errorf("after restart, manifest by tag: %s, want %s", dg, im.Digest)
	}
	for _, blob := range im.Blobs() {
		checkBlob(t, b2, im.Repo, blob)
	}
	m := scrape(t, b2)
	if objs := metric(m, "berth_store_objects", nil); objs < float64(len(im.Blobs())+1) {
		t.Errorf("berth_store_objects = %v after restart, want >= %d", objs, len(im.Blobs())+1)
	}
}
