package registry

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
)

const (
	ociIndex     = "application/vnd.oci.image.index.v1+json"
	dockerList   = "application/vnd.docker.distribution.manifest.list.v2+json"
	dockerV2     = "application/vnd.docker.distribution.manifest.v2+json"
	dockerSchema = "application/vnd.docker.distribution.manifest.v1+prettyjws"
	fullAccept   = ociIndex + ", " + ociManifest + ", " + dockerList + ", " + dockerV2
)

// negotiatingUpstream is an in-process registry that negotiates manifest
// types as distribution does: a list's tag asked without the list's type in
// Accept answers with its first platform's manifest, and a Docker v2
// manifest asked without its type is converted to schema 1 (with a digest
// that no GET by digest finds). It records the Accept of every manifest
// request, and can hold HEADs of manifests until released.
type negotiatingUpstream struct {
	*countingUpstream
	mu      sync.Mutex
	accepts []string
	hold    chan struct{} // when set, manifest HEADs wait for it to close
	arrived chan struct{} // a held HEAD signals here
}

func newNegotiatingUpstream(t *testing.T) *negotiatingUpstream {
	t.Helper()
	reg := ggcr.New(ggcr.Logger(nilLogger()))
	n := &negotiatingUpstream{countingUpstream: &countingUpstream{counts: map[string]int{}}}
	n.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.countingUpstream.mu.Lock()
		n.counts[r.Method+" "+r.URL.Path]++
		n.countingUpstream.mu.Unlock()
		if !strings.Contains(r.URL.Path, "/manifests/") || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			reg.ServeHTTP(w, r)
			return
		}
		n.mu.Lock()
		n.accepts = append(n.accepts, r.Header.Get("Accept"))
		hold, arrived := n.hold, n.arrived
		n.mu.Unlock()
		if hold != nil && r.Method == http.MethodHead {
			arrived <- struct{}{}
			<-hold
		}
		n.negotiate(reg, w, r)
	}))
	t.Cleanup(n.Close)
	return n
}

func (n *negotiatingUpstream) negotiate(reg http.Handler, w http.ResponseWriter, r *http.Request) {
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec
	}
	stored := get(r.URL.Path)
	ct := stored.Header().Get("Content-Type")
	accept := r.Header.Get("Accept")
	var body []byte
	switch {
	case stored.Code != http.StatusOK || accept == "" || strings.Contains(accept, ct):
		reg.ServeHTTP(w, r)
		return
	case ct == dockerList || ct == ociIndex:
		var idx struct{ Manifests []struct{ Digest string } }
		_ = json.Unmarshal(stored.Body.Bytes(), &idx)
		repo := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/v2/"), "/manifests/", 2)[0]
		child := get("/v2/" + repo + "/manifests/" + idx.Manifests[0].Digest)
		body, ct = child.Body.Bytes(), child.Header().Get("Content-Type")
	case ct == dockerV2:
		body, ct = []byte(`{"schemaVersion":1,"name":"converted","signatures":[]}`), dockerSchema
	default:
		http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Docker-Content-Digest", digest.FromBytes(body).String())
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

func (n *negotiatingUpstream) sentAccepts() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.accepts...)
}

// pushDocker pushes a Docker-v2-typed image for platform arch under ref.
func pushDocker(t *testing.T, u *countingUpstream, repo, ref, arch string) (digest.Digest, []byte) {
	t.Helper()
	cfg := []byte(fmt.Sprintf(`{"architecture":%q,"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`, arch))
	cdg := u.pushBlob(t, repo, cfg)
	layer := randomBytes(100, int64(len(arch)))
	ldg := u.pushBlob(t, repo, layer)
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":%q,"size":%d}]}`,
		dockerV2, cdg, len(cfg), ldg, len(layer)))
	return u.pushManifest(t, repo, ref, dockerV2, body), body
}

// pushList pushes a Docker manifest list of an amd64 and an arm64 image under tag.
func pushList(t *testing.T, u *countingUpstream, repo, tag string) (digest.Digest, []byte) {
	t.Helper()
	var entries []string
	for _, arch := range []string{"amd64", "arm64"} {
		_, body := pushDocker(t, u, repo, "tmp-"+arch, arch)
		dg := u.pushManifest(t, repo, digest.FromBytes(body).String(), dockerV2, body)
		entries = append(entries, fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d,"platform":{"architecture":%q,"os":"linux"}}`,
			dockerV2, dg, len(body), arch))
	}
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[%s]}`, dockerList, strings.Join(entries, ",")))
	return u.pushManifest(t, repo, tag, dockerList, body), body
}

