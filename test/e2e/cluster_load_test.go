package e2e

import (
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Cluster tests under load (issue 15): a slow upstream, few fetch slots,
// a node joining, a node killed and restarted. Each counts the upstream
// blob GETs, of any status, in docker-registry's access log and checks
// every body's digest.

// startLoadCluster starts n nodes n1…nN on 127.0.0.1…N, each joining n1
// (and n2), and waits until all see all. args, if not nil, gives node i
// (from 0) extra serve flags.
func startLoadCluster(t *testing.T, upstreamAddr string, n int, args func(i int) []string) []*node {
	t.Helper()
	var nodes []*node
	var names, join []string
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		o := nodeOptions{Name: name, IP: fmt.Sprintf("127.0.0.%d", i+1), Join: slices.Clone(join)}
		if args != nil {
			o.Args = args(i)
		}
		nodes = append(nodes, startNode(t, upstreamAddr, o))
		names = append(names, name)
		if len(join) < 2 {
			join = append(join, nodes[i].Gossip)
		}
	}
	d := waitMembers(t, 20*time.Second, nodes, names...)
	t.Logf("%d nodes converged in %s", n, d.Round(time.Millisecond))
	return nodes
}

func nodeNames(nodes []*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	return out
}

// checkGets fails the test, with the counts of every digest, unless
// ok(i, counts[i]) holds for each.
func checkGets(t *testing.T, what string, dgs []string, counts []int, members []string, ok func(i, n int) bool) {
	t.Helper()
	table := getsTable(dgs, counts, members...)
	for i := range dgs {
		if !ok(i, counts[i]) {
			t.Errorf("%s: blob %s: %d upstream GETs; per blob:%s", what, short(dgs[i]), counts[i], table)
			return
		}
	}
	t.Logf("%s: upstream GETs per blob:%s", what, table)
}

// TestClusterLoadSlowUpstream: the upstream takes longer to start answering
// a blob GET than a node waits for a peer's response headers. Six clients
// on three nodes pull three cold layers; the owner of each fetches it once
// and every other node waits for it rather than going to the upstream too.
func TestClusterLoadSlowUpstream(t *testing.T) {
	tools := requireE2E(t, "docker-registry")
	reg := startRegistry(t, tools["docker-registry"])
	const repo = "test/slow"
	const delay = 12 * time.Second // > the asking node's 10 s peer first-byte timeout
	sizes := []int{1 << 20, 2 << 20, 512 << 10}
	dgs := pushLayers(t, reg.Addr, repo, "v1", sizes...)
	slow := startDelayProxy(t, reg.Addr, delay)
	nodes := startLoadCluster(t, slow.Addr(), 3, nil)
	logTrouble(t, nodes...)

	t0 := time.Now()
	errs := pullAll(repo, everyNode(nodes, 2, dgs, sizes))
	t.Logf("6 clients on 3 nodes pulled %d layers (upstream first byte after %s) in %s",
		len(dgs), delay, time.Since(t0).Round(time.Millisecond))
	for _, err := range errs {
		t.Error(err)
	}
	counts := upstreamGets(t, reg, repo, dgs, nodes)
	t.Logf("the delaying proxy saw %d blob GETs", slow.gets.Load())
	checkGets(t, "slow upstream", dgs, counts, nodeNames(nodes), func(_, n int) bool { return n == 1 })
}

