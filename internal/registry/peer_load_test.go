package registry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/peer"
)

// TestPeerHeartbeats: while the owner's fill waits for its upstream, the
// asking node gets "102 Processing" every heartbeat, then the blob: a busy
// owner is told apart from a dead one.
func TestPeerHeartbeats(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "team/app", "v1", 50<<10)
	layer := img.layers[0]
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open)
	up.delay = func() { <-release }
	ps := newPeerStack(t, up, func(o *peer.ServerOptions) { o.Heartbeat = 10 * time.Millisecond })

	var beats atomic.Int32
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
			if code == http.StatusProcessing && beats.Add(1) == 3 {
				open() // the upstream answers once the asker has heard three beats
			}
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ps.peer.URL+"/peer/v1/blobs/"+layer.String()+"?registry=registry.test:5000&repository=team/app&from=a", nil)
	req.Header.Set("Authorization", "Berth-Peer good")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != string(img.data[layer]) {
		t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
	}
	if n := beats.Load(); n < 3 {
		t.Errorf("%d heartbeats, want at least 3", n)
	}
	if resp.Header.Get("Docker-Content-Digest") != layer.String() || resp.ContentLength != int64(len(img.data[layer])) {
		t.Errorf("headers after heartbeats: %v", resp.Header)
	}
}

// TestPeerHeldOnly: a held-only probe is answered from the store alone: a
// 404 with no upstream request for what this node lacks, the bytes for what
// it holds; a probe for a manifest likewise.
func TestPeerHeldOnly(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "team/app", "v1", 40<<10)
	layer := img.layers[0]
	ps := newPeerStack(t, up)
	auth := []string{"Authorization", "Berth-Peer good"}
	q := "?registry=registry.test:5000&repository=team/app&from=a&held=1"
	n := up.total()
	for _, path := range []string{"/peer/v1/blobs/" + layer.String() + q, "/peer/v1/manifests/" + img.manifest.String() + q} {
		for _, m := range []string{"GET", "HEAD"} {
			if resp, body := ps.get(t, m, path, auth...); resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s %s not held: %d %s", m, path, resp.StatusCode, body)
			}
		}
	}
	if got := up.total() - n; got != 0 {
		t.Errorf("held-only probes made %d upstream requests", got)
	}
	// Fill it as an owner would, then probe again.
	if resp, _ := ps.get(t, "GET", "/peer/v1/blobs/"+layer.String()+"?registry=registry.test:5000&repository=team/app&from=a", auth...); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	n = up.total()
	if resp, body := ps.get(t, "GET", "/peer/v1/blobs/"+layer.String()+q, auth...); resp.StatusCode != 200 || body != string(img.data[layer]) {
		t.Errorf("held blob: %d, %d bytes", resp.StatusCode, len(body))
	}
	if got := up.total() - n; got != 0 {
		t.Errorf("a held blob made %d upstream requests", got)
	}
}

// TestPeerTokenRefusalIsMarked: an answer about the peer token says so
// (Berth-Peer-Error: token), so the asking node tells it from a refusal
// relayed from the upstream.
func TestPeerTokenRefusalIsMarked(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "team/app", "v1", 1000)
	ps := newPeerStack(t, up)
	path := "/peer/v1/blobs/" + img.layers[0].String() + "?registry=registry.test:5000&repository=team/app"
	for _, hdr := range [][]string{nil, {"Authorization", "Berth-Peer forged"}} {
		resp, _ := ps.get(t, "GET", path, hdr...)
		if resp.Header.Get(peer.ErrorHeader) != "token" {
			t.Errorf("%v: %d without %s: token", hdr, resp.StatusCode, peer.ErrorHeader)
		}
	}
}

// TestLargeBlobAsManifest: a cached blob larger than max_manifest_bytes
// asked for at /manifests/ is a 404 MANIFEST_UNKNOWN with no upstream
// request (the upstream would read the whole layer, and 500 for it).
func TestLargeBlobAsManifest(t *testing.T) {
	up := newCountingUpstream(t)
	layer := up.pushBlob(t, "team/app", randomBytes(300<<10, 9))
	s := newStack(t, up, time.Minute)
	s.rebuild(t, func(o *Options) { o.MaxManifestBytes = 64 << 10 })
	if resp, _ := s.do(t, "GET", "/v2/team/app/blobs/"+layer.String()+"?ns=registry.test:5000"); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	n := up.total()
	for _, m := range []string{"GET", "HEAD"} {
		resp, body := s.do(t, m, "/v2/team/app/manifests/"+layer.String()+"?ns=registry.test:5000")
		if resp.StatusCode != http.StatusNotFound || (m == "GET" && errorCode(t, body) != CodeManifestUnknown) {
			t.Errorf("%s: %d %s; want 404 MANIFEST_UNKNOWN", m, resp.StatusCode, body)
		}
	}
	if got := up.total() - n; got != 0 {
		t.Errorf("%d upstream requests for a layer asked as a manifest", got)
	}
}

// TestHeadMissingBlobAsksCluster: a HEAD of a blob missing here asks the
// cluster (PeerHead) and reaches the upstream only when no peer answers.
func TestHeadMissingBlobAsksCluster(t *testing.T) {
	up := newCountingUpstream(t)
	data := randomBytes(5000, 3)
	layer := up.pushBlob(t, "team/app", data)
	s := newStack(t, up, time.Minute)
	var asked atomic.Int32
	answer := atomic.Bool{}
	answer.Store(true)
	s.rebuild(t, func(o *Options) {
		o.PeerHead = func(_ context.Context, req fetch.Request) (fetch.Meta, error) {
			asked.Add(1)
			if req.Digest != layer || req.Repository != "team/app" || req.From != "" {
				t.Errorf("PeerHead got %+v", req)
			}
			if !answer.Load() {
				return fetch.Meta{}, errors.New("no peer")
			}
			return fetch.Meta{Size: int64(len(data)), MediaType: "application/x-peer"}, nil
		}
	})
	path := "/v2/team/app/blobs/" + layer.String() + "?ns=registry.test:5000"
	n := up.count("HEAD", "/v2/team/app/blobs/"+layer.String())
	resp, _ := s.do(t, "HEAD", path)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) || resp.Header.Get("Content-Type") != "application/x-peer" {
		t.Fatalf("HEAD through the owner: %d, length %d, type %q", resp.StatusCode, resp.ContentLength, resp.Header.Get("Content-Type"))
	}
	if got := up.count("HEAD", "/v2/team/app/blobs/"+layer.String()) - n; got != 0 || asked.Load() != 1 {
		t.Errorf("upstream HEADs %d, cluster asked %d; want 0, 1", got, asked.Load())
	}
	answer.Store(false)
	if resp, _ := s.do(t, "HEAD", path); resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) {
		t.Fatalf("HEAD falling back to the upstream: %d", resp.StatusCode)
	}
	if got := up.count("HEAD", "/v2/team/app/blobs/"+layer.String()) - n; got != 1 {
		t.Errorf("upstream HEADs %d, want 1 after the cluster failed", got)
	}
}
