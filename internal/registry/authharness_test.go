package registry

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-mirror/berth/internal/access"
	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/metrics"
	"github.com/berth-mirror/berth/internal/peer"
	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// authUpstream puts an access check in front of a countingUpstream (which
// the test pushes to directly): users with passwords, the repositories each
// may pull, and repositories anyone may pull. In "basic" mode it answers
// like docker-registry with htpasswd (401 Basic); in "token" mode like a
// registry with a token service (401 Bearer realm=…/token, the token
// endpoint checks Basic credentials and grants pull scopes).
type authUpstream struct {
	*httptest.Server
	inner *countingUpstream
	mode  string // basic or token

	mu     sync.Mutex
	users  map[string]string          // user -> password
	grants map[string]map[string]bool // user -> repo -> pull
	public map[string]bool            // repo -> anonymous pull
	tokens map[string]map[string]bool // token -> repo -> pull
	counts map[string]int             // "METHOD kind" (kind: manifests, blobs, token, ping)
	auths  map[string]bool            // Authorization headers received
	down   bool
	// hide answers a refusal with 404, as registries that hide private
	// repositories do: "users" to a user without the grant (anonymous
	// requests still get 401), "all" to anyone.
	hide string
}

func newAuthUpstream(t testing.TB, mode string) *authUpstream {
	t.Helper()
	a := &authUpstream{
		inner: newCountingUpstreamWith(t, ggcr.WithReferrersSupport(true)), mode: mode,
		users: map[string]string{}, grants: map[string]map[string]bool{}, public: map[string]bool{},
		tokens: map[string]map[string]bool{}, counts: map[string]int{}, auths: map[string]bool{},
	}
	target, _ := url.Parse(a.inner.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.count(r)
		if a.isDown() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path == "/token" {
			a.serveToken(w, r)
			return
		}
		if !a.allowed(r) {
			a.refuse(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *authUpstream) count(r *http.Request) {
	kind := "ping"
	switch {
	case r.URL.Path == "/token":
		kind = "token"
	case strings.Contains(r.URL.Path, "/manifests/"):
		kind = "manifests"
	case strings.Contains(r.URL.Path, "/blobs/"):
		kind = "blobs"
	}
	a.mu.Lock()
	a.counts[r.Method+" "+kind]++
	if h := r.Header.Get("Authorization"); h != "" {
		a.auths[h] = true
	}
	a.mu.Unlock()
}

func (a *authUpstream) n(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.counts[key]
}

// requests is every request except pings and token exchanges.
func (a *authUpstream) requests() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for k, v := range a.counts {
		if !strings.HasSuffix(k, " ping") && !strings.HasSuffix(k, " token") {
			n += v
		}
	}
	return n
}

// received reports whether any request carried Authorization h.
func (a *authUpstream) received(h string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.auths[h]
}

func (a *authUpstream) isDown() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.down
}

func (a *authUpstream) setDown(d bool) {
	a.mu.Lock()
	a.down = d
	a.mu.Unlock()
}

func (a *authUpstream) addUser(user, pass string, repos ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.users[user] = pass
	g := map[string]bool{}
	for _, r := range repos {
		g[r] = true
	}
	a.grants[user] = g
}

func (a *authUpstream) setHide(mode string) {
	a.mu.Lock()
	a.hide = mode
	a.mu.Unlock()
}

func (a *authUpstream) setPublic(repo string) {
	a.mu.Lock()
	a.public[repo] = true
	a.mu.Unlock()
}

func repoOf(path string) string {
	p := strings.TrimPrefix(path, "/v2/")
	for _, sep := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if i := strings.Index(p, sep); i >= 0 {
			return p[:i]
		}
	}
	return ""
}

// allowed decides a registry request.
func (a *authUpstream) allowed(r *http.Request) bool {
	repo := repoOf(r.URL.Path)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mode == "basic" {
		if a.public[repo] {
			return true
		}
		user, pass, ok := r.BasicAuth()
		return ok && a.users[user] == pass && pass != "" && (repo == "" || a.grants[user][repo])
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	g, ok := a.tokens[tok]
	return ok && (repo == "" || g[repo])
}

func (a *authUpstream) refuse(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	hide := a.hide
	a.mu.Unlock()
	// The /v2/ ping still challenges, as those registries' do.
	if _, _, user := r.BasicAuth(); repoOf(r.URL.Path) != "" && (hide == "all" || (hide == "users" && user)) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}`))
		return
	}
	if a.mode == "basic" {
		w.Header().Set("WWW-Authenticate", `Basic realm="test-realm"`)
	} else {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+a.URL+`/token",service="test"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
}

