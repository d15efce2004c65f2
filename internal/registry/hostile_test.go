package registry

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// scripted is an upstream that answers every manifest request (HEAD or GET,
// by tag or digest) with one body and Content-Type, counting the GETs.
type scripted struct {
	body        []byte
	contentType string
	// digest is the Docker-Content-Digest sent: "" for the body's own,
	// "-" for none, anything else as is.
	digest  string
	chunked bool // no Content-Length
	gets    atomic.Int32
}

func (sc *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.Contains(r.URL.Path, "/manifests/") {
		if r.URL.Path == "/v2/" {
			return
		}
		http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
		return
	}
	switch sc.digest {
	case "":
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(sc.body).String())
	case "-":
	default:
		w.Header().Set("Docker-Content-Digest", sc.digest)
	}
	w.Header().Set("Content-Type", sc.contentType)
	if !sc.chunked {
		w.Header().Set("Content-Length", fmt.Sprint(len(sc.body)))
	}
	if r.Method == http.MethodGet {
		sc.gets.Add(1)
		_, _ = w.Write(sc.body)
	}
}

// addUpstream makes name (a registry name with a dot) an upstream served by h.
func (s *stack) addUpstream(t testing.TB, name string, h http.Handler) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	s.addUpstreamURL(t, name, srv.URL)
}

func (s *stack) addUpstreamURL(t testing.TB, name, url string) {
	t.Helper()
	c, err := upstream.New(upstream.Endpoint{Name: name, URL: url}, upstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.h.opts.Upstreams.(upstreamMap)[name] = c
}

func ociError(t *testing.T, body []byte) string {
	t.Helper()
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil || len(eb.Errors) == 0 {
		t.Fatalf("not an OCI error body: %q", body)
	}
	return eb.Errors[0].Code + ": " + eb.Errors[0].Message
}

// TestLayerAsManifest: a cached layer asked for at the manifests endpoint
// is 404 MANIFEST_UNKNOWN and is never read into memory; asked for at the
// blobs endpoint, a manifest is served (registries do: its bytes are a blob).
func TestLayerAsManifest(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "test/app", "v1", 16<<20)
	s := newStack(t, up, time.Minute)
	layer := img.layers[0]
	if resp, _ := s.do(t, "GET", "/v2/test/app/blobs/"+layer.String()+"?ns=registry.test:5000"); resp.StatusCode != 200 {
		t.Fatalf("layer: %d", resp.StatusCode)
	}
	s.fetcher.Wait()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, method := range []string{"GET", "HEAD"} {
		resp, body := s.do(t, method, "/v2/test/app/manifests/"+layer.String()+"?ns=registry.test:5000")
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s layer as manifest: status %d, want 404", method, resp.StatusCode)
		}
		if method == "GET" && !strings.HasPrefix(ociError(t, body), CodeManifestUnknown) {
			t.Errorf("error %s, want %s", ociError(t, body), CodeManifestUnknown)
		}
	}
	runtime.ReadMemStats(&after)
	grew := after.TotalAlloc - before.TotalAlloc
	t.Logf("a 16 MiB layer asked as a manifest (GET and HEAD): %d bytes allocated", grew)
	if grew > 4<<20 {
		t.Errorf("asking for a 16 MiB layer as a manifest allocated %d bytes", grew)
	}
	if _, err := s.store.Stat(layer); err != nil {
		t.Errorf("the layer is gone: %v", err)
	}

	// The manifest at the blobs endpoint: its bytes, from the cache.
	if resp, _ := s.do(t, "GET", "/v2/test/app/manifests/v1?ns=registry.test:5000"); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	n := up.total()
	resp, body := s.do(t, "GET", "/v2/test/app/blobs/"+img.manifest.String()+"?ns=registry.test:5000")
	if resp.StatusCode != 200 || string(body) != string(img.body) {
		t.Errorf("manifest as blob: %d %.80q", resp.StatusCode, body)
	}
	if up.total() != n {
		t.Errorf("manifest as blob went upstream")
	}
}

// TestBlobBecomesManifest: a manifest first fetched from the blobs endpoint
// is served from the manifests endpoint once its upstream confirms it.
func TestManifestFirstFetchedAsBlob(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "test/app", "v1", 10)
	up.pushBlob(t, "test/app", img.body) // the manifest's bytes as a blob too
	s := newStack(t, up, time.Minute)
	if resp, _ := s.do(t, "GET", "/v2/test/app/blobs/"+img.manifest.String()+"?ns=registry.test:5000"); resp.StatusCode != 200 {
		t.Fatalf("as blob: %d", resp.StatusCode)
	}
	s.fetcher.Wait()
	resp, body := s.do(t, "GET", "/v2/test/app/manifests/"+img.manifest.String()+"?ns=registry.test:5000")
	if resp.StatusCode != 200 || string(body) != string(img.body) || resp.Header.Get("Content-Type") != ociManifest {
		t.Errorf("as manifest: %d %s %.80q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

// TestManifestCap: a manifest over max_manifest_bytes is refused on the way
// in (declared or not, nothing stored) and on the way out (stored before the
// cap was lowered).
func TestManifestCap(t *testing.T) {
	big := []byte(`{"schemaVersion":2,"mediaType":"` + ociManifest + `","annotations":{"x":"` + strings.Repeat("x", 8<<10) + `"}}`)
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			s := newStack(t, newCountingUpstream(t), time.Minute)
			s.h.setMaxManifestBytes(4 << 10)
			s.addUpstream(t, "big.test", &scripted{body: big, contentType: ociManifest, chunked: chunked})
			for _, ref := range []string{"v1", digest.FromBytes(big).String()} {
				resp, body := s.do(t, "GET", "/v2/big.test/x/manifests/"+ref)
				if resp.StatusCode != http.StatusBadGateway || !strings.Contains(ociError(t, body), "too_large") {
					t.Errorf("%s: %d %s, want 502 too_large", ref, resp.StatusCode, body)
				}
			}
			if list, _ := s.store.List(store.Filter{}); len(list) != 0 {
				t.Errorf("an over-cap manifest was stored: %v", list)
			}
		})
	}
	t.Run("stored, then the cap lowered", func(t *testing.T) {
		s := newStack(t, newCountingUpstream(t), time.Minute)
		sc := &scripted{body: big, contentType: ociManifest}
		s.addUpstream(t, "big.test", sc)
		ref := "/v2/big.test/x/manifests/" + digest.FromBytes(big).String()
		if resp, _ := s.do(t, "GET", ref); resp.StatusCode != 200 {
			t.Fatalf("under the default cap: %d", resp.StatusCode)
		}
		s.h.setMaxManifestBytes(4 << 10)
		if resp, body := s.do(t, "GET", ref); resp.StatusCode == 200 {
			t.Errorf("over-cap stored manifest served: %d bytes", len(body))
		}
	})
}

