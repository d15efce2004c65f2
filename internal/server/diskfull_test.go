package server

import (
	"bytes"
	"crypto/rand"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/config"
)

// mountTmpfs mounts a tmpfs of size at dir for the test's life. Without the
// privilege to mount the test is skipped, unless BERTH_E2E=1 demands it.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		if os.Getenv("BERTH_E2E") == "1" {
			t.Fatalf("mounting a tmpfs: %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs (needs root; BERTH_E2E=1 makes this fatal): %v: %s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// pushBlobDigest uploads data to a registry at base and returns its digest.
func pushBlobDigest(t *testing.T, base, repo string, data []byte) digest.Digest {
	t.Helper()
	dg := digest.FromBytes(data)
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = base + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ := http.NewRequest(http.MethodPut, loc+sep+"digest="+dg.String(), bytes.NewReader(data))
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push blob: %s", resp.Status)
	}
	return dg
}

// TestDiskFull: a blob larger than the free space fails cleanly. The client
// sees a failed transfer, nothing of it stays under the data directory,
// cached content is still served, /readyz stays 200, and the log says the
// disk is full.
func TestDiskFull(t *testing.T) {
	mnt := t.TempDir()
	mountTmpfs(t, mnt, "8m")

	reg := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	small := make([]byte, 200<<10)
	big := make([]byte, 12<<20)
	_, _ = rand.Read(small)
	_, _ = rand.Read(big)
	smallDg := pushBlobDigest(t, reg.URL, "test/disk", small)
	bigDg := pushBlobDigest(t, reg.URL, "test/disk", big)

	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(mnt, "data")
	ups := map[string]config.Upstream{"registry.test": {URL: reg.URL}}
	for k, v := range cfg.Upstreams {
		ups[k] = v
	}
	cfg.Upstreams = ups
	logs := &syncBuffer{}
	s, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	runOn(t, s, ln)
	base := "http://" + ln.Addr().String()
	get := func(path string) (int, []byte, error) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, body, err
	}
	waitReady(t, base)
	blob := func(dg digest.Digest) string { return "/v2/test/disk/blobs/" + dg.String() + "?ns=registry.test" }

	if code, body, err := get(blob(smallDg)); code != 200 || !bytes.Equal(body, small) || err != nil {
		t.Fatalf("small blob: %d, %d bytes, %v", code, len(body), err)
	}
	code, body, err := get(blob(bigDg))
	if code == http.StatusOK && err == nil && len(body) == len(big) {
		t.Fatalf("a blob larger than the disk was served whole")
	}
	t.Logf("big blob: status %d, %d bytes, %v", code, len(body), err)
	s.Fetcher.Wait()

	if _, err := s.Store.Stat(bigDg); err == nil {
		t.Error("the failed blob is in the store")
	}
	for _, dir := range []string{"tmp", filepath.Join("blobs", "sha256", bigDg.Encoded()[:2])} {
		entries, _ := os.ReadDir(filepath.Join(cfg.DataDir, dir))
		for _, e := range entries {
			if strings.Contains(e.Name(), bigDg.Encoded()) || dir == "tmp" {
				t.Errorf("left under the data directory: %s/%s", dir, e.Name())
			}
		}
	}
	if code, body, err := get(blob(smallDg)); code != 200 || !bytes.Equal(body, small) || err != nil {
		t.Errorf("cached blob after the disk filled: %d, %d bytes, %v", code, len(body), err)
	}
	if code, _, err := get("/readyz"); code != 200 || err != nil {
		t.Errorf("/readyz after the disk filled: %d, %v", code, err)
	}
	if l := logs.String(); !strings.Contains(l, "disk full") || !strings.Contains(l, cfg.DataDir) {
		t.Errorf("the log does not say the disk is full:\n%s", l)
	}
}

// waitReady polls /readyz until Run has started serving.
func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