// serveToken grants the pull scopes the credentials allow (anonymous: the
// public repositories); wrong credentials get 401.
func (a *authUpstream) serveToken(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	user, pass, hasBasic := r.BasicAuth()
	if hasBasic && (a.users[user] != pass || pass == "") {
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
		return
	}
	g := map[string]bool{}
	for _, s := range r.URL.Query()["scope"] {
		parts := strings.Split(s, ":")
		if len(parts) != 3 || parts[0] != "repository" {
			continue
		}
		if a.public[parts[1]] || (hasBasic && a.grants[user][parts[1]]) {
			g[parts[1]] = true
		}
	}
	tok := base64.RawURLEncoding.EncodeToString([]byte(time.Now().String() + user))
	a.tokens[tok] = g
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"token":"` + tok + `","expires_in":300}`))
}

// authStack is a Handler in front of one private upstream (registry.test:5000
// and the default docker.io) and one public upstream (public.test).
type authStack struct {
	*stack
	priv, pub *authUpstream
	auth      *access.Gate
	// authReg receives the gate's metrics (authCount).
	authReg prometheus.Gatherer
	logs    *syncBuffer
	log     *slog.Logger
	base    *upstream.Client
	ups     upstreamMap
	mode    string
	source  func(fetch.Source) fetch.Source
}

// peer is the peer API over the stack's store, upstreams and Auth, as a
// cluster node serves it; withTokens: a cluster secret is set.
func (s *authStack) peer(t testing.TB, withTokens bool) *httptest.Server {
	t.Helper()
	var popts peer.ServerOptions
	if withTokens {
		popts.Verify = func(*http.Request, string) error { return nil }
	}
	s.nowMu.Lock()
	h := s.h
	s.nowMu.Unlock()
	p := peer.NewServer(h, popts) // the same gate as /v2/
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv
}

type authStackOptions struct {
	mode     string // upstream auth: basic or token
	nodeUser string // node credential configured for the private upstream
	nodePass string
	private  string // access.PrivateClient or access.PrivateNode
	st       *store.Store
	// source, if set, is Options.Source (a cluster's peer source).
	source func(fetch.Source) fetch.Source
}

func newAuthStack(t testing.TB, o authStackOptions) *authStack {
	t.Helper()
	if o.mode == "" {
		o.mode = "basic"
	}
	priv, pub := newAuthUpstream(t, o.mode), newAuthUpstream(t, "basic")
	st := o.st
	if st == nil {
		var err error
		st, err = store.Open(t.TempDir(), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
	}
	m := metrics.New()
	fc := fetch.New(st, fetch.Options{Resumes: 2, Observer: metrics.FillObserver{M: m}})
	t.Cleanup(fc.Wait)
	pc, err := upstream.New(upstream.Endpoint{Name: "registry.test:5000", URL: priv.URL, Username: o.nodeUser, Password: o.nodePass},
		upstream.Options{Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	qc, err := upstream.New(upstream.Endpoint{Name: "public.test", URL: pub.URL}, upstream.Options{Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := &authStack{stack: &stack{store: st, fetcher: fc, metrics: m, now: time.Unix(1_700_000_000, 0)}, priv: priv, pub: pub, base: pc}
	s.logs = &syncBuffer{}
	s.log = slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s.ups = upstreamMap{"registry.test:5000": pc, "docker.io": pc, "public.test": qc}
	s.mode = o.private
	s.source = o.source
	s.build(m.Registry, m.Registry)
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.nowMu.Lock()
		h := s.h
		s.nowMu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// build makes a new Handler, with a new gate, over the same store and
// upstreams; the gate's metrics go to reg.
func (s *authStack) build(reg prometheus.Registerer, g prometheus.Gatherer) {
	h := New(Options{
		Store: s.store, Fetcher: s.fetcher, Metrics: s.metrics, Logger: s.log,
		Access:          access.Options{Mode: s.mode, Registerer: reg, Logger: s.log, Now: s.clock},
		Upstreams:       s.ups,
		DefaultRegistry: "docker.io",
		TagTTL:          time.Minute,
		Now:             s.clock,
		Source:          s.source,
	})
	s.nowMu.Lock()
	s.auth, s.authReg, s.h = h.Gate(), g, h
	s.nowMu.Unlock()
}

// restart is a process restart as far as authorization goes: the decision
// cache and the in-memory private set are new, the store is the same.
func (s *authStack) restart(t testing.TB) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s.build(reg, reg)
}

func (s *authStack) clock() time.Time {
	s.nowMu.Lock()
	defer s.nowMu.Unlock()
	return s.now
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// authCount sums the series of the gate's counter name whose labels
// include labels (name=value pairs).
func (s *authStack) authCount(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := s.authReg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// checks is how many upstream access checks the gate made.
func (s *authStack) checks(t testing.TB) float64 {
	return s.authCount(t, "berth_auth_upstream_checks_total")
}
