package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/cluster"
)

// delayProxy is an HTTP reverse proxy in front of the upstream registry
// that holds back the response to every blob GET for a while before its
// first byte, like a busy or far upstream, and passes everything else at
// once. The request reaches the registry at once (so the registry logs
// every GET berth makes, even one given up during the delay); only the
// response waits.
type delayProxy struct {
	ln    net.Listener
	srv   *http.Server
	delay time.Duration
	gets  atomic.Int64 // blob GETs received
}

func startDelayProxy(t *testing.T, target string, delay time.Duration) *delayProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &delayProxy{ln: ln, delay: delay}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	rp.FlushInterval = -1
	rp.ModifyResponse = func(resp *http.Response) error {
		if !isBlobGet(resp.Request) {
			return nil
		}
		ctx := resp.Request.Context()
		select {
		case <-time.After(p.delay):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		if !errors.Is(err, context.Canceled) {
			http.Error(w, err.Error(), http.StatusBadGateway)
		}
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isBlobGet(r) {
			p.gets.Add(1)
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = p.srv.Serve(ln) }()
	t.Cleanup(func() { _ = p.srv.Close() })
	return p
}

func (p *delayProxy) Addr() string { return p.ln.Addr().String() }

func isBlobGet(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/")
}

// pullJob is one client pulling blobs through one node.
type pullJob struct {
	n     *node
	dgs   []string
	sizes []int
}

// pullAll runs the jobs at once (released together) and returns their
// errors, each naming its node.
func pullAll(repo string, jobs []pullJob) []error {
	start := make(chan struct{})
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = pullBlobs(j.n, repo, j.dgs, j.sizes)
		}()
	}
	close(start)
	wg.Wait()
	var out []error
	for _, err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// everyNode is one job per client: clients jobs on each node, each
// pulling all of dgs.
func everyNode(nodes []*node, clients int, dgs []string, sizes []int) []pullJob {
	var jobs []pullJob
	for _, n := range nodes {
		for range clients {
			jobs = append(jobs, pullJob{n, dgs, sizes})
		}
	}
	return jobs
}

// waitNoFills waits until none of the (running) nodes has a fill running
// or queued, so that every upstream request berth made has ended.
func waitNoFills(t *testing.T, d time.Duration, nodes []*node) {
	t.Helper()
	deadline := time.Now().Add(d)
	for _, n := range nodes {
		if n.exited() {
			continue
		}
		for {
			v := metric(scrape(t, n.berth), "berth_fetches_in_flight", nil)
			if v == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still has %v fills in flight after %s", n.Name, v, d)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// upstreamGets returns, per digest, the upstream GETs of any status of
// repo's blobs once they are settled: no node has a fill in flight and
// the registry has logged every request answered (see upstreamRegistry.sync).
func upstreamGets(t *testing.T, reg *upstreamRegistry, repo string, dgs []string, nodes []*node) []int {
	t.Helper()
	waitNoFills(t, time.Minute, nodes)
	reg.sync(t)
	out := make([]int, len(dgs))
	for i, dg := range dgs {
		out[i] = reg.settledAnyGets(t, repo, dg)
	}
	return out
}

// getsTable formats upstream GET counts per digest with each digest's
// owners in rendezvous order among members.
func getsTable(dgs []string, counts []int, members ...string) string {
	var b strings.Builder
	for i, dg := range dgs {
		fmt.Fprintf(&b, "\n  %s  owners %v  %d upstream GET(s)", short(dg), ownersOf(dg, members...), counts[i])
	}
	return b.String()
}

// ownersOf is the members' names in dg's rendezvous order.
func ownersOf(dg string, members ...string) []string {
	ms := make([]cluster.Member, len(members))
	for i, n := range members {
		ms[i] = cluster.Member{Name: n}
	}
	var out []string
	for _, m := range cluster.Owners(dg, ms) {
		out = append(out, m.Name)
	}
	return out
}

func short(dg string) string {
	if len(dg) > 19 {
		return dg[:19]
	}
	return dg
}

// logTrouble, registered with t.Cleanup, logs each node's warnings and
// errors (peer fallbacks, failed peer requests) when the test failed: the
// debug log's tail is mostly request lines.
func logTrouble(t *testing.T, nodes ...*node) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range nodes {
			var lines []string
			for _, l := range strings.Split(readFile(n.log), "\n") {
				if strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
					lines = append(lines, l)
				}
			}
			total := len(lines)
			if len(lines) > 12 {
				lines = lines[len(lines)-12:]
			}
			t.Logf("node %s (%s): %d warnings/errors, last ones:\n%s", n.Name, n.log, total, strings.Join(lines, "\n"))
		}
	})
}

// peerGate is a TCP proxy in front of a node's peer API (the URL the node
// advertises to its peers) that holds every connection until it is
// opened: a test can let fills reach the point where they ask a peer, and
// only then let the peers see the requests.
type peerGate struct {
	ln       net.Listener
	target   string        // the node's listener; set before open is closed
	open     chan struct{} // closed by Open
	done     chan struct{} // closed at cleanup
	accepted atomic.Int64  // connections accepted (held or passed)
}

// startPeerGate listens on ip; Open names the node behind it.
func startPeerGate(t *testing.T, ip string) *peerGate {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	g := &peerGate{ln: ln, open: make(chan struct{}), done: make(chan struct{})}
	go g.serve()
	t.Cleanup(func() { close(g.done); _ = ln.Close() })
	return g
}

// URL is the peer URL the node behind the gate advertises.
func (g *peerGate) URL() string { return "http://" + g.ln.Addr().String() }

// Open lets held and new connections through to target.
func (g *peerGate) Open(target string) {
	g.target = target
	close(g.open)
}

func (g *peerGate) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.accepted.Add(1)
		go func() {
			defer c.Close()
			select {
			case <-g.open:
			case <-g.done:
				return
			}
			up, err := net.Dial("tcp", g.target)
			if err != nil {
				return
			}
			defer up.Close()
			go func() { _, _ = io.Copy(up, c); _ = up.(*net.TCPConn).CloseWrite() }()
			_, _ = io.Copy(c, up)
		}()
	}
}
