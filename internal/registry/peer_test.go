package registry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/peer"
	"github.com/berth-mirror/berth/internal/upstream"
)

type peerStack struct {
	*stack
	peer     *httptest.Server
	verified atomic.Int32
	results  map[string]int
}

// newPeerStack is the peer API over a stack's store and fetcher. Its
// Options carry a Source that fails the test if a request reaches it not
// marked as a peer's (fetch.Request.From): the cluster source must never
// forward a peer's request to another owner.
func newPeerStack(t *testing.T, up *countingUpstream, popts ...func(*peer.ServerOptions)) *peerStack {
	t.Helper()
	s := newStack(t, up, time.Minute)
	c, err := upstream.New(upstream.Endpoint{Name: "registry.test:5000", URL: up.URL}, upstream.Options{Retries: 1, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ps := &peerStack{stack: s, results: map[string]int{}}
	markedFromPeer := func(up fetch.Source) fetch.Source {
		return fetch.SourceFunc(func(ctx context.Context, req fetch.Request, off int64) (io.ReadCloser, fetch.Meta, error) {
			if req.From == "" {
				t.Error("a peer's request reached the cluster source unmarked: it would be forwarded to another owner")
				return nil, fetch.Meta{}, errors.New("recursion")
			}
			return up.Open(ctx, req, off)
		})
	}
	po := peer.ServerOptions{
		Verify: func(r *http.Request, dg string) error {
			ps.verified.Add(1)
			if r.Header.Get("Authorization") == "" {
				return peer.ErrNoToken
			}
			if r.Header.Get("Authorization") != "Berth-Peer good" {
				return errors.New("bad token")
			}
			return nil
		},
		Served: func(result string, _ int64) { ps.results[result]++ },
	}
	for _, o := range popts {
		o(&po)
	}
	p := peer.NewServer(New(Options{
		Store: s.store, Fetcher: s.fetcher, Metrics: s.metrics,
		Upstreams: upstreamMap{"registry.test:5000": c},
		Source:    markedFromPeer,
	}), po)
	ps.peer = httptest.NewServer(p)
	t.Cleanup(ps.peer.Close)
	return ps
}

func (ps *peerStack) get(t *testing.T, method, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, ps.peer.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestPeerAPI(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "team/app", "v1", 300<<10)
	layer := img.layers[0]
	q := "?registry=registry.test:5000&repository=team/app"
	auth := []string{"Authorization", "Berth-Peer good"}

	ps := newPeerStack(t, up)

	tests := []struct {
		name     string
		method   string
		path     string
		hdr      []string
		status   int
		body     string // prefix, when set
		upstream int    // upstream requests it may cause
	}{
		{"no token", "GET", "/peer/v1/blobs/" + layer.String() + q, nil, 401, "", 0},
		{"bad token", "GET", "/peer/v1/blobs/" + layer.String() + q, []string{"Authorization", "Berth-Peer forged"}, 403, "", 0},
		{"unknown registry", "GET", "/peer/v1/blobs/" + layer.String() + "?registry=evil.example&repository=x", auth, 403, "", 0},
		{"no query", "GET", "/peer/v1/blobs/" + layer.String(), auth, 400, "", 0},
		{"bad digest", "GET", "/peer/v1/blobs/sha256:xyz" + q, auth, 400, "", 0},
		{"not the API", "GET", "/peer/v1/tags/x" + q, auth, 404, "", 0},
		{"POST", "POST", "/peer/v1/blobs/" + layer.String() + q, auth, 405, "", 0},
		{"blob, filled from the upstream", "GET", "/peer/v1/blobs/" + layer.String() + q, auth, 200, string(img.data[layer]), 2}, // the blob, and a /v2/ ping
		{"blob again: from the store", "GET", "/peer/v1/blobs/" + layer.String() + q, auth, 200, string(img.data[layer]), 0},
		{"resume with Range", "GET", "/peer/v1/blobs/" + layer.String() + q, append([]string{"Range", "bytes=1000-"}, auth...), 206, string(img.data[layer][1000:]), 0},
		{"manifest by digest", "GET", "/peer/v1/manifests/" + img.manifest.String() + q, append([]string{"Accept", ociManifest}, auth...), 200, string(img.body), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := up.total()
			resp, body := ps.get(t, tt.method, tt.path, tt.hdr...)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if tt.body != "" && body != tt.body {
				t.Errorf("body differs (%d bytes, want %d)", len(body), len(tt.body))
			}
			if resp.StatusCode >= 400 && !strings.Contains(body, `"errors"`) {
				t.Errorf("error body is not an OCI error: %s", body)
			}
			if got := up.total() - n; got > tt.upstream {
				t.Errorf("%d upstream requests, want at most %d", got, tt.upstream)
			}
		})
	}
	if up.count("GET", "/v2/team/app/blobs/"+layer.String()) != 1 {
		t.Errorf("layer fetched upstream %d times, want 1", up.count("GET", "/v2/team/app/blobs/"+layer.String()))
	}
	if ps.results["unauthorized"] != 1 || ps.results["denied"] != 2 || ps.results["ok"] != 4 {
		t.Errorf("results %v", ps.results)
	}
}

// TestPeerTokenBeforeWork: an unauthenticated request for a blob nobody has
// yet is answered at once, without a fill or an upstream request.
func TestPeerTokenBeforeWork(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "team/app", "v1", 1<<20)
	ps := newPeerStack(t, up)
	n := up.total()
	resp, _ := ps.get(t, "GET", "/peer/v1/blobs/"+img.layers[0].String()+"?registry=registry.test:5000&repository=team/app")
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Www-Authenticate") != "Berth-Peer" {
		t.Fatalf("status %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("Www-Authenticate"))
	}
	if up.total() != n || ps.fetcher.InFlight() != 0 {
		t.Fatalf("an unauthenticated request caused upstream traffic (%d) or a fill (%d)", up.total()-n, ps.fetcher.InFlight())
	}
}

