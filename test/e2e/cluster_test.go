package e2e

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/cluster"
	"github.com/berth-mirror/berth/internal/peer"
)

// startCluster starts three nodes on 127.0.0.1-3 that join each other and
// waits until each sees all three.
func startCluster(t *testing.T, upstreamAddr string) []*node {
	t.Helper()
	n1 := startNode(t, upstreamAddr, nodeOptions{Name: "n1", IP: "127.0.0.1"})
	n2 := startNode(t, upstreamAddr, nodeOptions{Name: "n2", IP: "127.0.0.2", Join: []string{n1.Gossip}})
	n3 := startNode(t, upstreamAddr, nodeOptions{Name: "n3", IP: "127.0.0.3", Join: []string{n1.Gossip, n2.Gossip}})
	nodes := []*node{n1, n2, n3}
	d := waitMembers(t, 15*time.Second, nodes, "n1", "n2", "n3")
	t.Logf("three nodes converged in %s", d.Round(time.Millisecond))
	return nodes
}

// TestClusterOneUpstreamGetPerBlob: concurrent pulls of a multi-layer image
// on every node of a three-node cluster fetch each blob, and the manifest,
// from the upstream exactly once; the other nodes get them from the owner.
func TestClusterOneUpstreamGetPerBlob(t *testing.T) {
	tools := requireE2E(t, "docker-registry")
	reg := startRegistry(t, tools["docker-registry"])
	sizes := []int{1 << 20, 3 << 20, 6 << 20, 12 << 20, 200 << 10}
	dgs := pushLayers(t, reg.Addr, "test/app", "v1", sizes...)
	nodes := startCluster(t, reg.Addr)

	const clientsPerNode = 3
	start := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, n := range nodes {
		for range clientsPerNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				// As a client does: the manifest by tag (resolved on each
				// node; the manifest itself from its owner), then the blobs.
				resp, err := http.Get(n.URL + "/v2/registry.test/test/app/manifests/v1")
				if err == nil {
					_ = resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%s: manifest: %s", n.Name, resp.Status)
					}
				}
				if err == nil {
					err = pullBlobs(n, "test/app", dgs, sizes)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d concurrent pulls of %d layers over 3 nodes took %s", 3*clientsPerNode, len(dgs), time.Since(t0).Round(time.Millisecond))
	for _, err := range errs {
		t.Error(err)
	}
	for _, dg := range dgs {
		if n := reg.settledAnyGets(t, "test/app", dg); n != 1 {
			t.Errorf("blob %s: the upstream served %d GETs, want exactly 1 (owner %s)", dg, n, ownerOf(dg, "n1", "n2", "n3"))
		}
	}
	b, _ := os.ReadFile(reg.accessLog)
	if n := regexp.MustCompile(`"GET /v2/test/app/manifests/sha256:[0-9a-f]+ HTTP/1\.1" 200 `).FindAll(b, -1); len(n) != 1 {
		t.Errorf("the upstream served the manifest %d times, want once (tags are resolved per node with HEAD)", len(n))
	}
	// Every blob not owned by a node reached it from a peer.
	for _, n := range nodes {
		var want float64
		for i, dg := range dgs {
			if ownerOf(dg, "n1", "n2", "n3") != n.Name {
				want += float64(sizes[i])
			}
		}
		got := metric(scrape(t, n.berth), "berth_peer_bytes_total", map[string]string{"direction": "in"})
		if got != want {
			t.Errorf("%s received %v bytes from peers, want %v", n.Name, got, want)
		}
		var served int64
		for _, m := range n.peers(t) {
			served += m.ServedBytes
			if m.URL == "" || m.Address == "" {
				t.Errorf("%s: peers.list member without URL or address: %+v", n.Name, m)
			}
		}
		if float64(served) != want {
			t.Errorf("%s: peers.list says peers served it %d bytes, want %v", n.Name, served, want)
		}
	}
}

// TestClusterOwnerKilledMidTransfer: the owner of a blob is killed (SIGKILL)
// while it streams the blob to the other nodes; every pull on the others
// still completes with the right digest, and the upstream sends at most
// a quarter of the blob again.
func TestClusterOwnerKilledMidTransfer(t *testing.T) {
	tools := requireE2E(t, "docker-registry")
	reg := startRegistry(t, tools["docker-registry"])
	const size = 48 << 20
	const rate = 24 << 20 // bytes/s on the shared "WAN link": ~2 s for the blob
	dgs := pushLayers(t, reg.Addr, "test/big", "v1", size)
	dg := dgs[0]
	link := startThrottle(t, reg.Addr, rate)
	nodes := startCluster(t, link.Addr())
	owner := ownerOf(dg, "n1", "n2", "n3")
	var victim *node
	var others []*node
	for _, n := range nodes {
		if n.Name == owner {
			victim = n
		} else {
			others = append(others, n)
		}
	}
	url := func(n *node) string { return n.URL + "/v2/registry.test/test/big/blobs/" + dg }

	type result struct {
		node string
		err  error
		took time.Duration
	}
	results := make(chan result, 2*len(others))
	start := time.Now()
	for _, n := range others {
		for range 2 {
			go func() {
				c := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableCompression: true}}
				defer c.CloseIdleConnections()
				err := fetchAndHash(c, url(n), dg, size)
				results <- result{n.Name, err, time.Since(start)}
			}()
		}
	}
	// Kill the owner once it has streamed part of the blob to the others.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var in float64
		for _, n := range others {
			in += metric(scrape(t, n.berth), "berth_peer_bytes_total", map[string]string{"direction": "in"})
		}
		if in >= 8<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other nodes received only %v bytes from the owner in 10s", in)
		}
		time.Sleep(20 * time.Millisecond)
	}
	killedAt := time.Since(start)
	victim.signal(syscall.SIGKILL)
	<-victim.done
	var slowest time.Duration
	for range 2 * len(others) {
		r := <-results
		if r.err != nil {
			t.Errorf("pull on %s: %v", r.node, r.err)
		}
		slowest = max(slowest, r.took)
	}
	alone := time.Duration(float64(size) / rate * float64(time.Second))
	t.Logf("owner %s killed at %s; the pulls on the other nodes finished at %s; the blob alone takes ~%s over the link: %s extra",
		owner, killedAt.Round(time.Millisecond), slowest.Round(time.Millisecond), alone.Round(time.Millisecond),
		(slowest - alone).Round(time.Millisecond))
	// The owner fetched its pieces from the upstream in parallel; what it
	// had not passed on when it died is fetched again by the node that
	// resumes from the upstream (the other resumes from that node): at most
	// the blob once more than what the owner had received, which on this
	// link by the kill is a fraction of it.
	if sent := link.sent.Load(); float64(sent) > 1.25*size {
		t.Errorf("the upstream sent %d bytes for a blob of %d (%.2fx), want at most 1.25x", sent, size, float64(sent)/size)
	} else {
		t.Logf("the upstream sent %.2fx the blob in %d GETs", float64(sent)/size, reg.settledAnyGets(t, "test/big", dg))
	}
	for _, n := range others {
		fb := metric(scrape(t, n.berth), "berth_peer_fallbacks_total", nil)
		t.Logf("%s: %v fallbacks", n.Name, fb)
	}
}

