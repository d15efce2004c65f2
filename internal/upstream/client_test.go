package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
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

// authRegistry fronts an in-process registry with a token service, the way
// Docker Hub and ghcr do: 401 with a Bearer challenge, then /token.
type authRegistry struct {
	*httptest.Server
	user, pass string // required for /token when set
	tokens     atomic.Int32
	scopes     []string
	mu         sync.Mutex
	fail5xx    atomic.Int32 // answer this many requests with 503 first
	cdn        *httptest.Server
	cdnAuth    atomic.Value // Authorization header seen by the CDN
}

func newAuthRegistry(t *testing.T, user, pass string) *authRegistry {
	t.Helper()
	a := &authRegistry{user: user, pass: pass}
	reg := ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))
	a.cdn = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.cdnAuth.Store(r.Header.Get("Authorization"))
		// The CDN serves what the registry has, under a signed URL.
		r2 := r.Clone(r.Context())
		r2.URL.Path = strings.TrimPrefix(r.URL.Path, "/cdn")
		r2.Header.Set("Authorization", "Bearer good")
		reg.ServeHTTP(w, r2)
	}))
	t.Cleanup(a.cdn.Close)
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			if a.user != "" {
				u, p, ok := r.BasicAuth()
				if !ok || u != a.user || p != a.pass {
					http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
					return
				}
			}
			a.tokens.Add(1)
			a.mu.Lock()
			a.scopes = append(a.scopes, r.URL.Query().Get("scope"))
			a.mu.Unlock()
			_, _ = w.Write([]byte(`{"token":"good","expires_in":300}`))
			return
		}
		if a.fail5xx.Load() > 0 && r.URL.Path != "/v2/" {
			a.fail5xx.Add(-1)
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		if r.Header.Get("Authorization") != "Bearer good" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+a.URL+`/token",service="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}`, http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") && r.URL.Query().Get("direct") == "" {
			http.Redirect(w, r, a.cdn.URL+"/cdn"+r.URL.Path+"?signature=secret", http.StatusTemporaryRedirect)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *authRegistry) push(t *testing.T, repo string, data []byte) digest.Digest {
	t.Helper()
	dg := digest.FromBytes(data)
	req, _ := http.NewRequest(http.MethodPost, a.URL+"/v2/"+repo+"/blobs/uploads/?digest="+dg.String(), bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer good")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push: %s", resp.Status)
	}
	return dg
}

func (a *authRegistry) pushManifest(t *testing.T, repo, tag string, body []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, a.URL+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer good")
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestBearerTokenAuthAndRedirect(t *testing.T) {
	a := newAuthRegistry(t, "", "")
	blob := []byte("layer bytes")
	dg := a.push(t, "org/app", blob)
	c, err := New(Endpoint{Name: "r.test", URL: a.URL}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	body, d, err := c.GetBlob(context.Background(), "org/app", dg, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(body)
	body.Close()
	if !bytes.Equal(got, blob) || d.Size != int64(len(blob)) {
		t.Fatalf("blob %q size %d", got, d.Size)
	}
	if auth, _ := a.cdnAuth.Load().(string); auth != "" {
		t.Errorf("registry token leaked to the blob CDN: %q", auth)
	}
	// A second request reuses the token.
	if _, err := c.HeadBlob(context.Background(), "org/app", dg); err != nil {
		t.Fatal(err)
	}
	if n := a.tokens.Load(); n != 1 {
		t.Errorf("token requests %d, want 1", n)
	}
	if a.scopes[0] != "repository:org/app:pull" {
		t.Errorf("scope %q", a.scopes[0])
	}
}

func TestBasicCredentialsForToken(t *testing.T) {
	a := newAuthRegistry(t, "alice", "s3cret")
	dg := a.push(t, "org/app", []byte("x"))
	good, _ := New(Endpoint{Name: "r.test", URL: a.URL, Username: "alice", Password: "s3cret"}, Options{})
	if _, err := good.HeadBlob(context.Background(), "org/app", dg); err != nil {
		t.Fatalf("with credentials: %v", err)
	}
	bad, _ := New(Endpoint{Name: "r.test", URL: a.URL, Username: "alice", Password: "wrong"}, Options{})
	_, err := bad.HeadBlob(context.Background(), "org/app", dg)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
		t.Fatalf("wrong credentials: %v", err)
	}
	if strings.Contains(err.Error(), "wrong") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error leaks a password: %v", err)
	}
}

func TestRetriesOn5xx(t *testing.T) {
	a := newAuthRegistry(t, "", "")
	dg := a.push(t, "org/app", []byte("x"))
	c, _ := New(Endpoint{Name: "r.test", URL: a.URL}, Options{Retries: 3, Backoff: time.Millisecond})
	a.fail5xx.Store(2)
	if _, err := c.HeadBlob(context.Background(), "org/app", dg); err != nil {
		t.Fatalf("after two 503s: %v", err)
	}
	a.fail5xx.Store(10)
	_, err := c.HeadBlob(context.Background(), "org/app", dg)
	if !IsUnavailable(err) {
		t.Fatalf("persistent 503: %v, want unavailable", err)
	}
}

func TestErrors(t *testing.T) {
	a := newAuthRegistry(t, "", "")
	c, _ := New(Endpoint{Name: "r.test", URL: a.URL}, Options{})
	_, _, err := c.GetManifest(context.Background(), "org/none", "latest", 4<<20)
	if !IsNotFound(err) {
		t.Errorf("missing manifest: %v", err)
	}
	// A manifest whose bytes do not match the digest asked for is refused.
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	a.push(t, "org/app", []byte("{}"))
	a.pushManifest(t, "org/app", "v1", body)
	got, d, err := c.GetManifest(context.Background(), "org/app", "v1", 4<<20)
	if err != nil || !bytes.Equal(got, body) || d.Digest != digest.FromBytes(body) {
		t.Fatalf("manifest: %v", err)
	}
	dead, _ := New(Endpoint{Name: "dead", URL: "http://127.0.0.1:9"}, Options{Timeout: time.Second})
	if _, err := dead.HeadBlob(context.Background(), "x", digest.FromString("x")); !errors.Is(err, ErrUnreachable) {
		t.Errorf("refused connection: %v", err)
	}
}

func TestNewRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "http://", "::", "ftp://user:hunter2@x", "https://user:hunter2@h ost"} {
		_, err := New(Endpoint{Name: "x", URL: u}, Options{})
		if err == nil {
			t.Errorf("New(%q) accepted", u)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("New(%q): error shows the password: %v", u, err)
		}
	}
	c, err := New(Endpoint{Name: "x", URL: "https://user:hunter2@r.test"}, Options{})
	if err != nil || c.URL() != "https://r.test" {
		t.Errorf("URL() = %q, %v", c.URL(), err)
	}
}

func TestConcurrentFirstRequestsAuthenticateOnce(t *testing.T) {
	a := newAuthRegistry(t, "", "")
	dg := a.push(t, "org/app", []byte("x"))
	c, _ := New(Endpoint{Name: "r.test", URL: a.URL}, Options{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.HeadBlob(context.Background(), "org/app", dg); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := a.tokens.Load(); n != 1 {
		t.Errorf("token requests %d, want 1", n)
	}
}
