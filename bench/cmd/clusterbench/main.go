// Command clusterbench measures what a berth cluster saves when many nodes
// pull the same image at once (issue 10): N berth nodes on loopback
// addresses 127.0.0.1…N, one docker-registry upstream behind a rate-limited
// proxy that stands for the cluster's one shared WAN link, images shaped
// like Spegel's benchmark (10 MB, 4 × 25 MB, 256 MB, times -scale), and
// pullers that fetch as containerd does (manifest by tag, then config and
// layers, three at a time, each verified against its digest).
//
// Phases: create (every node pulls image v1 at once), update (image v2, new
// layers, pulled by 20% of the nodes at a time, at least one). Modes:
// direct (no mirror), single (berth on every node, no cluster) and cluster.
// A "one node alone" run gives the reference pull time. It prints a
// Markdown table and writes a data file for gnuplot.
//
//	clusterbench -berth ./berth -registry docker-registry -nodes 3 -out results/
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type options struct {
	berth, registry, out, modes string
	nodes                       int
	link                        float64 // bytes/s
	scale                       float64
	// the hot-blob scenario (hot.go)
	scenario string
	blobMiB  int
	upload   float64 // per-node peer upload cap, bytes/s (0: none)
	env      []string
}

func main() {
	var o options
	flag.StringVar(&o.berth, "berth", "berth", "berth binary")
	flag.StringVar(&o.registry, "registry", "docker-registry", "docker-registry binary")
	flag.StringVar(&o.out, "out", "", "directory for logs and the data file (default: a temp dir)")
	flag.StringVar(&o.modes, "modes", "direct,single,cluster", "modes to run")
	flag.IntVar(&o.nodes, "nodes", 3, "number of nodes")
	flag.Float64Var(&o.link, "link", 50e6, "shared upstream link in bytes/s")
	flag.Float64Var(&o.scale, "scale", 1, "multiplier on the layer sizes")
	flag.StringVar(&o.scenario, "scenario", "image", "image (create and update phases) or hot (one big blob, every node at once)")
	flag.IntVar(&o.blobMiB, "blob", 256, "hot: blob size in MiB")
	flag.Float64Var(&o.upload, "upload", 64<<20, "hot: each node's peer upload cap in bytes/s (cluster.upload_rate; 0: none)")
	flag.Parse()
	runFn := run
	if o.scenario == "hot" {
		runFn = runHot
	}
	if err := runFn(o); err != nil {
		fmt.Fprintln(os.Stderr, "clusterbench:", err)
		os.Exit(1)
	}
}

// result is one mode's figures.
type result struct {
	Mode           string
	Nodes          int
	CreateTimes    []time.Duration
	UpdateTimes    []time.Duration
	CreateUpstream int64 // bytes through the link
	UpdateUpstream int64
	PeerBytes      float64
	PeakRSS        []int64 // KiB, per node
	FailedPulls    int
	ImageBytes     int64
	AloneReference time.Duration
}

func run(o options) error {
	if o.out == "" {
		d, err := os.MkdirTemp("", "clusterbench-")
		if err != nil {
			return err
		}
		o.out = d
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	var procs procSet
	defer procs.stopAll()
	reg, err := startRegistry(&procs, o)
	if err != nil {
		return err
	}
	sizes := []int{10e6, 25e6, 25e6, 25e6, 25e6, 256e6}
	for i := range sizes {
		sizes[i] = int(float64(sizes[i]) * o.scale)
	}
	var imageBytes int64
	for _, s := range sizes {
		imageBytes += int64(s)
	}
	for _, tag := range []string{"v1", "v2"} {
		if err := pushImage(reg, "bench/app", tag, sizes); err != nil {
			return err
		}
	}
	link, err := startLink(reg, o.link)
	if err != nil {
		return err
	}
	defer link.close()

	alone, err := pullAlone(link, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "one node alone pulls the %.0f MB image in %s\n", float64(imageBytes)/1e6, alone.Round(time.Millisecond))
	var results []result
	for _, mode := range strings.Split(o.modes, ",") {
		r, err := runMode(&procs, link, o, mode)
		if err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
		r.ImageBytes, r.AloneReference = imageBytes, alone
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "%s done\n", mode)
	}
	return report(o, results)
}