// TestClusterLateJoinerAndNewAddress: a node that joins late is an owner
// like the others (it fetches its blobs upstream and serves them), and a
// node killed and restarted on another address rejoins under its name.
func TestClusterLateJoinerAndNewAddress(t *testing.T) {
	tools := requireE2E(t, "docker-registry")
	reg := startRegistry(t, tools["docker-registry"])
	// Ownership depends only on the digests and the member names: push
	// random layers until n3 owns at least four (a fixed count would leave
	// it owning fewer than two about one run in twenty).
	var dgs []string
	var sizes []int
	for round := 0; round < 8 && countOwned(dgs, "n3", "n1", "n2", "n3") < 4; round++ {
		batch := make([]int, 12)
		for i := range batch {
			batch[i] = 64<<10 + 16*round + i
		}
		dgs = append(dgs, pushLayers(t, reg.Addr, "test/many", fmt.Sprintf("v%d", round), batch...)...)
		sizes = append(sizes, batch...)
	}
	n1 := startNode(t, reg.Addr, nodeOptions{Name: "n1", IP: "127.0.0.1"})
	n2 := startNode(t, reg.Addr, nodeOptions{Name: "n2", IP: "127.0.0.2", Join: []string{n1.Gossip}})
	waitMembers(t, 15*time.Second, []*node{n1, n2}, "n1", "n2")
	n3data := t.TempDir()
	n3 := startNode(t, reg.Addr, nodeOptions{Name: "n3", IP: "127.0.0.3", Join: []string{n1.Gossip}, DataDir: n3data})
	d := waitMembers(t, 15*time.Second, []*node{n1, n2, n3}, "n1", "n2", "n3")
	t.Logf("the late joiner was seen by all in %s", d.Round(time.Millisecond))

	// Blobs n3 owns, pulled through n1: n3 fetches them once and serves them.
	var owned []string
	var ownedSizes []int
	for i, dg := range dgs {
		if ownerOf(dg, "n1", "n2", "n3") == "n3" {
			owned = append(owned, dg)
			ownedSizes = append(ownedSizes, sizes[i])
		}
	}
	if len(owned) < 2 {
		t.Fatalf("only %d of %d blobs are owned by n3", len(owned), len(dgs))
	}
	half := len(owned) / 2
	if err := pullBlobs(n1, "test/many", owned[:half], ownedSizes[:half]); err != nil {
		t.Fatal(err)
	}
	if err := pullBlobs(n3, "test/many", owned[:half], ownedSizes[:half]); err != nil {
		t.Fatal(err)
	}
	for _, dg := range owned[:half] {
		if n := reg.settledAnyGets(t, "test/many", dg); n != 1 {
			t.Errorf("blob %s owned by the late joiner: %d upstream GETs, want 1", dg, n)
		}
	}
	if out := metric(scrape(t, n3.berth), "berth_peer_bytes_total", map[string]string{"direction": "out"}); out == 0 {
		t.Error("the late joiner served no bytes to its peers")
	}

	// Restart n3 (kill -9) on another address, same name and data.
	n3.signal(syscall.SIGKILL)
	<-n3.done
	t0 := time.Now()
	n3b := startNode(t, reg.Addr, nodeOptions{Name: "n3", IP: "127.0.0.4", Join: []string{n1.Gossip}, DataDir: n3data})
	deadline := time.Now().Add(40 * time.Second)
	for {
		var addr string
		for _, m := range n2.peers(t) {
			if m.Name == "n3" && m.State == cluster.StateAlive {
				addr = m.Address
			}
		}
		if addr == n3b.Gossip {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n2 does not see n3 alive at its new address %s: %+v", n3b.Gossip, n2.peers(t))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("n3 restarted on a new address was seen there by n2 after %s", time.Since(t0).Round(time.Millisecond))
	waitMembers(t, 20*time.Second, []*node{n1, n2, n3b}, "n1", "n2", "n3")
	if err := pullBlobs(n2, "test/many", owned[half:], ownedSizes[half:]); err != nil {
		t.Fatal(err)
	}
	for _, dg := range owned[half:] {
		if n := reg.settledAnyGets(t, "test/many", dg); n != 1 {
			t.Errorf("blob %s owned by the restarted node: %d upstream GETs, want 1", dg, n)
		}
	}
	if out := metric(scrape(t, n3b.berth), "berth_peer_bytes_total", map[string]string{"direction": "out"}); out == 0 {
		t.Error("the restarted node served no bytes to its peers")
	}
}

// TestClusterPeerTokens: peer requests without a valid token are refused at
// once, on the main listener and on the peer-only listener, and cost no
// upstream request; a valid one is served, and refused when replayed. The
// peer-only listener serves
// nothing but the peer API.
func TestClusterPeerTokens(t *testing.T) {
	tools := requireE2E(t, "docker-registry")
	reg := startRegistry(t, tools["docker-registry"])
	dgs := pushLayers(t, reg.Addr, "test/tok", "v1", 100<<10)
	dg := dgs[0]
	peerAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	n := startNode(t, reg.Addr, nodeOptions{Name: "n1", IP: "127.0.0.1", Env: []string{"BERTH_CLUSTER_PEER_LISTEN=" + peerAddr}})
	path := "/peer/v1/blobs/" + dg + "?registry=registry.test&repository=test%2Ftok"
	keys := peer.NewKeys(clusterSecret)
	sign := func(at time.Time) http.Header {
		return http.Header{"Authorization": {peer.AuthScheme + " " + keys.Sign("GET", path, dg, at)}}
	}
	wrong := peer.NewKeys("another-secret-0123456789")
	for _, base := range []string{n.URL, "http://" + peerAddr} {
		tests := []struct {
			name   string
			hdr    http.Header
			status int
		}{
			{"missing", nil, http.StatusUnauthorized},
			{"wrong secret", http.Header{"Authorization": {peer.AuthScheme + " " + wrong.Sign("GET", path, dg, time.Now())}}, http.StatusForbidden},
			{"expired", sign(time.Now().Add(-5 * time.Minute)), http.StatusForbidden},
			{"garbage", http.Header{"Authorization": {peer.AuthScheme + " 123.abc"}}, http.StatusForbidden},
		}
		for _, tt := range tests {
			t.Run(base+" "+tt.name, func(t *testing.T) {
				resp, body := do(t, "GET", base+path, tt.hdr)
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
				}
			})
		}
	}
	if got := reg.blobGetsAnyStatus(t, "test/tok", dg); got != 0 {
		t.Fatalf("refused peer requests caused %d upstream GETs", got)
	}
	valid := sign(time.Now())
	resp, body := do(t, "GET", "http://"+peerAddr+path, valid)
	if resp.StatusCode != http.StatusOK || sha256Digest(body) != dg {
		t.Fatalf("a valid peer request: status %d, body %d bytes", resp.StatusCode, len(body))
	}
	// The same request again, on either listener: a replay.
	for _, base := range []string{"http://" + peerAddr, n.URL} {
		if resp, body := do(t, "GET", base+path, valid); resp.StatusCode != http.StatusForbidden {
			t.Errorf("a replayed peer request to %s: status %d, want 403: %s", base, resp.StatusCode, body)
		}
	}
	if resp, _ := do(t, "GET", "http://"+peerAddr+"/v2/", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("the peer-only listener answered /v2/ with %d, want 404", resp.StatusCode)
	}
	if got := reg.settledAnyGets(t, "test/tok", dg); got != 1 {
		t.Errorf("%d upstream GETs, want 1", got)
	}
}

// TestClusterNeverMerge: nodes of clusters with another name or another
// secret, told to join, never become members of each other's cluster.
func TestClusterNeverMerge(t *testing.T) {
	tools := requireE2E(t, "docker-registry")
	reg := startRegistry(t, tools["docker-registry"])
	a := startNode(t, reg.Addr, nodeOptions{Name: "a", IP: "127.0.0.1"})
	b := startNode(t, reg.Addr, nodeOptions{Name: "b", IP: "127.0.0.2", Join: []string{a.Gossip}})
	otherName := startNode(t, reg.Addr, nodeOptions{Name: "x", IP: "127.0.0.3", Cluster: "other", Join: []string{a.Gossip, b.Gossip}})
	otherSecret := startNode(t, reg.Addr, nodeOptions{Name: "y", IP: "127.0.0.4", Secret: "a-different-secret-0123", Join: []string{a.Gossip, b.Gossip}})
	waitMembers(t, 15*time.Second, []*node{a, b}, "a", "b")
	time.Sleep(3 * time.Second) // several join rounds and push/pulls
	waitMembers(t, time.Second, []*node{a, b}, "a", "b")
	waitMembers(t, time.Second, []*node{otherName}, "x")
	waitMembers(t, time.Second, []*node{otherSecret}, "y")
	for _, n := range []*node{otherName, otherSecret} {
		if lines := n.logLines(t, "cluster member joined"); len(lines) != 1 || !strings.Contains(lines[0], `"member":"`+n.Name+`"`) {
			t.Errorf("%s logged joins: %q", n.Name, lines)
		}
	}
}

// countOwned is how many of dgs member owns among members.
func countOwned(dgs []string, member string, members ...string) int {
	n := 0
	for _, dg := range dgs {
		if ownerOf(dg, members...) == member {
			n++
		}
	}
	return n
}
