package registry

import (
	"net/http"
	"testing"
)

// TestAuthHiddenRepository is issue 16 item 5: an upstream 404 is no grant
// and no proof of a public repository, because several registries answer
// 404 to hide a private repository from who may not read it.
func TestAuthHiddenRepository(t *testing.T) {
	t.Run("refused anonymously, then 404 for a credential", func(t *testing.T) {
		s, img := setupPrivate(t, authStackOptions{})
		s.priv.setHide("users")
		if r := s.pull(t, privRoutes[0].prefix, "", basicAuth(privUser, privPass), img); !r.allOK() {
			t.Fatalf("right credentials: %v", r.statuses)
		}
		// bob exists upstream but may not read team/app: the registry
		// answers him 404. Everything is cached: he still gets nothing.
		if r := s.pull(t, privRoutes[0].prefix, "", basicAuth("bob", "bobs-password"), img); r.content || !r.all(http.StatusNotFound) {
			t.Fatalf("a credential the upstream answers 404: %v, want 404 and no content", r.statuses)
		}
		if !s.auth.Private(s.base.URL(), privRepo) {
			t.Fatal("the repository is no longer private")
		}
	})
	t.Run("404 to anonymous requests, node credential", func(t *testing.T) {
		s, img := setupPrivate(t, authStackOptions{nodeUser: "node", nodePass: "node-password"})
		s.priv.addUser("node", "node-password", privRepo)
		s.priv.setHide("all")
		if r := s.pull(t, privRoutes[0].prefix, "", "", img); r.content || !r.all(http.StatusNotFound) {
			t.Fatalf("anonymous, nothing cached: %v, want 404 and no content (the node credential must not fetch it)", r.statuses)
		}
		if r := s.pull(t, privRoutes[0].prefix, "", basicAuth(privUser, privPass), img); !r.allOK() {
			t.Fatalf("right credentials: %v", r.statuses)
		}
		for _, auth := range []string{"", basicAuth("bob", "bobs-password")} {
			if r := s.pull(t, privRoutes[0].prefix, "", auth, img); r.content || !r.all(http.StatusNotFound) {
				t.Fatalf("cached, auth %q: %v, want 404 and no content", auth, r.statuses)
			}
		}
		anonymousGetsNothing(t, s, img)
	})
}
