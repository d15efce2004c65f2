package registry

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
)

// serveFilteredReferrers answers a referrers request with artifactType as
// the spec asks and go-containerregistry's registry does not: only the
// matching descriptors, and OCI-Filters-Applied.
func serveFilteredReferrers(w http.ResponseWriter, r *http.Request, reg http.Handler) {
	rec := httptest.NewRecorder()
	reg.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
		return
	}
	var idx map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &idx); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	want := r.URL.Query().Get("artifactType")
	ms, _ := idx["manifests"].([]any)
	kept := []any{}
	for _, m := range ms {
		if d, ok := m.(map[string]any); ok && d["artifactType"] == want {
			kept = append(kept, m)
		}
	}
	idx["manifests"] = kept
	b, _ := json.Marshal(idx)
	w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
	w.Header().Set("OCI-Filters-Applied", "artifactType")
	_, _ = w.Write(b)
}

// pushArtifact pushes an OCI artifact manifest of artifactType whose subject
// is the image manifest.
func (u *countingUpstream) pushArtifact(t *testing.T, repo string, img image, artifactType, note string) digest.Digest {
	t.Helper()
	empty := u.pushBlob(t, repo, []byte("{}"))
	// The config's type is the artifact type (the spec's rule when a
	// manifest has no artifactType field, and the one go-containerregistry's
	// registry reads).
	body := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,`+
		`"config":{"mediaType":%q,"digest":%q,"size":2},"layers":[],`+
		`"subject":{"mediaType":%q,"digest":%q,"size":%d},"annotations":{"note":%q}}`,
		ociManifest, artifactType, empty, ociManifest, img.manifest, len(img.body), note)
	return u.pushManifest(t, repo, digest.FromString(body).String(), ociManifest, []byte(body))
}

type referrersIndex struct {
	SchemaVersion int    `json:"schemaVersion"`
	MediaType     string `json:"mediaType"`
	Manifests     []struct {
		Digest       digest.Digest `json:"digest"`
		ArtifactType string        `json:"artifactType"`
	} `json:"manifests"`
}

func decodeIndex(t *testing.T, body []byte) referrersIndex {
	t.Helper()
	var idx referrersIndex
	if err := json.Unmarshal(body, &idx); err != nil {
		t.Fatalf("not an index: %v: %s", err, body)
	}
	return idx
}

// TestReferrers: the referrers API is passed to an upstream that serves it,
// with artifactType (OCI-Filters-Applied passed on), cached for tag_ttl per
// subject and filter, and revalidated after; a subject without referrers
// gets an empty index; while the upstream is down the last answer is served.
func TestReferrers(t *testing.T) {
	up := newCountingUpstreamWith(t, ggcr.WithReferrersSupport(true))
	img := up.pushImage(t, "team/app", "v1", 1000)
	bare := up.pushImage(t, "team/app", "v2", 1001)
	sig := up.pushArtifact(t, "team/app", img, "application/vnd.test.signature", "a")
	sbom := up.pushArtifact(t, "team/app", img, "application/vnd.test.sbom", "b")
	s := newStack(t, up, time.Minute)
	base := "/v2/team/app/referrers/"
	ns := "?ns=registry.test:5000"
	upPath := "/v2/team/app/referrers/" + img.manifest.String()

	resp, body := s.do(t, "GET", base+img.manifest.String()+ns)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/vnd.oci.image.index.v1+json" {
		t.Fatalf("referrers: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	got := map[digest.Digest]string{}
	for _, m := range decodeIndex(t, body).Manifests {
		got[m.Digest] = m.ArtifactType
	}
	if len(got) != 2 || got[sig] != "application/vnd.test.signature" || got[sbom] != "application/vnd.test.sbom" {
		t.Errorf("referrers %v, want the signature and the SBOM", got)
	}
	if resp.Header.Get("OCI-Filters-Applied") != "" {
		t.Errorf("OCI-Filters-Applied %q without a filter", resp.Header.Get("OCI-Filters-Applied"))
	}

	resp, body = s.do(t, "GET", base+img.manifest.String()+ns+"&artifactType=application/vnd.test.sbom")
	idx := decodeIndex(t, body)
	if resp.StatusCode != 200 || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sbom {
		t.Errorf("filtered: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("OCI-Filters-Applied %q, want artifactType (as the upstream said)", resp.Header.Get("OCI-Filters-Applied"))
	}

	resp, body = s.do(t, "GET", base+bare.manifest.String()+ns)
	if idx := decodeIndex(t, body); resp.StatusCode != 200 || len(idx.Manifests) != 0 || idx.SchemaVersion != 2 {
		t.Errorf("no referrers: %d %s; want 200 and an empty index", resp.StatusCode, body)
	}

	// Within tag_ttl: from the cache, for both filters.
	n := up.count("GET", upPath)
	for range 3 {
		if resp, _ := s.do(t, "GET", base+img.manifest.String()+ns); resp.StatusCode != 200 {
			t.Fatal(resp.Status)
		}
		if resp, _ := s.do(t, "GET", base+img.manifest.String()+ns+"&artifactType=application/vnd.test.sbom"); resp.StatusCode != 200 {
			t.Fatal(resp.Status)
		}
	}
	if got := up.count("GET", upPath) - n; got != 0 {
		t.Errorf("%d upstream requests within tag_ttl, want 0", got)
	}
	// After it: asked again; the upstream down: the last answer.
	s.advance(2 * time.Minute)
	if resp, _ := s.do(t, "GET", base+img.manifest.String()+ns); resp.StatusCode != 200 || up.count("GET", upPath)-n != 1 {
		t.Errorf("after tag_ttl: %d, %d upstream requests; want 200, 1", resp.StatusCode, up.count("GET", upPath)-n)
	}
	s.advance(2 * time.Minute)
	up.setDown(true)
	resp, body = s.do(t, "GET", base+img.manifest.String()+ns)
	if resp.StatusCode != 200 || len(decodeIndex(t, body).Manifests) != 2 {
		t.Errorf("upstream down: %d %s; want the last answer", resp.StatusCode, body)
	}
}

// TestReferrersUnsupported: an upstream without the referrers API answers
// 404, and so does berth (the spec's signal to use the tag schema), cached.
func TestReferrersUnsupported(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "team/app", "v1", 1000)
	s := newStack(t, up, time.Minute)
	path := "/v2/team/app/referrers/" + img.manifest.String() + "?ns=registry.test:5000"
	for range 2 {
		resp, body := s.do(t, "GET", path)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `"errors"`) {
			t.Fatalf("no referrers API upstream: %d %s; want 404 with an OCI error", resp.StatusCode, body)
		}
	}
	if n := up.count("GET", "/v2/team/app/referrers/"+img.manifest.String()); n != 1 {
		t.Errorf("%d upstream requests, want 1 (the 404 is cached for tag_ttl)", n)
	}
	if resp, _ := s.do(t, "GET", "/v2/team/app/referrers/sha256:nothex"+"?ns=registry.test:5000"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad digest: %d, want 400", resp.StatusCode)
	}
}

// TestReferrersCacheBounded: the cache keeps at most its entries and bytes.
func TestReferrersCacheBounded(t *testing.T) {
	c := NewReferrersCache(3, 100)
	for i := range 5 {
		c.put(referrersEntry{key: fmt.Sprint(i), body: make([]byte, 10)})
	}
	if _, ok := c.get("0"); ok {
		t.Error("the oldest entry outlived the entry bound")
	}
	if _, ok := c.get("4"); !ok || c.lru.Len() != 3 {
		t.Errorf("entries %d, want 3 with the newest", c.lru.Len())
	}
	c.put(referrersEntry{key: "big", body: make([]byte, 90)})
	if c.bytes > 100 {
		t.Errorf("%d bytes kept, bound 100", c.bytes)
	}
	c.put(referrersEntry{key: "huge", body: make([]byte, maxCachedReferrers+1)})
	if _, ok := c.get("huge"); ok {
		t.Error("an answer over the per-entry cap was cached")
	}
}

// TestReferrersPrivate: the referrers of a private repository's manifest are
// gated like the manifest: no credentials get berth's challenge, the
// registry's user gets the listing, and a cached listing is never served to
// a client whose credentials the registry refuses.
func TestReferrersPrivate(t *testing.T) {
	s := newAuthStack(t, authStackOptions{})
	s.priv.addUser("alice", "pw", "team/app")
	s.priv.addUser("bob", "pw2", "other/repo")
	img := s.priv.inner.pushImage(t, "team/app", "v1", 1000)
	sig := s.priv.inner.pushArtifact(t, "team/app", img, "application/vnd.test.signature", "a")
	path := "/v2/team/app/referrers/" + img.manifest.String() + "?ns=registry.test:5000"
	for _, tt := range []struct {
		name string
		auth string
		want int
	}{
		{"no credentials", "", http.StatusUnauthorized},
		{"the registry's user", basicAuth("alice", "pw"), http.StatusOK},
		{"again, cached", basicAuth("alice", "pw"), http.StatusOK},
		{"wrong password", basicAuth("alice", "nope"), http.StatusUnauthorized},
		{"a user without this repository", basicAuth("bob", "pw2"), http.StatusUnauthorized},
		{"no credentials, after a cached listing", "", http.StatusUnauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, s.srv.URL+path, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var idx referrersIndex
			_ = json.NewDecoder(resp.Body).Decode(&idx)
			if resp.StatusCode != tt.want {
				t.Fatalf("%d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want == http.StatusOK && (len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sig) {
				t.Errorf("listing %+v", idx)
			}
		})
	}
}
