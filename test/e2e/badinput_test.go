package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBadInput throws malformed, hostile and unsupported requests at a
// running berth: each gets a 4xx (with an OCI error body wherever berth's
// handler answers), never a 5xx, nothing reaches a host that is not
// configured, and berth stays ready. Valid ranges still work.
func TestBadInput(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "crane")
	reg := startRegistry(t, tools["docker-registry"])
	im := pushImage(t, tools["crane"], reg.Addr, "test/app", "v1", 1, false)
	b := startBerth(t, reg.Addr, berthOptions{})
	blob := im.Layers[0]
	full := checkBlob(t, b, im.Repo, blob) // cached from here on
	size := len(full)
	blobPath := "/v2/registry.test/test/app/blobs/" + blob
	hexOK := strings.Repeat("ab", 32)

	type row struct {
		name   string
		method string
		path   string
		header [][2]string
		status int    // 0: any 4xx
		code   string // expected OCI code; "" with oci: any code
		oci    bool   // the body must be an OCI error
		check  func(t *testing.T, resp *http.Response, body []byte)
	}
	rng := func(v string) [][2]string { return [][2]string{{"Range", v}} }
	rangeInvalid := func(t *testing.T, resp *http.Response, _ []byte) {
		if cr, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes */%d", size); cr != want {
			t.Errorf("Content-Range %q, want %q", cr, want)
		}
	}
	rows := []row{
		// Names.
		{name: "dot-dot component", path: "/v2/registry.test/test/a..b/manifests/latest", status: 400, code: "NAME_INVALID", oci: true},
		{name: "encoded dot-dot", path: "/v2/registry.test/%2e%2e/x/manifests/latest", status: 400, code: "NAME_INVALID", oci: true},
		// Not cleaned and redirected by a ServeMux: refused like any bad name.
		{name: "dot-dot traversal", path: "/v2/registry.test/../../etc/manifests/latest", status: 400, code: "NAME_INVALID", oci: true},
		{name: "dot segment", path: "/v2/registry.test/./test/app/manifests/latest", status: 400, code: "NAME_INVALID", oci: true},
		{name: "upper case repository", path: "/v2/registry.test/Test/App/manifests/latest", status: 400, code: "NAME_INVALID", oci: true},
		{name: "upper case registry", path: "/v2/Registry.Test/test/app/manifests/latest", status: 400, code: "NAME_INVALID", oci: true},
		{name: "name of 300 characters", path: "/v2/registry.test/" + strings.Repeat("a", 300) + "/manifests/latest", status: 400, code: "NAME_INVALID", oci: true},
		{name: "path of 8000 characters", path: "/v2/registry.test/" + strings.Repeat("a/", 4000) + "manifests/latest", status: 400, code: "NAME_INVALID", oci: true},
		{name: "invalid tag", path: "/v2/registry.test/test/app/manifests/-tag", status: 400, oci: true},
		{name: "invalid ns", path: "/v2/test/app/manifests/latest?ns=..%2F..", status: 400, code: "NAME_INVALID", oci: true},
		{name: "not an API path", path: "/v2/registry.test/test/app/nope/x", status: 404, oci: true},
		// Digests.
		{name: "md5 digest", path: "/v2/registry.test/test/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", status: 400, code: "DIGEST_INVALID", oci: true},
		{name: "non-hex digest", path: "/v2/registry.test/test/app/blobs/sha256:zz", status: 400, code: "DIGEST_INVALID", oci: true},
		{name: "short digest", path: "/v2/registry.test/test/app/blobs/sha256:abcdef", status: 400, code: "DIGEST_INVALID", oci: true},
		{name: "digest without algorithm", path: "/v2/registry.test/test/app/blobs/" + hexOK, status: 400, code: "DIGEST_INVALID", oci: true},
		{name: "manifest by bad digest", path: "/v2/registry.test/test/app/manifests/sha256:zz", status: 400, code: "DIGEST_INVALID", oci: true},
		{name: "unknown blob", path: "/v2/registry.test/test/app/blobs/sha256:" + hexOK, status: 404, code: "BLOB_UNKNOWN", oci: true},
		{name: "unknown tag", path: "/v2/registry.test/test/app/manifests/nope", status: 404, code: "MANIFEST_UNKNOWN", oci: true},
		// Ranges on a cached blob.
		{name: "range not a number", path: blobPath, header: rng("bytes=abc"), status: 416, code: "RANGE_INVALID", oci: true, check: rangeInvalid},
		{name: "range end before start", path: blobPath, header: rng("bytes=5-1"), status: 416, code: "RANGE_INVALID", oci: true, check: rangeInvalid},
		{name: "range unit items", path: blobPath, header: rng("items=0-1"), status: 416, code: "RANGE_INVALID", oci: true, check: rangeInvalid},
		{name: "range past the end", path: blobPath, header: rng("bytes=999999999-"), status: 416, code: "RANGE_INVALID", oci: true, check: rangeInvalid},
		{name: "range of 17 parts", path: blobPath, header: rng("bytes=" + strings.Repeat("0-0,", 16) + "1-1"), status: 416, code: "RANGE_INVALID", oci: true},
		// Headers.
		{name: "100 KiB header", path: blobPath, header: [][2]string{{"X-Big", strings.Repeat("x", 100<<10)}}, status: 431, code: "SIZE_INVALID", oci: true},
		// Beyond net/http's hard cap Go answers itself, in plain text.
		{name: "300 KiB header", path: blobPath, header: [][2]string{{"X-Big", strings.Repeat("x", 300<<10)}}, status: 431},
		// Pushes.
		{name: "PUT manifest", method: "PUT", path: "/v2/registry.test/test/app/manifests/v2", status: 405, code: "UNSUPPORTED", oci: true},
		{name: "POST upload", method: "POST", path: "/v2/registry.test/test/app/blobs/uploads/", status: 405, code: "UNSUPPORTED", oci: true},
		{name: "PATCH upload", method: "PATCH", path: "/v2/registry.test/test/app/blobs/uploads/abc", status: 405, code: "UNSUPPORTED", oci: true},
		{name: "DELETE blob", method: "DELETE", path: blobPath, status: 405, code: "UNSUPPORTED", oci: true},
		{name: "DELETE manifest", method: "DELETE", path: "/v2/registry.test/test/app/manifests/" + im.Digest, status: 405, code: "UNSUPPORTED", oci: true},
		// Registries that are not configured.
		{name: "unknown registry manifest", path: "/v2/evil.example.com/x/manifests/latest", status: 403, code: "DENIED", oci: true},
		{name: "unknown registry blob", path: "/v2/evil.example.com/x/blobs/sha256:" + hexOK, status: 403, code: "DENIED", oci: true},
		{name: "unknown registry tags", path: "/v2/evil.example.com/x/tags/list", status: 403, code: "DENIED", oci: true},
		{name: "unknown registry ns", path: "/v2/x/manifests/latest?ns=evil.example.com", status: 403, code: "DENIED", oci: true},
		{name: "unknown registry with port", path: "/v2/evil.example.com:443/x/manifests/latest", status: 403, code: "DENIED", oci: true},
		// Tag listing.
		{name: "negative page size", path: "/v2/registry.test/test/app/tags/list?n=-1", status: 400, oci: true},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			method := r.method
			if method == "" {
				method = http.MethodGet
			}
			resp, body, err := rawRequest(b.Addr, method, r.path, r.header)
			if err != nil {
				t.Fatalf("%s %s: %v", method, truncate([]byte(r.path), 100), err)
			}
			t.Logf("%s → %s %s", truncate([]byte(r.path), 100), resp.Status, truncate(body, 160))
			if resp.StatusCode >= 500 {
				t.Fatalf("server error %s: %s", resp.Status, truncate(body, 300))
			}
			if resp.StatusCode < 400 {
				t.Fatalf("status %s, want a 4xx", resp.Status)
			}
			if r.status != 0 && resp.StatusCode != r.status {
				t.Errorf("status %d, want %d", resp.StatusCode, r.status)
			}
			if r.oci {
				code, err := ociError(body)
				if err != nil {
					t.Errorf("%v", err)
				} else if r.code != "" && code != r.code {
					t.Errorf("OCI error code %s, want %s", code, r.code)
				}
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type %q, want application/json", ct)
				}
			}
			if r.check != nil {
				r.check(t, resp, body)
			}
		})
	}

	// 403 comes before any connection: not one request reaches the only
	// upstream there is (the default), whatever the method or the API.
	t.Run("unknown registries reach no upstream", func(t *testing.T) {
		reg.sync(t)
		before := len(reg.requestLines(t))
		for _, p := range []string{
			"/v2/evil.example.com/x/manifests/latest",
			"/v2/evil.example.com/x/manifests/sha256:" + hexOK,
			"/v2/evil.example.com/x/blobs/sha256:" + hexOK,
			"/v2/evil.example.com/x/tags/list",
			"/v2/x/manifests/latest?ns=evil.example.com",
			"/v2/library/x/blobs/sha256:" + hexOK + "?ns=evil.example.com",
			"/v2/169.254.169.254/x/manifests/latest",
		} {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				resp, body, err := rawRequest(b.Addr, method, p, nil)
				if err != nil {
					t.Fatalf("%s %s: %v", method, p, err)
				}
				if resp.StatusCode != http.StatusForbidden {
					t.Errorf("%s %s: %s %s, want 403", method, p, resp.Status, truncate(body, 200))
				}
			}
		}
		reg.sync(t)
		if lines := reg.requestLines(t)[before:]; len(lines) > 0 {
			t.Errorf("requests for unknown registries reached the upstream:\n%s", strings.Join(lines, "\n"))
		}
	})

	t.Run("garbage request line", func(t *testing.T) {
		status, err := rawExchange(b.Addr, []byte("\x16\x03\x01 GARBAGE \x00\xff\r\n\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		if status < 400 || status >= 500 {
			t.Errorf("status %d, want a 4xx", status)
		}
	})
	t.Run("HTTP/1.1 without Host", func(t *testing.T) {
		status, err := rawExchange(b.Addr, []byte("GET /v2/ HTTP/1.1\r\n\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		if status < 400 || status >= 500 {
			t.Errorf("status %d, want a 4xx", status)
		}
	})

	t.Run("valid ranges", func(t *testing.T) {
		for _, tc := range []struct {
			rng        string
			start, end int // inclusive
		}{
			{"bytes=10-19", 10, 19},
			{"bytes=0-0", 0, 0},
			{"bytes=-5", size - 5, size - 1},
			{fmt.Sprintf("bytes=%d-", size-100), size - 100, size - 1},
			{fmt.Sprintf("bytes=100-%d", size+1000), 100, size - 1},
		} {
			resp, body := do(t, http.MethodGet, b.URL+blobPath, http.Header{"Range": {tc.rng}})
			if resp.StatusCode != http.StatusPartialContent {
				t.Errorf("Range %s: %s, want 206: %s", tc.rng, resp.Status, truncate(body, 200))
				continue
			}
			if want := fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end, size); resp.Header.Get("Content-Range") != want {
				t.Errorf("Range %s: Content-Range %q, want %q", tc.rng, resp.Header.Get("Content-Range"), want)
			}
			if !bytes.Equal(body, full[tc.start:tc.end+1]) {
				t.Errorf("Range %s: got %d bytes that differ from the blob's [%d:%d]", tc.rng, len(body), tc.start, tc.end+1)
			}
		}
		resp, _ := do(t, http.MethodGet, b.URL+blobPath, http.Header{"Range": {"bytes=0-1,5-6"}})
		if resp.StatusCode != http.StatusPartialContent || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") {
			t.Errorf("two ranges: %s %q, want 206 multipart/byteranges", resp.Status, resp.Header.Get("Content-Type"))
		}
	})

	// Berth is still well, and nothing went to a registry it does not know.
	resp, _ := do(t, http.MethodGet, b.URL+"/readyz", nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz after the bad requests: %s", resp.Status)
	}
	checkBlob(t, b, im.Repo, blob)
	for _, line := range b.logLines(t, "upstream failed") {
		if strings.Contains(line, "evil.example.com") {
			t.Errorf("berth tried the unknown registry: %s", line)
		}
	}
	for _, line := range b.logLines(t, "retrying upstream request") {
		if strings.Contains(line, "evil.example.com") {
			t.Errorf("berth tried the unknown registry: %s", line)
		}
	}
	m := scrape(t, b)
	if n := metric(m, "berth_upstream_errors_total", map[string]string{"upstream": "evil.example.com"}); n != 0 {
		t.Errorf("berth_upstream_errors_total{upstream=evil.example.com} = %v", n)
	}
	if n := metric(m, "berth_http_requests_total", map[string]string{"code": "500"}); n != 0 {
		t.Errorf("berth_http_requests_total{code=500} = %v", n)
	}
	// The proxy trap (checked at cleanup) proves no connection left for
	// a non-loopback host.
}

