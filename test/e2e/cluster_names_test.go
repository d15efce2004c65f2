package e2e

import (
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/cluster"
)

// TestClusterDerivedNames: three nodes on one host started without
// cluster.node_name name themselves after the host and their gossip
// address and form one cluster of three (they all took the hostname, and
// stayed alone, before).
func TestClusterDerivedNames(t *testing.T) {
	requireE2E(t)
	const upstream = "127.0.0.1:9" // never asked: nothing is pulled
	n1 := startNode(t, upstream, nodeOptions{Name: "n1", IP: "127.0.0.1", DerivedName: true})
	n2 := startNode(t, upstream, nodeOptions{Name: "n2", IP: "127.0.0.2", Join: []string{n1.Gossip}, DerivedName: true})
	n3 := startNode(t, upstream, nodeOptions{Name: "n3", IP: "127.0.0.3", Join: []string{n1.Gossip, n2.Gossip}, DerivedName: true})
	nodes := []*node{n1, n2, n3}
	host, _ := os.Hostname()
	for _, n := range nodes {
		ip, port, _ := net.SplitHostPort(n.Gossip)
		p, _ := strconv.Atoi(port)
		if want := cluster.DefaultNodeName(host, net.ParseIP(ip), p); n.Name != want {
			t.Errorf("node on %s is named %q, want %q", n.Gossip, n.Name, want)
		}
	}
	d := waitMembers(t, 15*time.Second, nodes, n1.Name, n2.Name, n3.Name)
	t.Logf("three nodes with derived names converged in %s", d.Round(time.Millisecond))
	for _, n := range nodes {
		if code, body := getBody(t, n.URL+"/readyz"); code != http.StatusOK {
			t.Errorf("%s: readyz %d %q", n.Name, code, body)
		}
	}
}

// TestClusterNameConflict: of two nodes given one name, the one started
// later logs an ERROR naming both addresses, is not ready, and shows the
// conflict in peers.list; the first stays ready and reports the claim.
func TestClusterNameConflict(t *testing.T) {
	requireE2E(t)
	const upstream = "127.0.0.1:9"
	first := startNode(t, upstream, nodeOptions{Name: "dup", IP: "127.0.0.1"})
	second := startNode(t, upstream, nodeOptions{Name: "dup", IP: "127.0.0.2", Join: []string{first.Gossip}, MayBeUnready: true})

	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := getBody(t, second.URL+"/readyz")
		if code == http.StatusServiceUnavailable && strings.Contains(body, "name conflict") {
			if !strings.Contains(body, first.Gossip) {
				t.Errorf("readyz of the later node does not name the holder %s: %q", first.Gossip, body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the later node is still ready 15s after joining: %d %q", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	var logged bool
	for _, line := range logLinesContaining(t, second.berth, "cluster node name conflict") {
		if strings.Contains(line, `"level":"ERROR"`) && strings.Contains(line, first.Gossip) && strings.Contains(line, second.Gossip) {
			logged = true
		}
	}
	if !logged {
		t.Errorf("the later node logged no ERROR naming %s and %s:\n%s", first.Gossip, second.Gossip, second.tail(20))
	}

	var self bool
	for _, m := range second.peers(t) {
		if m.Self {
			self = true
			if m.State != cluster.StateConflict || !strings.Contains(m.Conflict, first.Gossip) {
				t.Errorf("peers.list on the later node, its own row: %+v", m)
			}
		}
	}
	if !self {
		t.Errorf("peers.list on the later node has no row for itself: %+v", second.peers(t))
	}
	if n := metric(scrape(t, second.berth), "berth_cluster_name_conflicts_total", map[string]string{"role": "lost"}); n < 1 {
		t.Errorf("berth_cluster_name_conflicts_total{role=lost} = %v on the later node", n)
	}

	// The first node stays ready (several join rounds of the other) and
	// reports the claim on its own row.
	for range 10 {
		if code, body := getBody(t, first.URL+"/readyz"); code != http.StatusOK {
			t.Fatalf("the first node is not ready: %d %q", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, m := range first.peers(t) {
		if m.Self && (m.State != cluster.StateAlive || !strings.Contains(m.Conflict, second.Gossip)) {
			t.Errorf("peers.list on the first node, its own row: %+v", m)
		}
	}
}

func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// logLinesContaining returns the log lines of b that contain s.
func logLinesContaining(t *testing.T, b *berth, s string) []string {
	t.Helper()
	data, err := os.ReadFile(b.log)
	if err != nil {
		t.Fatalf("reading berth's log: %v", err)
	}
	var out []string
	for line := range strings.Lines(string(data)) {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}