// TestManifestByDigestFromPeer: a manifest by digest (or by a tag resolved
// to a digest here) missing here comes from
// the PeerManifest hook (the cluster) when it answers with the right bytes,
// and from the upstream otherwise; wrong bytes are never stored.
func TestManifestByDigestFromPeer(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "team/app", "v1", 1000)
	path := "/v2/registry.test:5000/team/app/manifests/" + img.manifest.String()
	upPath := "/v2/team/app/manifests/" + img.manifest.String()
	// By tag: the tag is resolved here (HEAD), the manifest comes from the peer.
	tagPath := "/v2/registry.test:5000/team/app/manifests/v1"
	tests := []struct {
		name     string
		peer     func() ([]byte, error)
		upstream int
	}{
		{"from the peer", func() ([]byte, error) { return img.body, nil }, 0},
		{"no peer: upstream", func() ([]byte, error) { return nil, errors.New("cluster: no peer to ask") }, 1},
		{"wrong bytes: upstream", func() ([]byte, error) { return append([]byte(" "), img.body...), nil }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t, up, time.Minute)
			s.h.opts.PeerManifest = func(_ context.Context, req fetch.Request, _ string) ([]byte, string, error) {
				if req.Digest != img.manifest || req.Registry != "registry.test:5000" || req.Repository != "team/app" {
					t.Errorf("asked for %+v", req)
				}
				b, err := tt.peer()
				return b, ociManifest, err
			}
			for _, ref := range []string{path, tagPath} {
				n := up.count("GET", upPath)
				resp, body := s.do(t, "GET", ref, "Accept", ociManifest)
				if resp.StatusCode != 200 || string(body) != string(img.body) {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				if got := up.count("GET", upPath) - n; got != tt.upstream {
					t.Errorf("%s: %d upstream GETs, want %d", ref, got, tt.upstream)
				}
				if info, err := s.store.Stat(img.manifest); err != nil || info.MediaType != ociManifest {
					t.Errorf("stored: %+v %v", info, err)
				}
				_ = s.store.Delete(img.manifest)
			}
		})
	}
}
