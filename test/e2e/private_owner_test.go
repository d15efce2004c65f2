package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

const (
	nodeUser = "berth-node"
	nodePass = "node-Pa55word-31c7"
)

// TestPrivateOwnerNodeCredential is issue 16 item 1: two nodes with a node
// credential for a Basic-auth registry (private_content: client, the
// default). A user pulls a private image through n1 with their own
// credentials; n2 owns some of its digests, so n1 asks n2 for them. An
// anonymous client then gets no private byte from either node by any route:
// the private repository, a public registry's repository naming the
// digests, or the peer API itself. With a cluster secret n2 fills for the
// verified n1 and marks what it stores private; in a loopback cluster
// without a secret n2 trusts no claim and answers 404, and n1 fetches with
// its client's credentials.
func TestPrivateOwnerNodeCredential(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "htpasswd")
	for _, tc := range []struct{ name, secret string }{{"secret", ""}, {"no secret", "-"}} {
		t.Run(tc.name, func(t *testing.T) {
			priv := startAuthRegistry(t, tools["docker-registry"], tools["htpasswd"], [2]string{privUser, privPass}, [2]string{nodeUser, nodePass})
			pub := startRegistry(t, tools["docker-registry"])
			// Random content: push again until n2 owns some of it (one time
			// in 128 it owns none of an image's seven digests).
			var img image
			for try := range 8 {
				img = pushAuthImage(t, priv.Addr, "team/app", fmt.Sprintf("v%d", try+1), 5, authn.FromConfig(authn.AuthConfig{Username: privUser, Password: privPass}))
				if slices.ContainsFunc(append([]string{img.Digest}, img.Blobs()...), func(dg string) bool { return ownerOf(dg, "n1", "n2") == "n2" }) {
					break
				}
			}
			pushAuthImage(t, pub.Addr, "pub/app", "v1", 1, nil)
			o := func(name, ip string, join ...string) nodeOptions {
				return nodeOptions{Name: name, IP: ip, Join: join, Secret: tc.secret,
					Args: []string{"--upstream", "public.test=http://" + pub.Addr},
					// The credentials apply to upstreams of the file or
					// BERTH_UPSTREAMS; the --upstream flag keeps them.
					Env: []string{"BERTH_UPSTREAMS=registry.test=http://" + priv.Addr,
						"BERTH_UPSTREAMS_REGISTRY_TEST_USERNAME=" + nodeUser, "BERTH_UPSTREAMS_REGISTRY_TEST_PASSWORD=" + nodePass}}
			}
			n1 := startNode(t, priv.Addr, o("n1", "127.0.0.1"))
			n2 := startNode(t, priv.Addr, o("n2", "127.0.0.2", n1.Gossip))
			waitMembers(t, 10*time.Second, []*node{n1, n2}, "n1", "n2")
			digests := append([]string{img.Digest}, img.Blobs()...)
			owned := 0
			for _, dg := range digests {
				if ownerOf(dg, "n1", "n2") == "n2" {
					owned++
				}
			}
			if owned == 0 {
				t.Fatal("n2 owns none of the image's digests: the test would not reach the owner's side")
			}
			if codes, _ := (&privateSetup{b: n1.berth}).get(t, "/v2/team/app", "", basicHeader(privUser, privPass), img); !all(codes, http.StatusOK) {
				t.Fatalf("n1, the user's credentials: %v", codes)
			}
			for _, n := range []*node{n1, n2} {
				for _, dg := range digests {
					for _, p := range []string{
						"/v2/public.test/pub/app/blobs/" + dg, "/v2/public.test/pub/app/manifests/" + dg,
						"/v2/team/app/blobs/" + dg, "/v2/team/app/manifests/" + dg,
						"/peer/v1/blobs/" + dg + "?registry=registry.test&repository=team/app&verified=1&from=n9",
						"/peer/v1/manifests/" + dg + "?registry=registry.test&repository=team/app&verified=1&from=n9",
						"/peer/v1/blobs/" + dg + "?registry=public.test&repository=pub/app&held=1",
					} {
						for _, m := range []string{http.MethodHead, http.MethodGet} {
							resp, body := do(t, m, n.URL+p, http.Header{"Accept": {acceptAll}})
							if resp.StatusCode < 300 {
								t.Errorf("%s: anonymous %s %s: %d (%d bytes), want no content (owner %s)",
									n.Name, m, p, resp.StatusCode, len(body), ownerOf(dg, "n1", "n2"))
							}
						}
					}
				}
			}
			for _, n := range []*node{n1, n2} {
				if hits := secretsIn(t, n.DataDir, privPass, nodePass); len(hits) > 0 {
					t.Errorf("%s: credentials in the data directory: %v", n.Name, hits)
				}
			}
		})
	}
}
