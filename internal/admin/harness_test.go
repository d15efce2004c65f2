package admin_test

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-mirror/berth/internal/admin"
	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/server"
)

// harness is a running berth (server.New + Run) whose registry.test upstream
// is go-containerregistry's in-memory registry, with its admin socket.
type harness struct {
	t        *testing.T
	srv      *server.Server
	cfg      config.Config
	url      string // berth's base URL
	socket   string
	upstream *httptest.Server
	host     string // the upstream's host:port
	// blobGets counts GET /v2/…/blobs/… requests the upstream served;
	// tagHeads, HEAD requests for manifests by tag.
	blobGets, tagHeads atomic.Int64
	logs               *syncBuffer
	stop               func()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newHarness starts berth; edit may change the configuration first, and
// setup the server before it runs.
func newHarness(t *testing.T, edit func(*config.Config), setup ...func(*server.Server)) *harness {
	t.Helper()
	h := &harness{t: t, logs: &syncBuffer{}}
	reg := ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))
	h.upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && !strings.Contains(r.URL.Path, "/uploads") {
			h.blobGets.Add(1)
		}
		if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/") && !strings.Contains(r.URL.Path, "sha256:") {
			h.tagHeads.Add(1)
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(h.upstream.Close)
	h.host = strings.TrimPrefix(h.upstream.URL, "http://")

	dir, err := os.MkdirTemp("", "b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Admin.Socket = filepath.Join(dir, "run", "admin.sock")
	cfg.Upstreams["registry.test"] = config.Upstream{URL: h.upstream.URL}
	cfg.Log.Level = "debug"
	if edit != nil {
		edit(&cfg)
	}
	h.cfg = cfg
	h.socket = cfg.Admin.Socket
	logger := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv, err := server.New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	for _, f := range setup {
		f(srv)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	h.url = "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	h.stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(h.stop)
	h.waitReady()
	return h
}

func (h *harness) waitReady() {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(h.url + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatal("berth did not become ready")
}

// client dials the admin socket.
func (h *harness) client() *admin.Client {
	h.t.Helper()
	c, err := admin.Dial(context.Background(), h.socket)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = c.Close() })
	return c
}

// call calls method and fails the test on error.
func (h *harness) call(c *admin.Client, method string, params, result any) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Call(ctx, method, params, result); err != nil {
		h.t.Fatalf("%s: %v", method, err)
	}
}

// push writes a random image with layers layers of size bytes each to the
// upstream as repo:tag and returns it.
func (h *harness) push(repo, tag string, layers, size int64) v1.Image {
	h.t.Helper()
	img, err := random.Image(size, layers)
	if err != nil {
		h.t.Fatal(err)
	}
	ref, err := name.ParseReference(h.host + "/" + repo + ":" + tag)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		h.t.Fatal(err)
	}
	return img
}

// pushIndex writes an index with one random image per platform.
func (h *harness) pushIndex(repo, tag string, platforms ...v1.Platform) (v1.ImageIndex, map[string]v1.Image) {
	h.t.Helper()
	var idx v1.ImageIndex = empty.Index
	imgs := map[string]v1.Image{}
	for _, p := range platforms {
		img, err := random.Image(64<<10, 2)
		if err != nil {
			h.t.Fatal(err)
		}
		imgs[p.String()] = img
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	ref, err := name.ParseReference(h.host + "/" + repo + ":" + tag)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		h.t.Fatal(err)
	}
	return idx, imgs
}

// pull pulls repo:tag through berth (name registry.test/repo) and reads
// every layer.
func (h *harness) pull(repo, tag string) v1.Image {
	h.t.Helper()
	ref, err := name.ParseReference(strings.TrimPrefix(h.url, "http://") + "/registry.test/" + repo + ":" + tag)
	if err != nil {
		h.t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := img.RawConfigFile(); err != nil {
		h.t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			h.t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			h.t.Fatal(err)
		}
		if err := rc.Close(); err != nil {
			h.t.Fatal(err)
		}
	}
	return img
}

// waitJob polls jobs.get until the job ends.
func (h *harness) waitJob(c *admin.Client, id string) admin.Job {
	h.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var j admin.Job
		h.call(c, "jobs.get", admin.JobParams{Job: id}, &j)
		if j.State != admin.StateRunning {
			return j
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("job %s still running: %+v", id, j)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