// ---------------------------------------------------------------------------
// processes

type procSet struct {
	mu    sync.Mutex
	procs []*exec.Cmd
}

func (p *procSet) start(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	p.mu.Lock()
	p.procs = append(p.procs, cmd)
	p.mu.Unlock()
	return nil
}

// stop ends one process it started: SIGTERM, then SIGKILL.
func stop(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (p *procSet) stopAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.procs {
		stop(c)
	}
	p.procs = nil
}

func freePort(ip string) (int, error) {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", ip+":0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func waitHTTP(url string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		resp, err := httpGet(http.DefaultClient, url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer 200 within %s", url, d)
}

func startRegistry(procs *procSet, o options) (string, error) {
	dir := filepath.Join(o.out, "registry")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	port, err := freePort("127.0.0.1")
	if err != nil {
		return "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := filepath.Join(dir, "config.yml")
	conf := fmt.Sprintf("version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n", filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return "", err
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(context.Background(), o.registry, "serve", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := procs.start(cmd); err != nil {
		return "", err
	}
	return addr, waitHTTP("http://"+addr+"/v2/", 20*time.Second)
}

func pushImage(reg, repo, tag string, sizes []int) error {
	img := empty.Image
	for _, size := range sizes {
		data := make([]byte, size)
		var seed [32]byte
		binaryPut(seed[:], rand.Uint64())
		_, _ = rand.NewChaCha8(seed).Read(data)
		var err error
		if img, err = mutate.AppendLayers(img, static.NewLayer(data, types.OCIUncompressedLayer)); err != nil {
			return err
		}
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	ref, err := name.ParseReference(reg+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return err
	}
	return remote.Write(ref, img)
}

func binaryPut(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}

// ---------------------------------------------------------------------------
// the shared link

// link is a TCP proxy in front of the upstream whose downstream direction
// shares one rate limit and counts its bytes.
type link struct {
	ln     net.Listener
	target string
	rate   float64
	bytes  atomic.Int64
	mu     sync.Mutex
	next   time.Time
}

func startLink(target string, rate float64) (*link, error) {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &link{ln: ln, target: target, rate: rate}
	go l.serve()
	return l, nil
}

func (l *link) addr() string { return l.ln.Addr().String() }
func (l *link) close()       { _ = l.ln.Close() }

func (l *link) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.proxy(c)
	}
}

func (l *link) proxy(c net.Conn) {
	defer c.Close()
	up, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", l.target)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { _, _ = io.Copy(up, c); _ = up.(*net.TCPConn).CloseWrite() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			l.wait(n)
			l.bytes.Add(int64(n))
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (l *link) wait(n int) {
	l.mu.Lock()
	now := time.Now()
	if floor := now.Add(-50 * time.Millisecond); l.next.Before(floor) {
		l.next = floor
	}
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	d := l.next.Sub(now)
	l.mu.Unlock()
	time.Sleep(d)
}

// ---------------------------------------------------------------------------
// nodes

type node struct {
	name, ip, url, gossip string
	cmd                   *exec.Cmd
}

// base is where a node's puller sends requests: /v2/<prefix>bench/app/...
func (n *node) base() string { return n.url + "/v2/registry.test/" }

func startNodes(procs *procSet, l *link, o options, mode string) ([]*node, error) {
	var nodes []*node
	for i := range o.nodes {
		ip := fmt.Sprintf("127.0.0.%d", i+1)
		p1, err := freePort(ip)
		if err != nil {
			return nil, err
		}
		p2, err := freePort(ip)
		if err != nil {
			return nil, err
		}
		n := &node{name: fmt.Sprintf("node%d", i+1), ip: ip, url: fmt.Sprintf("http://%s:%d", ip, p1), gossip: fmt.Sprintf("%s:%d", ip, p2)}
		dir := filepath.Join(o.out, mode, n.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		args := []string{"serve", "--listen", fmt.Sprintf("%s:%d", ip, p1), "--data-dir", filepath.Join(dir, "data"),
			"--admin-socket", filepath.Join(dir, "admin.sock"), "--upstream", "registry.test=http://" + l.addr(),
			"--default-upstream", "registry.test", "--log-format", "json"}
		if mode == "cluster" || strings.HasPrefix(mode, "cluster-") {
			var join []string
			for _, m := range nodes {
				join = append(join, m.gossip)
			}
			args = append(args, "--peer-bind", n.gossip, "--peer-join", strings.Join(join, ","))
		}
		logf, err := os.Create(filepath.Join(dir, "berth.log"))
		if err != nil {
			return nil, err
		}
		n.cmd = exec.CommandContext(context.Background(), o.berth, args...)
		n.cmd.Stdout, n.cmd.Stderr = logf, logf
		n.cmd.Env = append(os.Environ(), "BERTH_CLUSTER_NODE_NAME="+n.name, "BERTH_CLUSTER_SECRET=bench-secret-0123456789abcdef")
		n.cmd.Env = append(n.cmd.Env, o.env...)
		if err := procs.start(n.cmd); err != nil {
			return nil, err
		}
		if err := waitHTTP(n.url+"/readyz", 20*time.Second); err != nil {
			return nil, err
		}
		nodes = append(nodes, n)
	}
	if mode == "cluster" || strings.HasPrefix(mode, "cluster-") {
		// Wait until every node counts every member alive.
		deadline := time.Now().Add(20 * time.Second)
		for _, n := range nodes {
			for scrape(n.url, "berth_cluster_members", `state="alive"`) != float64(len(nodes)) {
				if time.Now().After(deadline) {
					return nil, fmt.Errorf("%s does not see %d members", n.name, len(nodes))
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	return nodes, nil
}

// scrape sums the samples of a metric whose label text contains match.
func scrape(url, metric, match string) float64 {
	resp, err := httpGet(http.DefaultClient, url+"/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric) || !strings.Contains(line, match) {
			continue
		}
		rest := strings.TrimPrefix(line, metric)
		if rest[0] != '{' && rest[0] != ' ' {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// peakRSS is VmHWM in KiB.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			n, _ := strconv.ParseInt(f[0], 10, 64)
			return n
		}
	}
	return -1
}

// ---------------------------------------------------------------------------
// pulling

const accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

// pull fetches the image as containerd does and verifies every blob.
func pull(base, repo, tag string) (time.Duration, error) {
	start := time.Now()
	c := &http.Client{Timeout: 10 * time.Minute, Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 8}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, base+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", accept)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("manifest: %v %s", err, resp.Status)
	}
	var m struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return 0, err
	}
	if _, err := getBlob(c, base+repo+"/blobs/"+m.Config.Digest, m.Config.Digest); err != nil {
		return 0, err
	}
	sem := make(chan struct{}, 3) // containerd's max_concurrent_downloads
	errs := make(chan error, len(m.Layers))
	for _, l := range m.Layers {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_, err := getBlob(c, base+repo+"/blobs/"+l.Digest, l.Digest)
			errs <- err
		}()
	}
	var first error
	for range m.Layers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return time.Since(start), first
}

func getBlob(c *http.Client, url, dg string) (int64, error) {
	resp, err := httpGet(c, url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", dg, resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return n, err
	}
	if "sha256:"+hex.EncodeToString(h.Sum(nil)) != dg {
		return n, fmt.Errorf("%s: wrong digest", dg)
	}
	return n, nil
}

func pullAlone(l *link, o options) (time.Duration, error) {
	return pull("http://"+l.addr()+"/v2/", "bench/app", "v1")
}

// runMode runs the create and update phases in one mode.
// modeNodes starts the nodes of a mode (none for direct: every puller goes
// through the link) and returns them, each puller's base URL and a func
// that stops them.
func modeNodes(procs *procSet, l *link, o options, mode string) ([]*node, []string, func(), error) {
	bases := make([]string, o.nodes)
	if mode == "direct" {
		for i := range bases {
			bases[i] = "http://" + l.addr() + "/v2/"
		}
		return nil, bases, func() {}, nil
	}
	nodes, err := startNodes(procs, l, o, mode)
	if err != nil {
		return nil, nil, nil, err
	}
	for i, n := range nodes {
		bases[i] = n.base()
	}
	return nodes, bases, func() {
		for _, n := range nodes {
			stop(n.cmd)
		}
	}, nil
}

func runMode(procs *procSet, l *link, o options, mode string) (result, error) {
	r := result{Mode: mode, Nodes: o.nodes}
	nodes, bases, stopAll, err := modeNodes(procs, l, o, mode)
	if err != nil {
		return r, err
	}
	defer stopAll()
	// create: every node at once.
	before := l.bytes.Load()
	r.CreateTimes = pullAll(bases, "v1", &r.FailedPulls)
	r.CreateUpstream = l.bytes.Load() - before
	// update: 20% of the nodes at a time, at least one.
	batch := max(1, o.nodes/5)
	before = l.bytes.Load()
	for i := 0; i < len(bases); i += batch {
		r.UpdateTimes = append(r.UpdateTimes, pullAll(bases[i:min(i+batch, len(bases))], "v2", &r.FailedPulls)...)
	}
	r.UpdateUpstream = l.bytes.Load() - before
	for _, n := range nodes {
		r.PeakRSS = append(r.PeakRSS, peakRSS(n.cmd.Process.Pid))
		if mode == "cluster" {
			r.PeerBytes += scrape(n.url, "berth_peer_bytes_total", `direction="in"`)
		}
	}
	return r, nil
}

func pullAll(bases []string, tag string, failed *int) []time.Duration {
	times := make([]time.Duration, len(bases))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, b := range bases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := pull(b, "bench/app", tag)
			if err != nil {
				fmt.Fprintf(os.Stderr, "pull %s %s: %v\n", b, tag, err)
				mu.Lock()
				*failed++
				mu.Unlock()
			}
			times[i] = d
		}()
	}
	wg.Wait()
	return times
}

// ---------------------------------------------------------------------------
// report

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := int(p*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func report(o options, rs []result) error {
	data, err := os.Create(filepath.Join(o.out, fmt.Sprintf("cluster-%d.dat", o.nodes)))
	if err != nil {
		return err
	}
	defer data.Close()
	fmt.Fprintln(data, "# mode create_p50_s create_p99_s update_p50_s update_p99_s upstream_create_x upstream_update_x")
	fmt.Printf("\n%d nodes, image %.0f MB, link %.0f MB/s; one node alone: %.2f s\n\n", o.nodes, float64(rs[0].ImageBytes)/1e6, o.link/1e6, rs[0].AloneReference.Seconds())
	fmt.Println("| mode | create p50 | create p99 | p99 / alone | update p50 | update p99 | upstream bytes / image (create) | (update) | peer bytes (both phases) | peak RSS per node (max) | failed pulls |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		img := float64(r.ImageBytes)
		var rss int64
		for _, v := range r.PeakRSS {
			rss = max(rss, v)
		}
		rssText := "–"
		if len(r.PeakRSS) > 0 {
			rssText = fmt.Sprintf("%.1f MiB", float64(rss)/1024)
		}
		peer := "–"
		if r.Mode == "cluster" {
			peer = fmt.Sprintf("%.0f MB", r.PeerBytes/1e6)
		}
		c50, c99 := percentile(r.CreateTimes, .5), percentile(r.CreateTimes, .99)
		u50, u99 := percentile(r.UpdateTimes, .5), percentile(r.UpdateTimes, .99)
		fmt.Printf("| %s | %.2f s | %.2f s | %.2f | %.2f s | %.2f s | %.2f | %.2f | %s | %s | %d |\n", r.Mode,
			c50.Seconds(), c99.Seconds(), c99.Seconds()/r.AloneReference.Seconds(), u50.Seconds(), u99.Seconds(),
			float64(r.CreateUpstream)/img, float64(r.UpdateUpstream)/img, peer, rssText, r.FailedPulls)
		fmt.Fprintf(data, "%s %.3f %.3f %.3f %.3f %.3f %.3f\n", r.Mode, c50.Seconds(), c99.Seconds(), u50.Seconds(), u99.Seconds(),
			float64(r.CreateUpstream)/img, float64(r.UpdateUpstream)/img)
		if r.FailedPulls > 0 {
			err = errors.Join(err, fmt.Errorf("%s: %d pulls failed", r.Mode, r.FailedPulls))
		}
	}
	return err
}

func httpGet(c *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return c.Do(req)
}
