package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ---------------------------------------------------------------------------
// A docker-registry with htpasswd auth (TESTING.md "Private upstreams").

const authRegistryConfig = `version: 0.1
log: {level: info, formatter: text}
storage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}
http: {addr: %s, secret: berth-e2e-secret}
auth:
  htpasswd: {realm: test-realm, path: %s}
`

// startAuthRegistry starts docker-registry answering only users of the
// htpasswd file it writes (user:password pairs).
func startAuthRegistry(t *testing.T, bin, htpasswd string, users ...[2]string) *upstreamRegistry {
	t.Helper()
	dir := t.TempDir()
	hp := filepath.Join(dir, "htpasswd")
	var entries []byte
	for _, u := range users {
		out, err := runTool(t, time.Minute, dir, testEnv(), htpasswd, "-Bbn", u[0], u[1])
		if err != nil {
			t.Fatalf("htpasswd: %v\n%s", err, out)
		}
		entries = append(entries, strings.TrimSpace(out)+"\n"...)
	}
	if err := os.WriteFile(hp, entries, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, authRegistryConfig, filepath.Join(dir, "data"), addr, hp), 0o600); err != nil {
		t.Fatal(err)
	}
	access := filepath.Join(dir, "access.log")
	p, err := startProc(t, "docker-registry", filepath.Join(dir, "registry.log"), access, testEnv(), bin, "serve", cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &upstreamRegistry{proc: p, Addr: addr, accessLog: access}
	if err := waitHTTP(p, "http://"+addr+"/v2/", http.StatusUnauthorized, 20*time.Second); err != nil {
		p.stop(5 * time.Second)
		t.Fatalf("docker-registry with htpasswd: %v\n%s", err, p.tail(20))
	}
	t.Cleanup(func() {
		r.stop(10 * time.Second)
		if t.Failed() {
			t.Logf("private docker-registry access log (tail):\n%s", tailFile(access, 30))
		}
	})
	return r
}

// requestsSince counts the access log's GET and HEAD lines for repo's
// manifests and blobs after byte offset off (see logSize).
func (r *upstreamRegistry) requestsSince(t *testing.T, off int64, repo string) (int, []string) {
	t.Helper()
	time.Sleep(300 * time.Millisecond) // lines are written when responses complete
	b, err := os.ReadFile(r.accessLog)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`"(GET|HEAD) /v2/` + regexp.QuoteMeta(repo) + `/(manifests|blobs)/\S+ HTTP/1\.1" \d+`)
	found := re.FindAllString(string(b[min(off, int64(len(b))):]), -1)
	return len(found), found
}

func (r *upstreamRegistry) logSize(t *testing.T) int64 {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	fi, err := os.Stat(r.accessLog)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// ---------------------------------------------------------------------------
// A token-auth upstream: go-containerregistry's registry behind a bearer
// token check, with the token endpoint the test runs.

type tokenUpstream struct {
	*httptest.Server
	mu     sync.Mutex
	users  map[string]string          // user -> password
	grants map[string]map[string]bool // user -> repo
	tokens map[string]map[string]bool // token -> repo
	n      int
	gets   map[string]int // path -> GETs let through (blobs and manifests)
}

func newTokenUpstream(t *testing.T) *tokenUpstream {
	t.Helper()
	u := &tokenUpstream{users: map[string]string{}, grants: map[string]map[string]bool{}, tokens: map[string]map[string]bool{}, gets: map[string]int{}}
	inner := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(inner.Close)
	target, _ := url.Parse(inner.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			u.token(w, r)
			return
		}
		if !u.allowed(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+u.URL+`/token",service="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodGet {
			u.mu.Lock()
			u.gets[r.URL.Path]++
			u.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

// getsOf is how many GETs of path were let through.
func (u *tokenUpstream) getsOf(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.gets[path]
}

func (u *tokenUpstream) addUser(user, pass string, repos ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.users[user] = pass
	u.grants[user] = map[string]bool{}
	for _, r := range repos {
		u.grants[user][r] = true
	}
}

func (u *tokenUpstream) allowed(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	p := strings.TrimPrefix(r.URL.Path, "/v2/")
	repo := ""
	for _, sep := range []string{"/manifests/", "/blobs/", "/tags/"} {
		if i := strings.Index(p, sep); i >= 0 {
			repo = p[:i]
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	g, ok := u.tokens[tok]
	return ok && (repo == "" || g[repo])
}

func (u *tokenUpstream) token(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	u.mu.Lock()
	defer u.mu.Unlock()
	if !ok || u.users[user] != pass {
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
		return
	}
	g := map[string]bool{}
	for _, s := range r.URL.Query()["scope"] {
		if f := strings.Split(s, ":"); len(f) == 3 && u.grants[user][f[1]] {
			g[f[1]] = true
		}
	}
	u.n++
	tok := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "t%d", u.n))
	u.tokens[tok] = g
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"token":%q,"expires_in":300}`, tok)
}

// ---------------------------------------------------------------------------
// Images pushed from Go, with credentials.

// pushAuthImage pushes an OCI image of n uncompressed tar layers (each one
// random file) to regAddr/repo:tag with auth and returns what it holds.
func pushAuthImage(t *testing.T, regAddr, repo, tag string, n int, auth authn.Authenticator) image {
	t.Helper()
	img := empty.Image
	for i := range n {
		data := tarLayer(t, fmt.Sprintf("%s-%s-%d.bin", strings.ReplaceAll(repo, "/", "_"), tag, i), 40<<10+i*777)
		var err error
		img, err = mutate.AppendLayers(img, static.NewLayer(data, types.OCIUncompressedLayer))
		if err != nil {
			t.Fatal(err)
		}
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	ref, err := name.ParseReference(regAddr+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if auth == nil {
		auth = authn.Anonymous
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuth(auth)); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	dg, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	im := image{Repo: repo, Tag: tag, Digest: dg.String(), MediaType: string(m.MediaType), Config: m.Config.Digest.String()}
	for _, l := range m.Layers {
		im.Layers = append(im.Layers, l.Digest.String())
	}
	return im
}

// secretsIn reports which of secrets appear in the files under dir.
func secretsIn(t *testing.T, dir string, secrets ...string) []string {
	t.Helper()
	var hits []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				hits = append(hits, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

// tarLayer is a tar holding one file of size random bytes.
func tarLayer(t *testing.T, file string, size int) []byte {
	t.Helper()
	data := make([]byte, size)
	fillRandom(data, uint64(len(file)+size))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: file, Mode: 0o644, Size: int64(size), ModTime: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
