package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-mirror/berth/internal/admin"
	"github.com/berth-mirror/berth/internal/cluster"
)

// clusterSecret is the test clusters' shared secret.
const clusterSecret = "e2e-cluster-secret-0123456789"

// node is one berth of a test cluster.
type node struct {
	*berth
	Name   string
	IP     string
	Gossip string // IP:PORT
	socket string
}

// nodeOptions describe a cluster node.
type nodeOptions struct {
	Name    string
	IP      string   // 127.0.0.x
	Join    []string // gossip addresses
	Secret  string   // "" : clusterSecret; "-" : none
	Cluster string   // cluster name ("" : berth)
	DataDir string
	Env     []string
	Args    []string // extra flags for `berth serve`
	// DerivedName starts the node without cluster.node_name: it names
	// itself after its host and gossip address, and Name is set to that.
	DerivedName bool
	// MayBeUnready waits for /healthz instead of /readyz (a node that may
	// lose its name at once).
	MayBeUnready bool
}

// portsHandedOut are the ports freePortOn has returned in this process.
// Once its probe listener is closed, the kernel may hand a port out again
// at once: two calls in a row (a node's HTTP and gossip ports) could
// return the same one.
var portsHandedOut = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// freePortOn returns a TCP port on ip that was free a moment ago and that
// it has not returned before.
func freePortOn(t *testing.T, ip string) int {
	t.Helper()
	portsHandedOut.Lock()
	defer portsHandedOut.Unlock()
	var probes []net.Listener // held open so that the kernel picks another
	defer func() {
		for _, ln := range probes {
			_ = ln.Close()
		}
	}()
	for range 100 {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Fatalf("finding a free port on %s: %v", ip, err)
		}
		probes = append(probes, ln)
		if port := ln.Addr().(*net.TCPAddr).Port; !portsHandedOut.m[port] {
			portsHandedOut.m[port] = true
			return port
		}
	}
	t.Fatalf("finding a free port on %s: every one offered was handed out already", ip)
	return 0
}

// startNode runs a berth cluster node on o.IP in front of upstreamAddr.
func startNode(t *testing.T, upstreamAddr string, o nodeOptions) *node {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = filepath.Join(t.TempDir(), "data")
	}
	dir := t.TempDir()
	addr := fmt.Sprintf("%s:%d", o.IP, freePortOn(t, o.IP))
	gossip := fmt.Sprintf("%s:%d", o.IP, freePortOn(t, o.IP))
	socket := filepath.Join(dir, "admin.sock")
	var env []string
	if !o.DerivedName {
		env = append(env, "BERTH_CLUSTER_NODE_NAME="+o.Name)
	}
	switch o.Secret {
	case "":
		env = append(env, "BERTH_CLUSTER_SECRET="+clusterSecret)
	case "-":
	default:
		env = append(env, "BERTH_CLUSTER_SECRET="+o.Secret)
	}
	if o.Cluster != "" {
		env = append(env, "BERTH_CLUSTER_NAME="+o.Cluster)
	}
	trap := newConnTrap(t)
	env = testEnv(append(append(env, "HTTP_PROXY=http://"+trap.Addr(), "HTTPS_PROXY=http://"+trap.Addr()), o.Env...)...)
	args := []string{"serve",
		"--listen", addr,
		"--data-dir", o.DataDir,
		"--admin-socket", socket,
		"--upstream", "registry.test=http://" + upstreamAddr,
		"--default-upstream", "registry.test",
		"--log-format", "json",
		"--log-level", "debug",
		"--peer-bind", gossip,
		"--peer-join", strings.Join(o.Join, ","),
	}
	args = append(args, o.Args...)
	p, err := startProc(t, "berth "+o.Name, filepath.Join(dir, "berth.log"), "", env, berthBin, args...)
	if err != nil {
		t.Fatal(err)
	}
	b := &berth{proc: p, Addr: addr, URL: "http://" + addr, DataDir: o.DataDir, trap: trap}
	ready := "/readyz"
	if o.MayBeUnready {
		ready = "/healthz" // served once the cluster has started
	}
	if err := waitHTTP(p, b.URL+ready, http.StatusOK, 20*time.Second); err != nil {
		p.stop(5 * time.Second)
		t.Fatalf("node %s did not become ready: %v\n%s", o.Name, err, p.tail(30))
	}
	n := &node{berth: b, Name: o.Name, IP: o.IP, Gossip: gossip, socket: socket}
	if o.DerivedName {
		for _, m := range n.peers(t) {
			if m.Self {
				n.Name = m.Name
			}
		}
	}
	t.Cleanup(func() {
		// A node the test killed has exited already; any other must stop
		// cleanly (a race-detector build exits 66 after a data race).
		if !p.exited() {
			if code := p.stop(15 * time.Second); code != 0 && !t.Failed() {
				t.Errorf("node %s exited with code %d when stopped", o.Name, code)
			}
		}
		if t.Failed() {
			t.Logf("node %s log (tail):\n%s", o.Name, p.tail(25))
		}
	})
	return n
}

// peers runs `berth ctl --json peers` against the node.
func (n *node) peers(t *testing.T) []admin.Member {
	t.Helper()
	out, err := runTool(t, 10*time.Second, "", testEnv(), berthBin, "ctl", "--socket", n.socket, "--json", "peers")
	if err != nil {
		t.Fatalf("berth ctl peers on %s: %v\n%s", n.Name, err, out)
	}
	var res admin.Peers
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("peers.list output: %v\n%s", err, out)
	}
	return res.Members
}

// alive returns the names of the members n sees alive, sorted.
func (n *node) alive(t *testing.T) []string {
	var names []string
	for _, m := range n.peers(t) {
		if m.State == cluster.StateAlive {
			names = append(names, m.Name)
		}
	}
	slices.Sort(names)
	return names
}

