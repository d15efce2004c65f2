package e2e

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/fetch"
)

// Issue 18 in a cluster: a blob with pieces is assembled by every node from
// each piece's own owner, so a hot blob's upload is spread over the cluster.

// startPieceCluster starts n nodes on 127.0.0.1…n in front of upstream.
func startPieceCluster(t *testing.T, upstream string, n int, env ...string) []*node {
	t.Helper()
	var nodes []*node
	var names, join []string
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		nd := startNode(t, upstream, nodeOptions{Name: name, IP: fmt.Sprintf("127.0.0.%d", i+1), Join: join, Env: env})
		nodes = append(nodes, nd)
		names = append(names, name)
		join = append(join, nd.Gossip)
	}
	d := waitMembers(t, 20*time.Second, nodes, names...)
	t.Logf("%d nodes converged in %s", n, d.Round(time.Millisecond))
	return nodes
}

// pullImageBlob pulls repo:tag's manifest from the node (as a client does
// first: it gives the node the layer sizes), then the blob, verified.
func pullImageBlob(n *node, repo, tag, dg string, size int64) error {
	c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableCompression: true}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, n.URL+"/v2/registry.test/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: manifest: %s", n.Name, resp.Status)
	}
	if err := fetchAndHash(c, n.URL+"/v2/registry.test/"+repo+"/blobs/"+dg, dg, size); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	return nil
}

// peerOut is what node n has sent its peers, bytes.
func peerOut(t *testing.T, n *node) float64 {
	return metric(scrape(t, n.berth), "berth_peer_bytes_total", map[string]string{"direction": "out"})
}

// TestClusterHotBlobPieces: six nodes pull one cold 96 MiB blob at once,
// each node's peer uploads capped at 64 MiB/s (cluster.upload_rate), the
// upstream behind one 32 MiB/s link. Every pull is right; the last finishes
// within 1.5x one node pulling a blob of that size alone in the same
// cluster; no node sends its peers more than 2x the blob (one owner of the
// whole blob would send 5x); the upstream sends the blob about once.
func TestClusterHotBlobPieces(t *testing.T) {
	tools := requireE2E(t, "docker-registry")
	reg := startRegistry(t, tools["docker-registry"])
	const size = 96 << 20
	hot := pushLayers(t, reg.Addr, "hot/app", "v1", size)[0]
	ref := pushLayers(t, reg.Addr, "hot/ref", "v1", size)[0]
	link := startThrottle(t, reg.Addr, 32<<20)
	nodes := startPieceCluster(t, link.Addr(), 6, "BERTH_CLUSTER_UPLOAD_RATE=64Mi")

	// One node alone, another blob of the same size: the reference.
	t0 := time.Now()
	if err := pullImageBlob(nodes[0], "hot/ref", "v1", ref, size); err != nil {
		t.Fatal(err)
	}
	alone := time.Since(t0)
	waitNoFills(t, 20*time.Second, nodes)

	sent0 := link.sent.Load()
	out0 := make([]float64, len(nodes))
	for i, n := range nodes {
		out0[i] = peerOut(t, n)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	took := make([]time.Duration, len(nodes))
	t0 = time.Now()
	for i, n := range nodes {
		wg.Go(func() {
			errs[i] = pullImageBlob(n, "hot/app", "v1", hot, size)
			took[i] = time.Since(t0)
		})
	}
	wg.Wait()
	var last time.Duration
	for i, err := range errs {
		if err != nil {
			t.Error(err)
		}
		last = max(last, took[i])
	}
	waitNoFills(t, 20*time.Second, nodes)
	upstream := float64(link.sent.Load()-sent0) / size
	var most float64
	for i, n := range nodes {
		out := (peerOut(t, n) - out0[i]) / size
		most = max(most, out)
		text := scrape(t, n.berth)
		t.Logf("%s sent its peers %.2fx the blob; fallbacks %v, piece fetches from upstream %v, pieces held %v", n.Name, out,
			metric(text, "berth_peer_fallbacks_total", nil), metric(text, "berth_piece_fetches_total", map[string]string{"source": "upstream"}),
			metric(text, "berth_pieces_held", nil))
	}
	t.Logf("one node alone: %v; six at once: last %v (%.2fx); upstream %.3fx the blob; most sent by one node %.2fx",
		alone.Round(time.Millisecond), last.Round(time.Millisecond), last.Seconds()/alone.Seconds(), upstream, most)
	if last.Seconds() > 1.5*alone.Seconds() {
		t.Errorf("the last of six pulls took %v, over 1.5x one node alone (%v)", last, alone)
	}
	if most > 2 {
		t.Errorf("a node sent its peers %.2fx the blob, over 2x", most)
	}
	if upstream > 1.05 {
		t.Errorf("the upstream sent %.3fx the blob, over 1.05x", upstream)
	}
}

// TestClusterPieceOwnerKilled: a node pulls a cold 96 MiB blob whose pieces
// four nodes own; one piece owner is killed (SIGKILL) mid-transfer. The
// pull is right, takes at most 2 s more than the same pull of another blob
// without the kill, and the upstream sends at most the interrupted pieces
// again.
func TestClusterPieceOwnerKilled(t *testing.T) {
	tools := requireE2E(t, "docker-registry")
	reg := startRegistry(t, tools["docker-registry"])
	const size = 96 << 20
	dgs := []string{pushLayers(t, reg.Addr, "kill/ref", "v1", size)[0], pushLayers(t, reg.Addr, "kill/app", "v1", size)[0]}
	link := startThrottle(t, reg.Addr, 32<<20)
	nodes := startPieceCluster(t, link.Addr(), 4)
	puller := nodes[0]

	t0 := time.Now()
	if err := pullImageBlob(puller, "kill/ref", "v1", dgs[0], size); err != nil {
		t.Fatal(err)
	}
	base := time.Since(t0)
	waitNoFills(t, 20*time.Second, nodes)

	sent0 := link.sent.Load()
	in0 := metric(scrape(t, puller.berth), "berth_peer_bytes_total", map[string]string{"direction": "in"})
	done := make(chan error, 1)
	t0 = time.Now()
	go func() { done <- pullImageBlob(puller, "kill/app", "v1", dgs[1], size) }()
	// Kill a piece owner once the puller has received a third of the blob
	// from its peers.
	victim := nodes[2]
	deadline := time.Now().Add(20 * time.Second)
	for metric(scrape(t, puller.berth), "berth_peer_bytes_total", map[string]string{"direction": "in"})-in0 < size/3 {
		if time.Now().After(deadline) {
			t.Fatal("the puller received less than a third of the blob from its peers in 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	killedAt := time.Since(t0)
	victim.signal(syscall.SIGKILL)
	<-victim.done
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	again := float64(link.sent.Load()-sent0) - size
	piece := float64(fetch.PlanFor(size).PieceSize)
	t.Logf("%s killed at %v; pull took %v (without a kill %v: %v more); the upstream sent %.1f MiB more than the blob (a piece is %.0f MiB)",
		victim.Name, killedAt.Round(time.Millisecond), took.Round(time.Millisecond), base.Round(time.Millisecond),
		(took - base).Round(time.Millisecond), again/(1<<20), piece/(1<<20))
	if took-base > 2*time.Second {
		t.Errorf("the pull took %v more than without the kill, over 2 s", took-base)
	}
	// The victim's pieces in flight (one per puller worker at most) are
	// fetched again from the byte the puller had.
	if again > 2*piece {
		t.Errorf("the upstream sent %.1f MiB more than the blob, over two pieces", again/(1<<20))
	}
}
