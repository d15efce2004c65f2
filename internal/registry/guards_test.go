package registry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/access"
	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/peer"
)

// The tests here guard the escapes of issue 16 item 7: each was a change
// that, applied alone, left every test of the package passing.

// TestAuthRecheckAfterStoreReadManifest is TestAuthRecheckAfterStoreRead for
// a manifest by digest: a private manifest stored and marked between the
// gate's check and the store read is not served through a public
// repository.
func TestAuthRecheckAfterStoreReadManifest(t *testing.T) {
	s, img := setupPrivate(t, authStackOptions{})
	if r := s.pull(t, privRoutes[0].prefix, "", basicAuth(privUser, privPass), img); !r.allOK() {
		t.Fatalf("private pull: %v", r.statuses)
	}
	s.pub.setPublic("lib/other")
	path := "/v2/public.test/lib/other/manifests/" + img.manifest.String()
	p, err := ParsePath(path)
	if err != nil {
		t.Fatal(err)
	}
	tgt, c, err := s.h.route(p.Name, "")
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	err = s.h.serveManifest(&recorder{ResponseWriter: w}, httptest.NewRequest(http.MethodGet, path, nil),
		newRequest(p, tgt, c))
	if e := asError(err); err == nil || e.Status != http.StatusNotFound || strings.Contains(w.Body.String(), string(img.body[:40])) {
		t.Fatalf("a public manifest request reaching the store read after a private commit: %v, %d bytes sent; want 404 and no content", err, w.Body.Len())
	}
}

// TestAuthRefusalExpires: a refusal is remembered for at most 30 s, so a
// client whose access was just granted upstream is not refused for good.
func TestAuthRefusalExpires(t *testing.T) {
	s, img := setupPrivate(t, authStackOptions{})
	blob := privRoutes[0].prefix + "/blobs/" + img.layers[0].String()
	bob := basicAuth("bob", "bobs-password")
	if code, _ := s.get(blob, basicAuth(privUser, privPass)); code != http.StatusOK {
		t.Fatalf("alice: %d", code)
	}
	if code, _ := s.get(blob, bob); code != http.StatusUnauthorized {
		t.Fatalf("bob before his grant: %d, want 401", code)
	}
	s.priv.addUser("bob", "bobs-password", "other/repo", privRepo)
	if code, _ := s.get(blob, bob); code != http.StatusUnauthorized {
		t.Fatalf("bob within the refusal's 30 s: %d, want 401 (remembered)", code)
	}
	s.advance(access.DenyTTL + time.Second)
	if code, _ := s.get(blob, bob); code != http.StatusOK {
		t.Fatalf("bob after the refusal expired: %d, want 200", code)
	}
}

// TestAuthDecisionPerRepository: a credential accepted for one private
// repository opens no other repository's private content, cached or not.
func TestAuthDecisionPerRepository(t *testing.T) {
	s, img := setupPrivate(t, authStackOptions{})
	secret := s.priv.inner.pushImage(t, "team/secret", "v1", 2000)
	s.priv.addUser("carol", "carols-password", "team/secret")
	if r := s.pull(t, "/v2/registry.test:5000/team/secret", "", basicAuth("carol", "carols-password"), secret); !r.allOK() {
		t.Fatalf("carol, her repository: %v", r.statuses)
	}
	if r := s.pull(t, privRoutes[0].prefix, "", basicAuth(privUser, privPass), img); !r.allOK() {
		t.Fatalf("alice, her repository: %v", r.statuses)
	}
	if r := s.pull(t, "/v2/registry.test:5000/team/secret", "", basicAuth(privUser, privPass), secret); r.content || !r.all(http.StatusUnauthorized) {
		t.Fatalf("alice, carol's cached repository: %v, want 401 and no content", r.statuses)
	}
}