// rawRequest sends one request exactly as written (no path cleaning, no
// redirects) on a new connection and reads the response.
func rawRequest(addr, method, path string, header [][2]string) (*http.Response, []byte, error) {
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: berth-e2e\r\nConnection: close\r\n", method, path, addr)
	for _, h := range header {
		fmt.Fprintf(&req, "%s: %s\r\n", h[0], h[1])
	}
	if method == http.MethodPut || method == http.MethodPost || method == http.MethodPatch {
		req.WriteString("Content-Length: 2\r\n\r\n{}")
	} else {
		req.WriteString("\r\n")
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	go func() { _, _ = conn.Write(req.Bytes()) }() // the server may answer before reading it all
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		return nil, nil, fmt.Errorf("reading the response: %w", err)
	}
	defer resp.Body.Close()
	// A server that rejects a request it has not read in full may reset
	// the connection after its answer: keep what arrived (an OCI body that
	// is cut short fails to parse).
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, body, nil
}

// rawExchange writes raw bytes on a new connection and returns the status
// code of the answer.
func rawExchange(addr string, raw []byte) (int, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := conn.Write(raw); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("no status line: %w", err)
	}
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/") {
		return 0, fmt.Errorf("not an HTTP status line: %q", line)
	}
	return strconv.Atoi(f[1])
}
