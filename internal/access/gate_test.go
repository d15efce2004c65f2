package access

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/upstream"
)

// basicUpstream is a registry that answers HEADs of manifests: "lib/pub"
// to anyone, "team/app" to alice only (Basic), 401 to the rest.
type basicUpstream struct {
	*httptest.Server
	heads atomic.Int32
}

const testDigest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"

func newBasicUpstream(t *testing.T) *basicUpstream {
	t.Helper()
	u := &basicUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ := r.BasicAuth()
		public := strings.HasPrefix(r.URL.Path, "/v2/lib/pub/")
		if r.Method == http.MethodHead {
			u.heads.Add(1)
		}
		if !public && (user != "alice" || pass != "pw" || !strings.HasPrefix(r.URL.Path, "/v2/team/app/")) {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Docker-Content-Digest", testDigest)
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(u.Close)
	return u
}

func newTestGate(t *testing.T, u *basicUpstream) (*Gate, *upstream.Client) {
	t.Helper()
	c, err := upstream.New(upstream.Endpoint{Name: "registry.test", URL: u.URL}, upstream.Options{Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return New(Options{}), c
}

// TestGateDecisions: the decision API end to end against an upstream,
// without a registry handler: public content is granted with the routed
// client; a repository refused anonymously is challenged, then granted to
// accepted credentials with its private mark; wrong ones are challenged; the
// retry hook turns a refusal of a public grant into the private path; a
// peer that did not check its client is told nothing is there.
func TestGateDecisions(t *testing.T) {
	u := newBasicUpstream(t)
	g, c := newTestGate(t, u)
	ctx := context.Background()
	req := func(repo string, creds Credentials) Request {
		return Request{Registry: "registry.test", Repository: repo, Kind: Manifest, Reference: "v1", Client: c, Credentials: creds}
	}
	alice := Credentials{Username: "alice", Password: "pw"}

	d, err := g.Authorize(ctx, req("lib/pub", Credentials{}))
	if err != nil || d.Challenge != nil || d.Client != c || d.Private || d.Origin != "" {
		t.Fatalf("public: %+v, %v; want the routed client, not private", d, err)
	}
	// The fill of a repository not known private is refused upstream: the
	// retry hook marks it private and challenges an anonymous client...
	d, err = g.Refused(ctx, req("team/app", Credentials{}), d)
	if err != nil || d.Challenge == nil {
		t.Fatalf("refused, anonymous: %+v, %v; want a challenge", d, err)
	}
	if !g.Private(u.URL, "team/app") {
		t.Fatal("a refused repository is not marked private")
	}
	// ...and from now on Authorize challenges anonymous clients itself.
	if d, err = g.Authorize(ctx, req("team/app", Credentials{})); err != nil || d.Challenge == nil {
		t.Fatalf("private, anonymous: %+v, %v; want a challenge", d, err)
	}
	d, err = g.Authorize(ctx, req("team/app", alice))
	if err != nil || d.Challenge != nil || !d.Private || d.Client == c || d.Origin != RepositoryID(u.URL, "team/app") {
		t.Fatalf("private, accepted credentials: %+v, %v; want a private grant with the client's credentials", d, err)
	}
	heads := u.heads.Load()
	if d, err = g.Authorize(ctx, req("team/app", alice)); err != nil || d.Challenge != nil || u.heads.Load() != heads {
		t.Fatalf("accepted credentials again: %+v, %v, %d more upstream checks; want a remembered grant", d, err, u.heads.Load()-heads)
	}
	if d, err = g.Authorize(ctx, req("team/app", Credentials{Username: "alice", Password: "guess"})); err != nil || d.Challenge == nil {
		t.Fatalf("wrong credentials: %+v, %v; want a challenge", d, err)
	}
	// Access revoked within auth_ttl: the retry hook of a private grant
	// forgets it and challenges.
	if d, err = g.Refused(ctx, req("team/app", alice), Decision{Grant: Grant{Private: true}}); err != nil || d.Challenge == nil {
		t.Fatalf("private grant refused: %+v, %v; want a challenge", d, err)
	}
	if d, err = g.Authorize(ctx, Request{Registry: "registry.test", Repository: "team/app", Kind: Blob, Reference: testDigest,
		Client: c, Peer: &Peer{}}); !isReason(err, NotFound) {
		t.Fatalf("unverified peer, private repository: %+v, %v; want NotFound", d, err)
	}
	if d, err = g.Authorize(ctx, Request{Registry: "registry.test", Repository: "team/app", Kind: Tags, Client: c,
		CredentialsErr: errAuthScheme}); err != nil || d.Challenge == nil || !strings.Contains(d.Challenge.Message, "Basic") {
		t.Fatalf("unreadable Authorization: %+v, %v; want a challenge naming Basic", d, err)
	}
}

func isReason(err error, r Reason) bool {
	var e *Error
	return errors.As(err, &e) && e.Reason == r
}
