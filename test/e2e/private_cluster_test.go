package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/berth-mirror/berth/internal/cluster"
)

// TestPrivateCluster: private content in a three-node cluster behind a
// Basic-auth registry. Every node challenges clients without credentials,
// whatever its peers hold; a node that verified its client gets a private
// blob from the peer that holds it (fetched for the same repository: an
// owner before it, or a member after it asked whether it holds it), and
// otherwise fetches it itself with the client's credentials (a Basic-only
// upstream: the owner has nothing it could fetch with).
func TestPrivateCluster(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "htpasswd")
	priv := startAuthRegistry(t, tools["docker-registry"], tools["htpasswd"], [2]string{privUser, privPass})
	creds := authn.FromConfig(authn.AuthConfig{Username: privUser, Password: privPass})
	img := pushAuthImage(t, priv.Addr, "team/app", "v1", 5, creds)
	fresh := pushAuthImage(t, priv.Addr, "team/app", "v2", 5, creds)
	nodes := startCluster(t, priv.Addr)
	auth := basicHeader(privUser, privPass)
	on := func(n *node) *privateSetup { return &privateSetup{b: n.berth} }

	if codes, _ := on(nodes[0]).get(t, "/v2/team/app", "", auth, img); !all(codes, http.StatusOK) {
		t.Fatalf("n1, right credentials: %v", codes)
	}
	for _, n := range nodes {
		for _, h := range []http.Header{nil, basicHeader(privUser, "wrong")} {
			if codes, content := on(n).get(t, "/v2/team/app", "", h, img); !all(codes, http.StatusUnauthorized) || content {
				t.Errorf("%s, %d auth headers: %v", n.Name, len(h), codes)
			}
		}
	}
	before := map[string]int{}
	for _, b := range append(img.Blobs(), fresh.Blobs()...) {
		before[b] = priv.blobGets(t, "team/app", b)
	}
	// n1 holds every blob of img, and in a cluster of three it is always
	// either an owner before n2 or one of the two members n2 asks after
	// itself: n2 gets all of them from n1. No node holds fresh: n2 fetches
	// it from the upstream itself.
	for _, im := range []image{img, fresh} {
		if codes, _ := on(nodes[1]).get(t, "/v2/team/app", "", auth, im); !all(codes, http.StatusOK) {
			t.Fatalf("n2, right credentials: %v", codes)
		}
	}
	time.Sleep(300 * time.Millisecond) // let the registry log what is in flight
	members := []cluster.Member{{Name: "n1"}, {Name: "n2"}, {Name: "n3"}}
	for _, tt := range []struct {
		im   image
		want int
	}{{img, 0}, {fresh, 1}} {
		for _, b := range tt.im.Blobs() {
			if got := priv.blobGets(t, "team/app", b) - before[b]; got != tt.want {
				t.Errorf("blob %s (owners %v): %d upstream GETs for n2's pull, want %d", b, cluster.Owners(b, members), got, tt.want)
			}
		}
	}
	for _, n := range nodes {
		checkNoSecrets(t, n.berth, privPass)
	}
}

// TestPrivateClusterToken: behind a token-auth registry, a private blob
// crosses the internet once per cluster. The node that verified its client
// hands the owner a short-lived, repository-scoped upstream token (never the
// password); the owner fetches with it and serves every verified peer.
func TestPrivateClusterToken(t *testing.T) {
	requireE2E(t)
	tok := newTokenUpstream(t)
	tok.addUser(privUser, privPass, "team/app")
	host := strings.TrimPrefix(tok.URL, "http://")
	img := pushAuthImage(t, host, "team/app", "v1", 5, authn.FromConfig(authn.AuthConfig{Username: privUser, Password: privPass}))
	pushed := map[string]int{}
	for _, b := range img.Blobs() {
		pushed[b] = tok.getsOf("/v2/team/app/blobs/" + b)
	}
	nodes := startCluster(t, host)
	auth := basicHeader(privUser, privPass)
	for _, n := range nodes {
		s := &privateSetup{b: n.berth}
		if codes, content := s.get(t, "/v2/team/app", "", nil, img); !all(codes, http.StatusUnauthorized) || content {
			t.Fatalf("%s without credentials: %v", n.Name, codes)
		}
		if codes, _ := s.get(t, "/v2/team/app", "", auth, img); !all(codes, http.StatusOK) {
			t.Fatalf("%s with credentials: %v", n.Name, codes)
		}
	}
	for _, b := range img.Blobs() {
		if n := tok.getsOf("/v2/team/app/blobs/"+b) - pushed[b]; n != 1 {
			t.Errorf("blob %s: %d upstream GETs for three nodes' pulls, want 1 (owner %s)", b, n, ownerOf(b, "n1", "n2", "n3"))
		}
	}
	for _, n := range nodes {
		checkNoSecrets(t, n.berth, privPass)
	}
}