// TestClusterLoadFewSlots: nodes allowed two upstream fetches at a time,
// behind a slow shared link, pull nine cold layers all at once. A fill
// waiting on a peer must not starve that peer of the slots it needs to
// fetch for everyone: each blob comes from the upstream once.
//
// Left to chance, the bad interleaving is rare (every slot of every node
// held by a fill waiting on a peer whose own fill is queued): each node's
// peer API sits behind a gate that holds connections, each node first gets
// two requests for blobs other nodes own (their fills take both slots and
// ask the owners), then the other seven (queued), and only then are the
// gates opened.
func TestClusterLoadFewSlots(t *testing.T) {
	tools := requireE2E(t, "docker-registry")
	reg := startRegistry(t, tools["docker-registry"])
	const repo = "test/slots"
	const rate = 8 << 20 // bytes/s on the shared link
	const slots = 2
	names := []string{"n1", "n2", "n3"}
	sizes := make([]int, 9)
	for i := range sizes {
		sizes[i] = 3<<20 + i*4096
	}
	// Each node needs two blobs that it does not own (almost always so).
	var dgs []string
	for round := 0; round < 5; round++ {
		dgs = pushLayers(t, reg.Addr, repo, fmt.Sprintf("v%d", round), sizes...)
		ok := true
		for _, n := range names {
			ok = ok && len(dgs)-countOwned(dgs, n, names...) >= slots
		}
		if ok {
			break
		}
	}
	link := startThrottle(t, reg.Addr, rate)
	gates := make([]*peerGate, len(names))
	for i := range gates {
		gates[i] = startPeerGate(t, fmt.Sprintf("127.0.0.%d", i+1))
	}
	nodes := startLoadCluster(t, link.Addr(), len(names), func(i int) []string {
		return []string{"--max-fetches", fmt.Sprint(slots), "--advertise-url", gates[i].URL()}
	})
	logTrouble(t, nodes...)

	// Per node: the first wave, blobs others own, and the rest.
	type wave struct {
		dgs   []string
		sizes []int
	}
	first, rest := make([]wave, len(nodes)), make([]wave, len(nodes))
	for i, n := range nodes {
		for j, dg := range dgs {
			w := &rest[i]
			if ownerOf(dg, names...) != n.Name && len(first[i].dgs) < slots {
				w = &first[i]
			}
			w.dgs, w.sizes = append(w.dgs, dg), append(w.sizes, sizes[j])
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	pull := func(n *node, w wave) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pullBlobs(n, repo, w.dgs, w.sizes); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	t0 := time.Now()
	for i, n := range nodes {
		pull(n, first[i])
	}
	asked := func() (sum int64) {
		for _, g := range gates {
			sum += g.accepted.Load()
		}
		return sum
	}
	if !eventually(20*time.Second, func() bool { return asked() >= int64(slots*len(nodes)) }) {
		t.Fatalf("the first %d fills asked their owners on %d connections, want %d", slots*len(nodes), asked(), slots*len(nodes))
	}
	for i, n := range nodes {
		pull(n, rest[i])
	}
	for _, n := range nodes {
		if !eventually(20*time.Second, func() bool {
			return metric(scrape(t, n.berth), "berth_cache_requests_total", map[string]string{"kind": "blob", "result": "miss"}) >= float64(len(dgs))
		}) {
			t.Fatalf("%s did not start a fill for each of the %d blobs", n.Name, len(dgs))
		}
	}
	t.Logf("every node's %d slots are held by fills waiting on a peer, the other fills queued (%s); opening the peer APIs",
		slots, time.Since(t0).Round(time.Millisecond))
	for i, g := range gates {
		g.Open(nodes[i].Addr)
	}
	wg.Wait()
	var total int
	for _, s := range sizes {
		total += s
	}
	t.Logf("3 nodes with %d fetch slots each pulled %d layers in %s (%s for every byte once over the link)",
		slots, len(dgs), time.Since(t0).Round(time.Millisecond), (time.Duration(total) * time.Second / rate).Round(time.Millisecond))
	for _, err := range errs {
		t.Error(err)
	}
	counts := upstreamGets(t, reg, repo, dgs, nodes)
	checkGets(t, "few fetch slots", dgs, counts, names, func(_, n int) bool { return n == 1 })
}

// TestClusterLoadHandover: four nodes hold an image; a fifth joins with an
// empty store and becomes the first owner of some of its blobs. Pulling
// the image through all five costs no upstream GET: the new owner gets
// what it owns from the former owner, now second in rendezvous order.
func TestClusterLoadHandover(t *testing.T) {
	tools := requireE2E(t, "docker-registry")
	reg := startRegistry(t, tools["docker-registry"])
	const repo = "test/handover"
	five := []string{"n1", "n2", "n3", "n4", "n5"}
	// Ownership depends only on the digests and the names: push layers
	// until n5 will own at least two.
	var dgs []string
	var sizes []int
	for round := 0; round < 8 && countOwned(dgs, "n5", five...) < 2; round++ {
		batch := make([]int, 10)
		for i := range batch {
			batch[i] = 256<<10 + 64*round + i
		}
		dgs = append(dgs, pushLayers(t, reg.Addr, repo, fmt.Sprintf("v%d", round), batch...)...)
		sizes = append(sizes, batch...)
	}
	if n := countOwned(dgs, "n5", five...); n < 2 {
		t.Fatalf("n5 owns only %d of %d blobs", n, len(dgs))
	}
	nodes := startLoadCluster(t, reg.Addr, 4, nil)
	if errs := pullAll(repo, everyNode(nodes, 1, dgs, sizes)); len(errs) > 0 {
		t.Fatalf("pulling through four nodes: %v", errs)
	}
	before := upstreamGets(t, reg, repo, dgs, nodes)
	checkGets(t, "four nodes", dgs, before, five[:4], func(_, n int) bool { return n == 1 })

	n5 := startNode(t, reg.Addr, nodeOptions{Name: "n5", IP: "127.0.0.5", Join: []string{nodes[0].Gossip, nodes[1].Gossip}})
	nodes = append(nodes, n5)
	logTrouble(t, nodes...)
	d := waitMembers(t, 20*time.Second, nodes, five...)
	t.Logf("n5 joined; all five see five after %s; it is the first owner of %d of the %d blobs",
		d.Round(time.Millisecond), countOwned(dgs, "n5", five...), len(dgs))

	t0 := time.Now()
	errs := pullAll(repo, everyNode(nodes, 1, dgs, sizes))
	t.Logf("the image (%d layers) pulled through all five in %s", len(dgs), time.Since(t0).Round(time.Millisecond))
	for _, err := range errs {
		t.Error(err)
	}
	after := upstreamGets(t, reg, repo, dgs, nodes)
	checkGets(t, "after n5 joined (want as many as before)", dgs, after, five, func(i, n int) bool { return n == before[i] })
	if out := metric(scrape(t, n5.berth), "berth_peer_bytes_total", map[string]string{"direction": "in"}); out == 0 {
		t.Error("n5 received no bytes from its peers")
	}
}

// TestClusterLoadChaos: the owner of some layers is killed (SIGKILL) while
// it streams them to the others; pulls through the survivors complete with
// the right bodies at the cost of at most one more upstream GET per layer
// (a ranged resume). Restarted on its old data directory, it costs no
// upstream GET at all: pulls through every node are served by the cluster.
func TestClusterLoadChaos(t *testing.T) {
	tools := requireE2E(t, "docker-registry")
	reg := startRegistry(t, tools["docker-registry"])
	const repo = "test/chaos"
	const rate = 16 << 20 // bytes/s on the shared link: ~3 s for every layer once
	sizes := make([]int, 5)
	for i := range sizes {
		sizes[i] = 10<<20 + i*4096
	}
	dgs := pushLayers(t, reg.Addr, repo, "v1", sizes...)
	link := startThrottle(t, reg.Addr, rate)
	nodes := startLoadCluster(t, link.Addr(), 4, nil)
	names := nodeNames(nodes)
	logTrouble(t, nodes...)

	// The victim: the node that owns the most layers (five layers, four
	// nodes: at least two).
	var victim *node
	var survivors []*node
	for _, n := range nodes {
		if victim == nil || countOwned(dgs, n.Name, names...) > countOwned(dgs, victim.Name, names...) {
			victim = n
		}
	}
	var owned int64
	for i, dg := range dgs {
		if ownerOf(dg, names...) == victim.Name {
			owned += int64(sizes[i])
		}
	}
	for _, n := range nodes {
		if n != victim {
			survivors = append(survivors, n)
		}
	}
	t.Logf("victim %s owns %d of %d layers", victim.Name, countOwned(dgs, victim.Name, names...), len(dgs))

	// Phase 1: every node pulls every layer; the victim is killed once it
	// has streamed about a quarter of its layers to the survivors (as the
	// survivors count them, read by read).
	t0 := time.Now()
	survived := make(chan []error, 1)
	go func() { survived <- pullAll(repo, everyNode(survivors, 1, dgs, sizes)) }()
	go func() { _ = pullBlobs(victim, repo, dgs, sizes) }() // fails when killed
	full := int64(len(survivors)) * owned
	deadline := time.Now().Add(30 * time.Second)
	for {
		var out int64
		for _, n := range survivors {
			for _, m := range n.peers(t) {
				if m.Name == victim.Name {
					out += m.ServedBytes
				}
			}
		}
		if out >= full {
			t.Fatalf("the victim streamed all %v bytes of its layers before it could be killed", out)
		}
		if out >= full/4 {
			t.Logf("killing %s after it streamed %d of %d bytes to the survivors (%s)", victim.Name, out, full,
				time.Since(t0).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the victim streamed only %v bytes to the survivors in 30s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	victim.signal(syscall.SIGKILL)
	<-victim.done
	for _, err := range <-survived {
		t.Errorf("through a survivor, with the owner killed: %v", err)
	}
	t.Logf("the survivors' pulls ended %s after the start", time.Since(t0).Round(time.Millisecond))

	// Phase 2: the survivors keep serving.
	for _, err := range pullAll(repo, everyNode(survivors, 1, dgs, sizes)) {
		t.Errorf("through a survivor, again: %v", err)
	}
	killed := upstreamGets(t, reg, repo, dgs, survivors)
	checkGets(t, fmt.Sprintf("%s killed mid-transfer (want at most 2)", victim.Name), dgs, killed, names,
		func(_, n int) bool { return n >= 1 && n <= 2 })

	// Phase 3: the victim comes back on its old data directory, under its
	// name; every node pulls every layer.
	back := startNode(t, link.Addr(), nodeOptions{Name: victim.Name, IP: victim.IP, DataDir: victim.DataDir,
		Join: []string{survivors[0].Gossip, survivors[1].Gossip}})
	all := append(slices.Clone(survivors), back)
	logTrouble(t, back)
	d := waitMembers(t, 30*time.Second, all, names...)
	t.Logf("%s restarted on its old data directory; all see four after %s", back.Name, d.Round(time.Millisecond))
	t1 := time.Now()
	for _, err := range pullAll(repo, everyNode(all, 1, dgs, sizes)) {
		t.Errorf("after the restart: %v", err)
	}
	t.Logf("pulls through all four after the restart took %s", time.Since(t1).Round(time.Millisecond))
	after := upstreamGets(t, reg, repo, dgs, all)
	checkGets(t, fmt.Sprintf("after %s restarted (want as many as before)", victim.Name), dgs, after, names,
		func(i, n int) bool { return n == killed[i] })
}
