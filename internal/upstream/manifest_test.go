package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
)

// manifestServer answers every manifest request with body, the
// Docker-Content-Digest header it is given ("" for none), and records the
// Accept header it was sent.
func manifestServer(t *testing.T, body []byte, header string) (*Client, *atomic.Value) {
	t.Helper()
	var accept atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		accept.Store(r.Header.Get("Accept"))
		if header != "" {
			w.Header().Set("Docker-Content-Digest", header)
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	c, err := New(Endpoint{Name: "r.test", URL: srv.URL}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c, &accept
}

// TestGetManifestVerifiesDigest: the bytes of a manifest must hash to the
// digest asked for, and an answer by tag must carry a Docker-Content-Digest
// that matches them.
func TestGetManifestVerifiesDigest(t *testing.T) {
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	good := digest.FromBytes(body)
	other := digest.FromString("something else")
	tests := []struct {
		name    string
		ref     string
		header  string
		wantErr error
	}{
		{"by digest", good.String(), good.String(), nil},
		{"by digest, no header", good.String(), "", nil},
		{"by digest, other bytes", other.String(), other.String(), ErrDigestMismatch},
		{"by digest, header disagrees", good.String(), other.String(), ErrDigestMismatch},
		{"by tag", "v1", good.String(), nil},
		{"by tag, header of other bytes", "v1", other.String(), ErrDigestMismatch},
		{"by tag, no header", "v1", "", ErrDigestMismatch},
		{"by tag, invalid header", "v1", "sha256:nothex", ErrDigestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := manifestServer(t, body, tt.header)
			got, d, err := c.GetManifest(context.Background(), "org/app", tt.ref, 1<<20)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("GetManifest = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && (string(got) != string(body) || d.Digest != good) {
				t.Errorf("got %q %s", got, d.Digest)
			}
			if tt.wantErr != nil && got != nil {
				t.Errorf("refused manifest returned its bytes")
			}
		})
	}
}

// TestManifestAcceptIsTheFullSet: whatever a client asked berth for, the
// upstream is asked with every modern manifest type, and never schema 1.
func TestManifestAcceptIsTheFullSet(t *testing.T) {
	body := []byte(`{}`)
	c, accept := manifestServer(t, body, digest.FromBytes(body).String())
	check := func(call string) {
		t.Helper()
		got, _ := accept.Load().(string)
		for _, mt := range []string{
			"application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
			"application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json",
		} {
			if !strings.Contains(got, mt) {
				t.Errorf("%s: Accept %q lacks %s", call, got, mt)
			}
		}
		if strings.Contains(got, "distribution.manifest.v1+") {
			t.Errorf("%s: Accept %q asks for schema 1", call, got)
		}
	}
	if _, err := c.HeadManifest(context.Background(), "org/app", "v1"); err != nil {
		t.Fatal(err)
	}
	check("HEAD")
	if _, _, err := c.GetManifest(context.Background(), "org/app", "v1", 1<<20); err != nil {
		t.Fatal(err)
	}
	check("GET")
}

// endless is a response body that never ends, counting what is read of it.
type endless struct{ read atomic.Int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	e.read.Add(int64(len(p)))
	return len(p), nil
}

func (e *endless) Close() error { return nil }

// capTransport answers the ping, then every manifest request with an
// endless body: declared (Content-Length) or not (chunked).
type capTransport struct {
	body     *endless
	declared int64 // Content-Length to declare, -1 for none
}

func (c capTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == "/v2/" {
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
	}
	h := http.Header{"Docker-Content-Digest": {digest.FromString("x").String()}}
	if c.declared >= 0 {
		h.Set("Content-Length", strconv.FormatInt(c.declared, 10))
	}
	return &http.Response{StatusCode: 200, Header: h, Body: c.body, ContentLength: c.declared, Request: r}, nil
}

// TestGetManifestCap: a manifest over the cap is refused, before reading
// when its length is declared, and after reading no more than the cap when
// it is not: nothing whose size came from the upstream is buffered whole.
func TestGetManifestCap(t *testing.T) {
	const max = 64 << 10
	tests := []struct {
		name     string
		declared int64
		maxRead  int64
	}{
		{"declared over the cap", 200 << 20, 0},
		{"undeclared, endless", -1, max + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := &endless{}
			c, err := New(Endpoint{Name: "r.test", URL: "http://r.test"}, Options{Transport: capTransport{body: body, declared: tt.declared}})
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = c.GetManifest(context.Background(), "org/app", "v1", max)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("GetManifest = %v, want ErrTooLarge", err)
			}
			if n := body.read.Load(); n > tt.maxRead {
				t.Errorf("read %d bytes of the body, want at most %d", n, tt.maxRead)
			}
		})
	}
}
