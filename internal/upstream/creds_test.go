package upstream

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
)

// TestWithAuthenticator: a client derived for other credentials uses them,
// and only them, against the same endpoint.
func TestWithAuthenticator(t *testing.T) {
	users := map[string]string{"node": "node-pw", "alice": "alice-pw"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || users[u] != p {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	base, err := New(Endpoint{Name: "r.test", URL: srv.URL, Username: "node", Password: "node-pw"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !base.HasCredentials() {
		t.Fatal("a client with a node credential reports none")
	}
	anon, err := base.WithAuthenticator(authn.Anonymous)
	if err != nil {
		t.Fatal(err)
	}
	alice, err := base.WithAuthenticator(authn.FromConfig(authn.AuthConfig{Username: "alice", Password: "alice-pw"}))
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := base.WithAuthenticator(authn.FromConfig(authn.AuthConfig{Username: "alice", Password: "x"}))
	if err != nil {
		t.Fatal(err)
	}
	if anon.HasCredentials() || anon.Name() != "r.test" || anon.URL() != srv.URL {
		t.Fatal("anonymous client: wrong identity or credentials")
	}
	ctx := context.Background()
	for name, c := range map[string]*Client{"node": base, "alice": alice} {
		if _, err := c.HeadManifest(ctx, "team/app", "v1"); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, c := range map[string]*Client{"anonymous": anon, "wrong": wrong} {
		if _, err := c.HeadManifest(ctx, "team/app", "v1"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The base client's own credential is untouched.
	if _, err := base.HeadManifest(ctx, "team/app", "v1"); err != nil {
		t.Errorf("node after deriving clients: %v", err)
	}
}
