package cluster

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-mirror/berth/internal/config"
)

func TestDefaultNodeName(t *testing.T) {
	tests := []struct {
		name, host, ip string
		port           int
		want           string
	}{
		{"ipv4", "myhost", "127.0.0.2", 7946, "myhost-127.0.0.2-7946"},
		{"ipv6", "myhost", "fd00::5", 7946, "myhost-fd00--5-7946"},
		{"ipv6 loopback", "myhost", "::1", 7946, "myhost---1-7946"},
		{"fqdn", "node-1.example.org", "10.0.0.5", 7946, "node-1.example.org-10.0.0.5-7946"},
		{"no hostname", "", "10.0.0.5", 7946, "berth-10.0.0.5-7946"},
		{"odd hostname", "_my host", "10.0.0.5", 7946, "my-host-10.0.0.5-7946"},
		{"long hostname", strings.Repeat("h", 300), "10.0.0.5", 7946, strings.Repeat("h", 253-len("-10.0.0.5-7946")) + "-10.0.0.5-7946"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DefaultNodeName(tt.host, net.ParseIP(tt.ip), tt.port)
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			// The derived name passes cluster.node_name's validation.
			cfg := config.Default()
			cfg.Listen = "127.0.0.1:5000"
			cfg.Cluster.PeerBind = "127.0.0.1:7946"
			cfg.Cluster.NodeName = got
			if err := cfg.Validate(); err != nil {
				t.Errorf("%q: %v", got, err)
			}
		})
	}
	if a, b := DefaultNodeName("h", net.ParseIP("10.0.0.5"), 7946), DefaultNodeName("h", net.ParseIP("10.0.0.6"), 7946); a == b {
		t.Errorf("two addresses, one name %q", a)
	}
}

// TestDerivedNamesOnOneHost: nodes given no name on one host get distinct
// names and form one cluster (they all took the hostname before).
func TestDerivedNamesOnOneHost(t *testing.T) {
	noName := func(c *Config) { c.NodeName = "" }
	ports := freePorts(t, 3)
	a := startNode(t, "a", nil, noName, bindPort(ports[0]))
	b := startNode(t, "b", []string{a.addr()}, noName, bindPort(ports[1]))
	c := startNode(t, "c", []string{a.addr()}, noName, bindPort(ports[2]))
	for _, n := range []*Cluster{a, b, c} {
		if !strings.HasSuffix(n.Name(), "-"+strings.ReplaceAll(n.addr(), ":", "-")) {
			t.Errorf("name %q does not end with its gossip address %s", n.Name(), n.addr())
		}
	}
	for _, n := range []*Cluster{a, b, c} {
		waitAlive(t, n, a.Name(), b.Name(), c.Name())
	}
	if _, err := Start(Config{Bind: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "port 0") {
		t.Errorf("no name and gossip port 0: %v", err)
	}
}

func bindPort(port int) nodeOpt {
	return func(c *Config) { c.Bind = net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
}

// freePorts returns n TCP ports on 127.0.0.1 that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
