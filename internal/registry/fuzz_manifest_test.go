package registry

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/store"
)

// fuzzUpstream serves, for every manifest request, what the current fuzz
// input says: nothing (404), or the object's bytes with or without a length.
type fuzzUpstream struct {
	mu   sync.Mutex
	mode byte // 0: 404, 1: the bytes with Content-Length, 2: chunked
	body []byte
}

func (u *fuzzUpstream) set(mode byte, body []byte) {
	u.mu.Lock()
	u.mode, u.body = mode%3, body
	u.mu.Unlock()
}

func (u *fuzzUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	mode, body := u.mode, u.body
	u.mu.Unlock()
	if r.URL.Path == "/v2/" {
		return
	}
	if mode == 0 || !strings.Contains(r.URL.Path, "/manifests/") {
		http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`, http.StatusNotFound)
		return
	}
	sc := &scripted{body: body, contentType: ociManifest, chunked: mode == 2}
	sc.ServeHTTP(w, r)
}

// FuzzManifestPath drives the manifests endpoint with objects of any kind
// and size, stored or served by the upstream, under any cap: it answers
// 200 only with a manifest within the cap (the exact bytes, their digest),
// a blob is never a manifest, nothing fails with a 500, and the blobs
// endpoint serves stored content of either kind.
func FuzzManifestPath(f *testing.F) {
	s := newStack(f, newCountingUpstream(f), time.Minute)
	up := &fuzzUpstream{}
	srv := httptest.NewServer(up)
	f.Cleanup(srv.Close)
	s.addUpstreamURL(f, "fz.test", srv.URL)
	f.Fuzz(func(t *testing.T, kind byte, size uint32, capKiB uint16, mode byte, lead string) {
		kind %= 3 // 0: blob, 1: manifest, 2: not stored
		content := fuzzContent(lead, int(size%(256<<10)))
		dg := digest.FromBytes(content)
		max := int64(4<<10) + int64(capKiB%512)<<10
		if err := s.store.Delete(dg); err != nil {
			t.Fatal(err)
		}
		switch kind {
		case 0:
			storeBlob(t, s.store, content)
		case 1:
			if _, err := s.store.PutManifest(content, store.NewManifest{Digest: dg, Repository: "fz.test/x", UpstreamType: ociManifest}); err != nil {
				t.Fatal(err)
			}
		}
		up.set(mode, content)
		s.h.setMaxManifestBytes(max)

		rec := httptest.NewRecorder()
		s.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/fz.test/x/manifests/"+dg.String(), nil))
		checkManifestAnswer(t, rec, content, max, kind, mode%3)

		if kind != 2 {
			rec = httptest.NewRecorder()
			s.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/fz.test/x/blobs/"+dg.String(), nil))
			if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), content) {
				t.Fatalf("stored %d-byte object (kind %d) at the blobs endpoint: %d", len(content), kind, rec.Code)
			}
		}
	})
}

func checkManifestAnswer(t *testing.T, rec *httptest.ResponseRecorder, content []byte, max int64, kind, mode byte) {
	t.Helper()
	size := int64(len(content))
	// What the upstream serves (labelled as an OCI manifest) is acceptable
	// if it is a JSON object that declares that type or none.
	declared, typeErr := declaredType(content)
	acceptable := typeErr == nil && (declared == "" || declared == ociManifest)
	if kind == 0 && size > max && rec.Code != http.StatusNotFound {
		t.Fatalf("a stored %d-byte blob asked as a manifest (cap %d): %d, want 404 without asking the upstream", size, max, rec.Code)
	}
	switch rec.Code {
	case http.StatusOK:
		if !bytes.Equal(rec.Body.Bytes(), content) || rec.Header().Get("Docker-Content-Digest") != digest.FromBytes(content).String() {
			t.Fatalf("200 with other bytes or digest")
		}
		if size > max {
			t.Fatalf("served a %d-byte manifest over the cap of %d", size, max)
		}
		if kind != 1 && (mode == 0 || !acceptable) {
			t.Fatalf("served a manifest that neither the store nor the upstream has as one (kind %d, mode %d)", kind, mode)
		}
	case http.StatusNotFound:
		if kind == 1 && size <= max {
			t.Fatalf("a stored manifest within the cap was not served")
		}
		// A stored blob over the cap is no manifest here whatever the
		// upstream says: its bytes (its digest) are over the cap anywhere.
		if mode != 0 && (kind != 0 || size <= max) {
			t.Fatalf("404 although the upstream serves it")
		}
		if !strings.Contains(rec.Body.String(), CodeManifestUnknown) {
			t.Fatalf("404 without MANIFEST_UNKNOWN: %s", rec.Body)
		}
	case http.StatusBadGateway:
		if mode == 0 || (size <= max && acceptable) {
			t.Fatalf("502 for a valid manifest within the cap (mode %d): %s", mode, rec.Body)
		}
	default:
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
}

// fuzzContent is lead padded to size bytes (at least lead).
func fuzzContent(lead string, size int) []byte {
	b := []byte(lead)
	for len(b) < size {
		b = append(b, fmt.Sprintf(" %d", len(b))...)
	}
	return b
}

func storeBlob(t *testing.T, st *store.Store, content []byte) {
	t.Helper()
	f, err := st.TempFile()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(f, store.Info{Digest: digest.FromBytes(content), Size: int64(len(content))}, false); err != nil {
		t.Fatal(err)
	}
}
