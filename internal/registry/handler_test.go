package registry

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestPullAPI(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "test/app", "v1", 1000, 70000)
	lib := up.pushImage(t, "library/alpine", "3.20", 10)
	s := newStack(t, up, time.Minute)
	layer := img.layers[1]
	data := img.data[layer]
	before := up.snapshot() // after the pushes

	tests := []struct {
		name       string
		method     string
		path       string
		hdr        []string
		wantStatus int
		wantCode   string // OCI error code, for errors
		wantBody   []byte // exact body, when set
		wantHeader map[string]string
	}{
		{name: "base", method: "GET", path: "/v2/", wantStatus: 200,
			wantHeader: map[string]string{"Docker-Distribution-Api-Version": "registry/2.0"}},
		{name: "base without slash", method: "GET", path: "/v2", wantStatus: 200},
		{name: "manifest by tag, ns", method: "GET", path: "/v2/test/app/manifests/v1?ns=registry.test:5000", wantStatus: 200, wantBody: img.body,
			wantHeader: map[string]string{"Docker-Content-Digest": img.manifest.String(), "Content-Type": ociManifest}},
		{name: "manifest by tag, prefix", method: "GET", path: "/v2/registry.test:5000/test/app/manifests/v1", wantStatus: 200, wantBody: img.body},
		{name: "manifest by digest", method: "GET", path: "/v2/test/app/manifests/" + img.manifest.String() + "?ns=registry.test:5000", wantStatus: 200, wantBody: img.body},
		{name: "manifest HEAD", method: "HEAD", path: "/v2/test/app/manifests/v1?ns=registry.test:5000", wantStatus: 200,
			wantHeader: map[string]string{"Content-Length": fmt.Sprint(len(img.body)), "Docker-Content-Digest": img.manifest.String()}},
		{name: "default upstream adds library/", method: "GET", path: "/v2/alpine/manifests/3.20", wantStatus: 200, wantBody: lib.body},
		{name: "docker.io prefix", method: "GET", path: "/v2/docker.io/library/alpine/manifests/3.20", wantStatus: 200, wantBody: lib.body},
		{name: "docker hub alias ns", method: "GET", path: "/v2/library/alpine/manifests/3.20?ns=index.docker.io", wantStatus: 200, wantBody: lib.body},
		{name: "blob", method: "GET", path: "/v2/test/app/blobs/" + layer.String() + "?ns=registry.test:5000", wantStatus: 200, wantBody: data,
			wantHeader: map[string]string{"Docker-Content-Digest": layer.String(), "Content-Length": fmt.Sprint(len(data))}},
		{name: "blob HEAD", method: "HEAD", path: "/v2/test/app/blobs/" + layer.String() + "?ns=registry.test:5000", wantStatus: 200,
			wantHeader: map[string]string{"Content-Length": fmt.Sprint(len(data))}},
		{name: "blob range", method: "GET", path: "/v2/test/app/blobs/" + layer.String() + "?ns=registry.test:5000", hdr: []string{"Range", "bytes=10-19"},
			wantStatus: 206, wantBody: data[10:20], wantHeader: map[string]string{"Content-Range": fmt.Sprintf("bytes 10-19/%d", len(data))}},
		{name: "blob suffix range", method: "GET", path: "/v2/test/app/blobs/" + layer.String() + "?ns=registry.test:5000", hdr: []string{"Range", "bytes=-5"},
			wantStatus: 206, wantBody: data[len(data)-5:]},
		{name: "blob unsatisfiable range", method: "GET", path: "/v2/test/app/blobs/" + layer.String() + "?ns=registry.test:5000", hdr: []string{"Range", "bytes=99999999-"},
			wantStatus: 416, wantCode: CodeRangeInvalid, wantHeader: map[string]string{"Content-Range": fmt.Sprintf("bytes */%d", len(data))}},
		{name: "blob malformed range", method: "GET", path: "/v2/test/app/blobs/" + layer.String() + "?ns=registry.test:5000", hdr: []string{"Range", "bytes=abc"},
			wantStatus: 416, wantCode: CodeRangeInvalid},
		{name: "unknown manifest digest", method: "GET", path: "/v2/test/app/manifests/sha256:" + strings.Repeat("a", 64) + "?ns=registry.test:5000", wantStatus: 404, wantCode: CodeManifestUnknown},
		{name: "unknown tag", method: "GET", path: "/v2/test/app/manifests/nope?ns=registry.test:5000", wantStatus: 404, wantCode: CodeManifestUnknown},
		{name: "unknown blob", method: "GET", path: "/v2/test/app/blobs/sha256:" + strings.Repeat("b", 64) + "?ns=registry.test:5000", wantStatus: 404, wantCode: CodeBlobUnknown},
		{name: "unknown blob HEAD", method: "HEAD", path: "/v2/test/app/blobs/sha256:" + strings.Repeat("b", 64) + "?ns=registry.test:5000", wantStatus: 404},
		{name: "unknown registry denied", method: "GET", path: "/v2/evil.example.com/x/manifests/latest", wantStatus: 403, wantCode: CodeDenied},
		{name: "unknown ns denied", method: "GET", path: "/v2/x/manifests/latest?ns=evil.example.com", wantStatus: 403, wantCode: CodeDenied},
		{name: "upper case name", method: "GET", path: "/v2/Test/app/manifests/v1", wantStatus: 400, wantCode: CodeNameInvalid},
		{name: "dot dot name", method: "GET", path: "/v2/test/../app/manifests/v1?ns=registry.test:5000", wantStatus: 400, wantCode: CodeNameInvalid},
		{name: "over-long name", method: "GET", path: "/v2/" + strings.Repeat("a", 300) + "/manifests/v1", wantStatus: 400, wantCode: CodeNameInvalid},
		{name: "bad digest algorithm", method: "GET", path: "/v2/test/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", wantStatus: 400, wantCode: CodeDigestInvalid},
		{name: "bad digest hex", method: "GET", path: "/v2/test/app/blobs/sha256:zz", wantStatus: 400, wantCode: CodeDigestInvalid},
		{name: "push refused", method: "PUT", path: "/v2/test/app/manifests/v1", wantStatus: 405, wantCode: CodeUnsupported},
		{name: "upload refused", method: "POST", path: "/v2/test/app/blobs/uploads/", wantStatus: 405, wantCode: CodeUnsupported},
		{name: "delete refused", method: "DELETE", path: "/v2/test/app/blobs/" + layer.String(), wantStatus: 405, wantCode: CodeUnsupported},
		{name: "patch refused", method: "PATCH", path: "/v2/test/app/blobs/uploads/x", wantStatus: 405, wantCode: CodeUnsupported},
		{name: "not an API path", method: "GET", path: "/v2/test/app/nothing/x", wantStatus: 404, wantCode: CodeNameUnknown},
		{name: "oversized header", method: "GET", path: "/v2/", hdr: []string{"X-Big", strings.Repeat("x", 70<<10)}, wantStatus: 431, wantCode: CodeTooLarge},
		{name: "tags list", method: "GET", path: "/v2/test/app/tags/list?ns=registry.test:5000", wantStatus: 200,
			wantBody: []byte(`{"name":"test/app","tags":["v1"]}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := s.do(t, tt.method, tt.path, tt.hdr...)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantBody != nil && string(body) != string(tt.wantBody) {
				t.Errorf("body differs: got %d bytes %.80q, want %d bytes", len(body), body, len(tt.wantBody))
			}
			for k, v := range tt.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tt.wantCode != "" {
				var eb errorBody
				if err := json.Unmarshal(body, &eb); err != nil || len(eb.Errors) == 0 {
					t.Fatalf("not an OCI error body: %q", body)
				}
				if eb.Errors[0].Code != tt.wantCode {
					t.Errorf("code %s, want %s", eb.Errors[0].Code, tt.wantCode)
				}
			}
		})
	}
	// The refused requests reach the upstream under no path they could be
	// mapped to (prefixed or not, library/ added or not), and no write does.
	refused := []string{"evil.example.com", "/x/manifests/latest", "/Test/", "/../", strings.Repeat("a", 300), "md5:", "sha256:zz", "/nothing/"}
	for key, n := range up.countsSince(before) {
		method, path, _ := strings.Cut(key, " ")
		if method != "GET" && method != "HEAD" {
			t.Errorf("%d %s requests reached the upstream", n, key)
		}
		for _, r := range refused {
			if strings.Contains(path, r) {
				t.Errorf("a refused request reached the upstream: %s (%d)", key, n)
			}
		}
	}
}

func TestCachedContentNotRefetched(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "test/app", "v1", 5000, 6000)
	s := newStack(t, up, time.Minute)
	pull := func() {
		resp, body := s.do(t, "GET", "/v2/test/app/manifests/v1?ns=registry.test:5000")
		if resp.StatusCode != 200 || sha(body) != img.manifest.String() {
			t.Fatalf("manifest: %d", resp.StatusCode)
		}
		for _, l := range append(img.layers, img.config) {
			resp, body := s.do(t, "GET", "/v2/test/app/blobs/"+l.String()+"?ns=registry.test:5000")
			if resp.StatusCode != 200 || sha(body) != l.String() {
				t.Fatalf("blob %s: %d", l, resp.StatusCode)
			}
		}
	}
	pull()
	before := up.total()
	pull()
	if after := up.total(); after != before {
		t.Errorf("second pull within the tag TTL made %d upstream requests", after-before)
	}
	// After the TTL the tag is checked with one HEAD, and nothing else.
	s.advance(2 * time.Minute)
	pull()
	if got := up.total() - before; got != 1 {
		t.Errorf("pull after TTL made %d upstream requests, want 1 (HEAD)", got)
	}
	if n := up.count("HEAD", "/v2/test/app/manifests/v1"); n != 2 {
		t.Errorf("HEAD manifest count %d, want 2", n)
	}
}

func TestStaleIfError(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "test/app", "v1", 100)
	s := newStack(t, up, time.Second)
	if resp, _ := s.do(t, "GET", "/v2/test/app/manifests/v1?ns=registry.test:5000"); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	up.setDown(true)
	s.advance(time.Hour)
	resp, body := s.do(t, "GET", "/v2/test/app/manifests/v1?ns=registry.test:5000")
	if resp.StatusCode != 200 || string(body) != string(img.body) {
		t.Fatalf("stale tag not served: %d %s", resp.StatusCode, body)
	}
	if v := testutil.ToFloat64(s.metrics.StaleTags.WithLabelValues("registry.test:5000")); v != 1 {
		t.Errorf("stale counter %v, want 1", v)
	}
	// A tag never seen cannot be served stale: 502, an OCI error.
	resp, body = s.do(t, "GET", "/v2/test/other/manifests/v1?ns=registry.test:5000")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), CodeUnavailable) {
		t.Errorf("unknown tag with upstream down: %d %s", resp.StatusCode, body)
	}
}

func TestConcurrentColdBlobFetchedOnce(t *testing.T) {
	up := newCountingUpstream(t)
	data := randomBytes(4<<20, 42)
	dg := up.pushBlob(t, "test/big", data)
	release := make(chan struct{})
	up.delay = func() { <-release }
	s := newStack(t, up, time.Minute)

	const clients = 16
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := s.do(t, "GET", "/v2/test/big/blobs/"+dg.String()+"?ns=registry.test:5000")
			if resp.StatusCode != 200 || sha(body) != dg.String() {
				errs <- fmt.Errorf("status %d, %d bytes", resp.StatusCode, len(body))
			}
		}()
	}
	// Let every client arrive before the upstream answers.
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(s.metrics.Cache.WithLabelValues("blob", "coalesced"))+
		testutil.ToFloat64(s.metrics.Cache.WithLabelValues("blob", "miss")) < clients && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := up.count("GET", "/v2/test/big/blobs/"+dg.String()); n != 1 {
		t.Errorf("upstream blob GETs: %d, want 1", n)
	}
	if v := testutil.ToFloat64(s.metrics.Cache.WithLabelValues("blob", "coalesced")); v != clients-1 {
		t.Errorf("coalesced %v, want %d", v, clients-1)
	}
}

// TestCorruptUpstreamBlob: a blob that does not match its digest reaches no
// client complete (every transfer fails short), is not stored, and is counted.
func TestCorruptUpstreamBlob(t *testing.T) {
	up := newCountingUpstream(t)
	data := randomBytes(3<<20, 9)
	dg := up.pushBlob(t, "test/bad", data)
	up.corrupt = true
	s := newStack(t, up, time.Minute)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(s.srv.URL + "/v2/test/bad/blobs/" + dg.String() + "?ns=registry.test:5000")
			if err != nil {
				return // failed before the headers: fine
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err == nil && resp.StatusCode == 200 {
				t.Errorf("client received a complete body of %d bytes for a corrupt blob", len(body))
			}
		}()
	}
	wg.Wait()
	s.fetcher.Wait()
	if _, err := s.store.Stat(dg); err == nil {
		t.Error("corrupt blob was stored")
	}
	if v := testutil.ToFloat64(s.metrics.VerifyFailures); v < 1 {
		t.Errorf("verify failures %v", v)
	}
}

// TestFailedFillCountedOnce: clients waiting on one failed fill make one
// upstream error, not one per client.
func TestFailedFillCountedOnce(t *testing.T) {
	up := newCountingUpstream(t)
	dg := up.pushBlob(t, "test/x", randomBytes(1000, 3))
	up.failBlobs = true
	s := newStack(t, up, time.Minute)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, _ := s.do(t, "GET", "/v2/test/x/blobs/"+dg.String()+"?ns=registry.test:5000"); resp.StatusCode != http.StatusBadGateway {
				t.Errorf("status %d, want 502", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	s.fetcher.Wait()
	total := testutil.ToFloat64(s.metrics.UpstreamErrors.WithLabelValues("registry.test:5000", "fetch")) +
		testutil.ToFloat64(s.metrics.UpstreamErrors.WithLabelValues("registry.test:5000", "unavailable"))
	// Each fill makes two attempts (upstream_retries 1 in the stack): one error per fill.
	fills := float64(up.count("GET", "/v2/test/x/blobs/"+dg.String())) / 2
	if total != fills {
		t.Errorf("upstream errors counted %v for %v fills", total, fills)
	}
}