// waitMembers waits until every node sees exactly the named members alive.
func waitMembers(t *testing.T, d time.Duration, nodes []*node, want ...string) time.Duration {
	t.Helper()
	slices.Sort(want)
	start := time.Now()
	for _, n := range nodes {
		for {
			got := n.alive(t)
			if slices.Equal(got, want) {
				break
			}
			if time.Since(start) > d {
				t.Fatalf("%s sees alive %v, want %v: %+v", n.Name, got, want, n.peers(t))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return time.Since(start)
}

// ownerOf is the first owner of dg among the named members, as every node
// computes it.
func ownerOf(dg string, names ...string) string {
	ms := make([]cluster.Member, len(names))
	for i, n := range names {
		ms[i] = cluster.Member{Name: n}
	}
	return cluster.Owners(dg, ms)[0].Name
}

// pushLayers pushes an image of uncompressed random layers of the given
// sizes as repo:tag and returns the layers' digests.
func pushLayers(t *testing.T, regAddr, repo, tag string, sizes ...int) []string {
	t.Helper()
	img := empty.Image
	var dgs []string
	for i, size := range sizes {
		data := make([]byte, size)
		fillRandom(data, uint64(size+i))
		layer := static.NewLayer(data, types.OCIUncompressedLayer)
		var err error
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatal(err)
		}
		dg, _ := layer.Digest()
		dgs = append(dgs, dg.String())
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	ref, err := name.ParseReference(regAddr+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return dgs
}

// blobGetsAnyStatus counts GETs of repo's blob dg in the access log,
// whatever their status (ranged resumes are 206).
func (r *upstreamRegistry) blobGetsAnyStatus(t *testing.T, repo, dg string) int {
	t.Helper()
	b, err := readFileT(r.accessLog)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`"GET /v2/` + regexp.QuoteMeta(repo) + `/blobs/` + regexp.QuoteMeta(dg) + ` HTTP/1\.1" \d+ `)
	return len(re.FindAll(b, -1))
}

// settledAnyGets waits for the access log to settle and counts as above.
func (r *upstreamRegistry) settledAnyGets(t *testing.T, repo, dg string) int {
	t.Helper()
	n := r.blobGetsAnyStatus(t, repo, dg)
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		m := r.blobGetsAnyStatus(t, repo, dg)
		if m == n && n > 0 {
			return m
		}
		n = m
	}
	return n
}

// throttle is a TCP proxy whose downstream direction shares one rate
// limit, like one WAN link in front of the upstream.
type throttle struct {
	ln     net.Listener
	target string
	rate   float64 // bytes per second
	// perConn gives each connection its own rate (a CDN's per-connection
	// cap) instead of one shared link.
	perConn bool
	sent    atomic.Int64 // bytes sent downstream
	mu      sync.Mutex
	next    time.Time
	wg      sync.WaitGroup
}

func startThrottle(t *testing.T, target string, bytesPerSec float64) *throttle {
	return startThrottleOpts(t, target, bytesPerSec, false)
}

// startConnThrottle caps each connection at bytesPerSec, however many run.
func startConnThrottle(t *testing.T, target string, bytesPerSec float64) *throttle {
	return startThrottleOpts(t, target, bytesPerSec, true)
}

func startThrottleOpts(t *testing.T, target string, bytesPerSec float64, perConn bool) *throttle {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	th := &throttle{ln: ln, target: target, rate: bytesPerSec, perConn: perConn}
	th.wg.Add(1)
	go th.serve()
	t.Cleanup(func() { _ = ln.Close(); th.wg.Wait() })
	return th
}

func (th *throttle) Addr() string { return th.ln.Addr().String() }

func (th *throttle) serve() {
	defer th.wg.Done()
	for {
		c, err := th.ln.Accept()
		if err != nil {
			return
		}
		th.wg.Add(1)
		go func() {
			defer th.wg.Done()
			defer c.Close()
			up, err := net.Dial("tcp", th.target)
			if err != nil {
				return
			}
			defer up.Close()
			go func() { _, _ = io.Copy(up, c); _ = up.(*net.TCPConn).CloseWrite() }()
			buf := make([]byte, 32<<10)
			var mu sync.Mutex
			var next time.Time
			for {
				n, err := up.Read(buf)
				if n > 0 {
					if th.perConn {
						wait(&mu, &next, th.rate, n)
					} else {
						wait(&th.mu, &th.next, th.rate, n)
					}
					th.sent.Add(int64(n))
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// wait paces n bytes at rate on the link whose schedule is next.
func wait(mu *sync.Mutex, next *time.Time, rate float64, n int) {
	mu.Lock()
	now := time.Now()
	// A little credit, so that oversleeping on a busy machine does not
	// lower the rate.
	if floor := now.Add(-50 * time.Millisecond); next.Before(floor) {
		*next = floor
	}
	*next = next.Add(time.Duration(float64(n) / rate * float64(time.Second)))
	d := next.Sub(now)
	mu.Unlock()
	time.Sleep(d)
}

// pullBlobs GETs every digest of repo from the node concurrently and checks
// each body's digest.
func pullBlobs(n *node, repo string, dgs []string, sizes []int) error {
	c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableCompression: true}}
	defer c.CloseIdleConnections()
	errs := make([]error, len(dgs))
	var wg sync.WaitGroup
	for i, dg := range dgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fetchAndHash(c, n.URL+"/v2/registry.test/"+repo+"/blobs/"+dg, dg, int64(sizes[i]))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("%s blob %s: %w", n.Name, dgs[i], err)
		}
	}
	return nil
}

func readFileT(path string) ([]byte, error) { return os.ReadFile(path) }
