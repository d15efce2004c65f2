package registry

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestAuthPeerOwnerNodeCredential is issue 16 item 1 on the owner's side:
// a node with a credential for a Basic-auth upstream (no upstream token to
// hand over), private_content: client. A peer asks it, as the digest's
// owner, for a private image's content. Whatever the peer API answers, an
// anonymous client of this node gets no private byte afterwards by any
// route: the private repository, or a public repository's path naming the
// digest.
func TestAuthPeerOwnerNodeCredential(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tokens bool // a cluster secret: the peer's "verified" is trusted
		want   int  // the peer API's answer
	}{
		{"with a cluster secret, verified peer", true, http.StatusOK},
		{"without a cluster secret", false, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, img := setupPrivate(t, authStackOptions{nodeUser: "node", nodePass: "node-password"})
			s.priv.addUser("node", "node-password", privRepo)
			s.pub.setPublic("pub/app")
			peer := s.peer(t, tc.tokens)
			q := "?registry=registry.test:5000&repository=" + privRepo + "&verified=1&from=node-a"
			for _, p := range []string{"/peer/v1/manifests/" + img.manifest.String(), "/peer/v1/manifests/" + img.config.String(),
				"/peer/v1/blobs/" + img.layers[0].String(), "/peer/v1/blobs/" + img.config.String()} {
				for _, m := range []string{http.MethodHead, http.MethodGet} {
					req, _ := http.NewRequest(m, peer.URL+p+q, nil)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if strings.Contains(p, "/blobs/") && resp.StatusCode != tc.want {
						t.Fatalf("%s %s: %d, want %d", m, p, resp.StatusCode, tc.want)
					}
				}
			}
			anonymousGetsNothing(t, s, img)
		})
	}
}

// anonymousGetsNothing asserts that a client without credentials reads no
// byte of img through this node: not through its private repository, not
// through a public repository naming its digests.
func anonymousGetsNothing(t *testing.T, s *authStack, img image) {
	t.Helper()
	digests := append([]string{img.manifest.String(), img.config.String()}, img.layers[0].String(), img.layers[1].String())
	for _, pre := range []string{"/v2/public.test/pub/app", "/v2/registry.test:5000/" + privRepo, "/v2/" + privRepo} {
		for _, dg := range digests {
			for _, kind := range []string{"blobs", "manifests"} {
				for _, m := range []string{http.MethodGet, http.MethodHead} {
					resp, body := s.do(t, m, pre+"/"+kind+"/"+dg)
					if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent {
						t.Fatalf("anonymous %s %s/%s/%s: %d, want no content", m, pre, kind, dg, resp.StatusCode)
					}
					for _, d := range img.data {
						if len(d) > 32 && strings.Contains(string(body), string(d[:32])) {
							t.Fatalf("anonymous %s %s/%s/%s: private bytes in the answer", m, pre, kind, dg)
						}
					}
				}
			}
		}
	}
}