// TestTagResolvedWithFullAccept: whatever a client's Accept, the tag is
// resolved upstream with every modern type, recorded as its real content and
// served with its real type; the tag TTL holds across different Accepts.
func TestTagResolvedWithFullAccept(t *testing.T) {
	u := newNegotiatingUpstream(t)
	listDg, listBody := pushList(t, u.countingUpstream, "test/multi", "v1")
	v2Dg, v2Body := pushDocker(t, u.countingUpstream, "test/docker", "v1", "amd64")
	s := newStack(t, u.countingUpstream, time.Minute)
	const path = "/v2/test/multi/manifests/v1?ns=registry.test:5000"

	steps := []struct {
		name, path, accept string
		wantDg             digest.Digest
		wantBody           []byte
		wantType           string
	}{
		{"list tag, Docker-v2-manifest-only Accept", path, dockerV2, listDg, listBody, dockerList},
		{"list tag, full Accept, within TTL", path, fullAccept, listDg, listBody, dockerList},
		{"list tag, no Accept", path, "", listDg, listBody, dockerList},
		{"list tag, OCI-only Accept", path, ociManifest, listDg, listBody, dockerList},
		{"Docker v2 tag, OCI-only Accept", "/v2/test/docker/manifests/v1?ns=registry.test:5000", ociManifest + ", " + ociIndex, v2Dg, v2Body, dockerV2},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			for _, method := range []string{"GET", "HEAD"} {
				resp, body := s.do(t, method, st.path, "Accept", st.accept)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("%s: status %d: %s", method, resp.StatusCode, body)
				}
				if got := resp.Header.Get("Docker-Content-Digest"); got != st.wantDg.String() {
					t.Errorf("%s: digest %s, want %s", method, got, st.wantDg)
				}
				if got := resp.Header.Get("Content-Type"); got != st.wantType {
					t.Errorf("%s: type %s, want %s", method, got, st.wantType)
				}
				if method == "GET" && string(body) != string(st.wantBody) {
					t.Errorf("body %.100s, want %.100s", body, st.wantBody)
				}
			}
		})
	}
	if tag, err := s.store.Tag("registry.test:5000", "test/multi", "v1"); err != nil || tag.Digest != listDg {
		t.Errorf("tag recorded as %v (%v), want the list %s", tag.Digest, err, listDg)
	}
	if n := u.count("HEAD", "/v2/test/multi/manifests/v1"); n != 1 {
		t.Errorf("upstream HEADs of the tag: %d for four Accepts within the TTL, want 1", n)
	}
	for _, a := range u.sentAccepts() {
		if a != fullAccept && !sameSet(a, fullAccept) {
			t.Errorf("upstream asked with Accept %q, want the full set", a)
		}
	}
}

func sameSet(a, b string) bool {
	set := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, p := range strings.Split(s, ",") {
			m[strings.TrimSpace(p)] = true
		}
		return m
	}
	as, bs := set(a), set(b)
	if len(as) != len(bs) {
		return false
	}
	for k := range as {
		if !bs[k] {
			return false
		}
	}
	return true
}

// TestTagHeadCoalescedAfterTTL: once the TTL has passed, concurrent clients
// (with different Accepts) make one upstream HEAD between them.
func TestTagHeadCoalescedAfterTTL(t *testing.T) {
	u := newNegotiatingUpstream(t)
	img := u.pushImage(t, "test/app", "v1", 100)
	s := newStack(t, u.countingUpstream, time.Minute)
	const path = "/v2/test/app/manifests/v1?ns=registry.test:5000"
	if resp, _ := s.do(t, "GET", path); resp.StatusCode != http.StatusOK {
		t.Fatal(resp.Status)
	}
	s.advance(2 * time.Minute)
	hold, arrived := make(chan struct{}), make(chan struct{}, 16)
	u.mu.Lock()
	u.hold, u.arrived = hold, arrived
	u.mu.Unlock()
	t.Cleanup(func() {
		select {
		case <-hold:
		default:
			close(hold)
		}
	})
	// Count the clients inside the handler, to release the HEAD only when
	// every one of them is there.
	var entered atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		s.h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	const clients = 8
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
			req.Header.Set("Accept", []string{ociManifest, dockerV2, fullAccept, ""}[i%4])
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || string(body) != string(img.body) {
				t.Errorf("client %d: %d", i, resp.StatusCode)
			}
		}()
	}
	<-arrived // one HEAD is upstream, held
	for entered.Load() < clients {
		time.Sleep(time.Millisecond)
	}
	// Every client is in the handler. With the HEAD coalesced none of them
	// sends another, whatever the timing; a version that did not coalesce
	// would send more within this grace, which only widens detection.
	time.Sleep(100 * time.Millisecond)
	close(hold)
	wg.Wait()
	if n := u.count("HEAD", "/v2/test/app/manifests/v1"); n != 2 {
		t.Errorf("upstream HEADs: %d, want 2 (one before the TTL, one for %d concurrent clients after)", n, clients)
	}
}