// TestPeerManifestChecked: a manifest a peer sends is held to the checks of
// an upstream's: the max_manifest_bytes cap and its body's own mediaType.
func TestPeerManifestChecked(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "team/app", "v1", 1000)
	path := "/v2/registry.test:5000/team/app/manifests/" + img.manifest.String()
	upPath := "/v2/team/app/manifests/" + img.manifest.String()
	t.Run("over the cap", func(t *testing.T) {
		s := newStack(t, up, time.Minute)
		s.h.setMaxManifestBytes(int64(len(img.body) - 1))
		s.h.opts.PeerManifest = func(context.Context, fetch.Request, string) ([]byte, string, error) {
			return img.body, ociManifest, nil
		}
		if resp, _ := s.do(t, "GET", path); resp.StatusCode == http.StatusOK {
			t.Fatalf("a peer's manifest over max_manifest_bytes was served")
		}
		if _, err := s.store.Stat(img.manifest); err == nil {
			t.Fatal("a peer's manifest over max_manifest_bytes was stored")
		}
	})
	t.Run("mislabelled", func(t *testing.T) {
		s := newStack(t, up, time.Minute)
		s.h.opts.PeerManifest = func(context.Context, fetch.Request, string) ([]byte, string, error) {
			return img.body, dockerList, nil
		}
		n := up.count("GET", upPath)
		resp, _ := s.do(t, "GET", path)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ociManifest || up.count("GET", upPath)-n != 1 {
			t.Fatalf("%d %q, %d upstream GETs; want the upstream's manifest with its own type", resp.StatusCode,
				resp.Header.Get("Content-Type"), up.count("GET", upPath)-n)
		}
	})
}

// TestTagListSlotsReleased: a finished tags/list gives its slot back; more
// lists one after another than there are slots are all served.
func TestTagListSlotsReleased(t *testing.T) {
	srv := tagsStack(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(tagList(3)) })
	for i := range 3 * maxTagLists {
		resp, err := http.Get(srv.URL + "/v2/test/app/tags/list")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("list %d: %d, want 200", i+1, resp.StatusCode)
		}
	}
}

// TestPeerHeadNeedsToken: HEAD on the peer API is checked like GET.
func TestPeerHeadNeedsToken(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "team/app", "v1", 1000)
	ps := newPeerStack(t, up)
	for _, kind := range []string{"blobs", "manifests"} {
		dg := img.layers[0].String()
		if kind == "manifests" {
			dg = img.manifest.String()
		}
		p := "/peer/v1/" + kind + "/" + dg + "?registry=registry.test:5000&repository=team/app"
		n := up.total()
		resp, _ := ps.get(t, http.MethodHead, p)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("HEAD %s without a token: %d, want 401", kind, resp.StatusCode)
		}
		resp, _ = ps.get(t, http.MethodHead, p, "Authorization", "Berth-Peer bad")
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("HEAD %s with a bad token: %d, want 403", kind, resp.StatusCode)
		}
		if up.total() != n {
			t.Fatalf("HEAD %s without a valid token reached the upstream", kind)
		}
		if resp, _ := ps.get(t, http.MethodHead, p, "Authorization", "Berth-Peer good"); resp.StatusCode != http.StatusOK {
			t.Fatalf("HEAD %s with a good token: %d, want 200", kind, resp.StatusCode)
		}
	}
}

// TestPeerSharesHandler (issue 16 item 6): the peer API served by the /v2/
// handler applies its manifest cap, also after a reload changes it.
func TestPeerSharesHandler(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "team/app", "v1", 1000)
	s := newStack(t, up, time.Minute)
	if resp, _ := s.do(t, "GET", "/v2/registry.test:5000/team/app/manifests/"+img.manifest.String()); resp.StatusCode != http.StatusOK {
		t.Fatalf("warming: %d", resp.StatusCode)
	}
	ps := httptest.NewServer(peer.NewServer(s.h, peer.ServerOptions{}))
	defer ps.Close()
	get := func() int {
		resp, err := http.Get(ps.URL + "/peer/v1/manifests/" + img.manifest.String() + "?registry=registry.test:5000&repository=team/app")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("peer manifest: %d", code)
	}
	s.h.setMaxManifestBytes(int64(len(img.body) - 1))
	if code := get(); code == http.StatusOK {
		t.Fatal("the peer API served a manifest over the reloaded max_manifest_bytes")
	}
}