// TestTagManifestDigestChecked: a manifest fetched by tag must carry a
// Docker-Content-Digest equal to the hash of its bytes; otherwise it is
// refused and nothing is stored or recorded.
func TestTagManifestDigestChecked(t *testing.T) {
	body := []byte(`{"schemaVersion":2,"mediaType":"` + ociManifest + `"}`)
	for _, tc := range []struct{ name, digest string }{
		{"mismatch", digest.FromString("other").String()},
		{"missing", "-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, newCountingUpstream(t), time.Minute)
			s.addUpstream(t, "evil.test", &scripted{body: body, contentType: ociManifest, digest: tc.digest})
			resp, eb := s.do(t, "GET", "/v2/evil.test/x/manifests/v1")
			if resp.StatusCode != http.StatusBadGateway || !strings.Contains(ociError(t, eb), "digest_mismatch") {
				t.Errorf("%d %s, want 502 digest_mismatch", resp.StatusCode, eb)
			}
			if list, _ := s.store.List(store.Filter{}); len(list) != 0 {
				t.Errorf("stored: %v", list)
			}
			if _, err := s.store.Tag("evil.test", "x", "v1"); !store.IsNotFound(err) {
				t.Errorf("tag recorded: %v", err)
			}
		})
	}
}

// TestManifestTypeNotPoisoned: a body's own mediaType is its type; a header
// that contradicts it is refused. A body without one is served to each
// registry with that registry's type, not the first one seen.
func TestManifestTypeNotPoisoned(t *testing.T) {
	list := []byte(`{"schemaVersion":2,"mediaType":"` + dockerList + `","manifests":[]}`)
	untyped := []byte(`{"schemaVersion":2,"manifests":[]}`)
	s := newStack(t, newCountingUpstream(t), time.Minute)
	s.addUpstream(t, "evil.test", &scripted{body: list, contentType: dockerV2})
	s.addUpstream(t, "real.test", &scripted{body: list, contentType: dockerList})
	a := &scripted{body: untyped, contentType: ociIndex}
	b := &scripted{body: untyped, contentType: dockerList}
	s.addUpstream(t, "a.test", a)
	s.addUpstream(t, "b.test", b)

	resp, eb := s.do(t, "GET", "/v2/evil.test/x/manifests/v1")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(ociError(t, eb), "invalid_manifest") {
		t.Errorf("mislabelled list: %d %s, want 502 invalid_manifest", resp.StatusCode, eb)
	}
	if list, _ := s.store.List(store.Filter{}); len(list) != 0 {
		t.Errorf("mislabelled manifest stored: %v", list)
	}
	if resp, _ := s.do(t, "GET", "/v2/real.test/x/manifests/v1"); resp.Header.Get("Content-Type") != dockerList {
		t.Errorf("real registry: type %q", resp.Header.Get("Content-Type"))
	}

	dg := digest.FromBytes(untyped).String()
	for _, step := range []struct{ path, want string }{
		{"/v2/a.test/x/manifests/v1", ociIndex},
		{"/v2/b.test/x/manifests/v1", dockerList},
		{"/v2/a.test/x/manifests/" + dg, ociIndex},
		{"/v2/b.test/x/manifests/" + dg, dockerList},
		{"/v2/b.test/other/manifests/" + dg, dockerList},
	} {
		resp, body := s.do(t, "GET", step.path)
		if resp.StatusCode != 200 || string(body) != string(untyped) || resp.Header.Get("Content-Type") != step.want {
			t.Errorf("%s: %d type %q, want %q", step.path, resp.StatusCode, resp.Header.Get("Content-Type"), step.want)
		}
	}
	if n := a.gets.Load(); n != 1 {
		t.Errorf("a.test GETs: %d, want 1 (the rest from the cache)", n)
	}
}

// TestInvalidManifestRefused: what is not a JSON object is no manifest.
func TestInvalidManifestRefused(t *testing.T) {
	for _, body := range [][]byte{[]byte("\x1f\x8b layer bytes"), []byte(`[]`), []byte(`null`), []byte(`{"mediaType":7}`), []byte(`{"mediaType":"a b"}`)} {
		s := newStack(t, newCountingUpstream(t), time.Minute)
		s.addUpstream(t, "odd.test", &scripted{body: body, contentType: ociManifest})
		resp, eb := s.do(t, "GET", "/v2/odd.test/x/manifests/"+digest.FromBytes(body).String())
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(ociError(t, eb), "invalid_manifest") {
			t.Errorf("%q: %d %s", body, resp.StatusCode, eb)
		}
	}
}
