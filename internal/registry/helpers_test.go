package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/metrics"
	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// countingUpstream is go-containerregistry's in-process registry behind
// httptest, counting requests by method and path to prove cache behaviour.
type countingUpstream struct {
	*httptest.Server
	mu     sync.Mutex
	counts map[string]int
	// delay, if set, runs before each blob GET is answered (to widen races).
	delay func()
	down  bool
	// corrupt flips the last byte of every blob body served.
	corrupt bool
	// failBlobs answers blob GETs with 503.
	failBlobs bool
}

func newCountingUpstream(t testing.TB) *countingUpstream {
	t.Helper()
	return newCountingUpstreamWith(t)
}

// newCountingUpstreamWith is newCountingUpstream with registry options (the
// referrers API).
func newCountingUpstreamWith(t testing.TB, opts ...ggcr.Option) *countingUpstream {
	t.Helper()
	u := &countingUpstream{counts: map[string]int{}}
	reg := ggcr.New(append([]ggcr.Option{ggcr.Logger(nilLogger())}, opts...)...)
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.counts[r.Method+" "+r.URL.Path]++
		down, delay := u.down, u.delay
		u.mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if delay != nil && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			delay()
		}
		u.mu.Lock()
		corrupt, failBlobs := u.corrupt, u.failBlobs
		u.mu.Unlock()
		if failBlobs && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/referrers/") && r.URL.Query().Get("artifactType") != "" {
			serveFilteredReferrers(w, r, reg)
			return
		}
		if corrupt && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			rec := httptest.NewRecorder()
			reg.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			if len(body) > 0 {
				body[len(body)-1] ^= 0xff
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(body)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *countingUpstream) count(method, path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counts[method+" "+path]
}

func (u *countingUpstream) total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.counts {
		n += c
	}
	return n
}

func (u *countingUpstream) setDown(down bool) {
	u.mu.Lock()
	u.down = down
	u.mu.Unlock()
}

// pushBlob uploads data monolithically and returns its digest.
func (u *countingUpstream) pushBlob(t testing.TB, repo string, data []byte) digest.Digest {
	t.Helper()
	dg := digest.FromBytes(data)
	resp, err := http.Post(u.URL+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = u.URL + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ := http.NewRequest(http.MethodPut, loc+sep+"digest="+dg.String(), bytes.NewReader(data))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push blob: %s", resp.Status)
	}
	return dg
}

// pushManifest uploads a manifest under ref and returns its digest.
func (u *countingUpstream) pushManifest(t testing.TB, repo, ref, mediaType string, body []byte) digest.Digest {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, u.URL+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(body))
	req.Header.Set("Content-Type", mediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push manifest: %s", resp.Status)
	}
	return digest.FromBytes(body)
}

// image is a pushed test image.
type image struct {
	manifest digest.Digest
	body     []byte
	config   digest.Digest
	layers   []digest.Digest
	data     map[digest.Digest][]byte
}

const ociManifest = "application/vnd.oci.image.manifest.v1+json"

// pushImage pushes an OCI image with layers of the given sizes under repo:tag.
func (u *countingUpstream) pushImage(t testing.TB, repo, tag string, sizes ...int) image {
	t.Helper()
	img := image{data: map[digest.Digest][]byte{}}
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"x":%q}`, t.Name()+tag))
	img.config = u.pushBlob(t, repo, cfg)
	img.data[img.config] = cfg
	var layers []string
	for i, n := range sizes {
		data := randomBytes(n, int64(i+1)*7919+int64(len(tag)))
		dg := u.pushBlob(t, repo, data)
		img.layers = append(img.layers, dg)
		img.data[dg] = data
		layers = append(layers, fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}`, dg, n))
	}
	img.body = []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[%s]}`,
		ociManifest, img.config, len(cfg), strings.Join(layers, ",")))
	img.manifest = u.pushManifest(t, repo, tag, ociManifest, img.body)
	return img
}

// randomBytes is deterministic pseudo-random content (fast, no crypto).
func randomBytes(n int, seed int64) []byte {
	b := make([]byte, n)
	x := uint64(seed)*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// upstreamMap is a fixed Upstreams.
type upstreamMap map[string]*upstream.Client

func (m upstreamMap) Lookup(name string) (*upstream.Client, bool) { c, ok := m[name]; return c, ok }

// stack is a Handler with its store and fetcher, in front of an upstream.
type stack struct {
	h       *Handler
	store   *store.Store
	fetcher *fetch.Coalescer
	metrics *metrics.Metrics
	up      *countingUpstream
	srv     *httptest.Server
	now     time.Time
	nowMu   sync.Mutex
}

func newStack(t testing.TB, up *countingUpstream, ttl time.Duration) *stack {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m := metrics.New()
	fc := fetch.New(st, fetch.Options{Resumes: 2, Observer: metrics.FillObserver{M: m}})
	t.Cleanup(fc.Wait)
	c, err := upstream.New(upstream.Endpoint{Name: "registry.test:5000", URL: up.URL}, upstream.Options{Retries: 1, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{store: st, fetcher: fc, metrics: m, up: up, now: time.Unix(1_700_000_000, 0)}
	s.h = New(Options{
		Store: st, Fetcher: fc, Metrics: m,
		Upstreams:       upstreamMap{"registry.test:5000": c, "docker.io": c},
		DefaultRegistry: "docker.io",
		TagTTL:          ttl,
		MaxHeaderBytes:  64 << 10,
		Now: func() time.Time {
			s.nowMu.Lock()
			defer s.nowMu.Unlock()
			return s.now
		},
	})
	s.srv = httptest.NewServer(s.h)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *stack) advance(d time.Duration) {
	s.nowMu.Lock()
	s.now = s.now.Add(d)
	s.nowMu.Unlock()
}

func (s *stack) do(t testing.TB, method, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, s.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, body
}

func sha(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

func nilLogger() *log.Logger { return log.New(io.Discard, "", 0) }

// setMaxManifestBytes changes the manifest cap as a reload would.
func (h *Handler) setMaxManifestBytes(n int64) {
	l := h.Live()
	l.MaxManifestBytes = n
	h.SetLive(l)
}
