package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
)

// minSecretLength is the shortest cluster secret accepted: it keys gossip
// encryption and peer tokens, and is stretched by nothing but SHA-256.
const minSecretLength = 16

var (
	clusterNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	// nodeNameRE admits Kubernetes node names (DNS subdomains, up to 253).
	nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)
)

// Enabled reports whether clustering is on (cluster.peer_bind is set).
func (c Cluster) Enabled() bool { return c.PeerBind != "" }

// Secrets returns the primary secret and the extra ones accepted for rotation.
func (c Cluster) Secrets() (primary string, extra []string) {
	for _, s := range strings.Split(c.ExtraSecrets, ",") {
		if s = strings.TrimSpace(s); s != "" {
			extra = append(extra, s)
		}
	}
	return c.Secret, extra
}

// JoinList returns the cluster.peer_join entries.
func (c Cluster) JoinList() []string {
	var out []string
	for _, s := range strings.Split(c.PeerJoin, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// redacted hides the secrets.
func (c Cluster) redacted() Cluster {
	if c.Secret != "" {
		c.Secret = "REDACTED"
	}
	if c.ExtraSecrets != "" {
		c.ExtraSecrets = "REDACTED"
	}
	return c
}

// PeerURL is where peers reach this node's peer API: cluster.advertise_url,
// else http://<cluster.peer_listen>, else http://<listen> when listen names
// a concrete host.
func (c *Config) PeerURL() (string, error) {
	cl := c.Cluster
	switch {
	case cl.AdvertiseURL != "":
		return strings.TrimSuffix(cl.AdvertiseURL, "/"), nil
	case cl.PeerListen != "":
		if concreteHost(cl.PeerListen) {
			return "http://" + cl.PeerListen, nil
		}
	case concreteHost(c.Listen):
		return "http://" + c.Listen, nil
	}
	return "", &Error{Key: "cluster.advertise_url", Value: "",
		Expected: "a URL such as http://10.0.0.5:5000 where peers reach this node (required when neither cluster.peer_listen nor listen names a concrete host)"}
}

// concreteHost reports whether a HOST:PORT names a host others can dial.
func concreteHost(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil || h == "" {
		return false
	}
	ip := net.ParseIP(h)
	return ip == nil || !ip.IsUnspecified()
}

// isLoopback reports whether a HOST:PORT's host is a loopback address.
func isLoopback(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func validHostPort(s string) bool {
	h, p, err := net.SplitHostPort(s)
	if err != nil || p == "" {
		return false
	}
	var port int
	if _, err := fmt.Sscanf(p, "%d", &port); err != nil || port < 0 || port > 65535 || fmt.Sprint(port) != p {
		return false
	}
	return !strings.ContainsAny(h, "/@?# ")
}

// validateCluster checks the cluster.* keys (DESIGN.md, Cluster).
func (c *Config) validateCluster() error {
	cl := c.Cluster
	if cl.UploadRate != 0 && cl.UploadRate < 1<<20 {
		return &Error{Key: "cluster.upload_rate", Value: cl.UploadRate.String(), Expected: "0 (no cap) or a rate of at least 1Mi (bytes per second)"}
	}
	if !cl.Enabled() {
		for _, kv := range [][2]string{{"cluster.peer_join", cl.PeerJoin}, {"cluster.peer_listen", cl.PeerListen}, {"cluster.advertise_url", cl.AdvertiseURL}} {
			if kv[1] != "" {
				return &Error{Key: "cluster.peer_bind", Value: "", Expected: "HOST:PORT for gossip (required when " + kv[0] + " is set)"}
			}
		}
		return nil
	}
	if !validHostPort(cl.PeerBind) {
		return &Error{Key: "cluster.peer_bind", Value: cl.PeerBind, Expected: "HOST:PORT for gossip, e.g. 0.0.0.0:7946"}
	}
	if !clusterNameRE.MatchString(cl.Name) {
		return &Error{Key: "cluster.name", Value: cl.Name, Expected: "1 to 63 letters, digits, '.', '_' or '-'"}
	}
	if cl.NodeName != "" && !nodeNameRE.MatchString(cl.NodeName) {
		return &Error{Key: "cluster.node_name", Value: cl.NodeName, Expected: "1 to 253 letters, digits, '.', '_' or '-'"}
	}
	for _, j := range cl.JoinList() {
		if !validHostPort(j) {
			return &Error{Key: "cluster.peer_join", Value: j, Expected: "comma-separated HOST:PORT entries (a host may be a DNS name with several addresses)"}
		}
	}
	if cl.PeerListen != "" && !validHostPort(cl.PeerListen) {
		return &Error{Key: "cluster.peer_listen", Value: cl.PeerListen, Expected: "HOST:PORT for the peer-only listener, e.g. 10.0.0.5:5001"}
	}
	if cl.AdvertiseURL != "" {
		if err := validateURL(cl.AdvertiseURL); err != nil {
			return &Error{Key: "cluster.advertise_url", Value: cl.AdvertiseURL, Expected: "an http:// or https:// URL with a host and no path"}
		}
	}
	peerURL, err := c.PeerURL()
	if err != nil {
		return err
	}
	exposed := !isLoopback(cl.PeerBind) || (cl.PeerListen != "" && !isLoopback(cl.PeerListen))
	if exposed && cl.Secret == "" {
		return &Error{Key: "cluster.secret", Value: "", Expected: "a secret shared by every node, at least 16 characters (required when cluster.peer_bind or cluster.peer_listen is not a loopback address; env BERTH_CLUSTER_SECRET)"}
	}
	primary, extra := cl.Secrets()
	for _, s := range append([]string{primary}, extra...) {
		if s != "" && len(s) < minSecretLength {
			return &Error{Key: "cluster.secret", Value: "REDACTED", Expected: fmt.Sprintf("at least %d characters (cluster.secret and each of cluster.extra_secrets)", minSecretLength)}
		}
	}
	if extra != nil && primary == "" {
		return &Error{Key: "cluster.secret", Value: "", Expected: "the primary secret (required when cluster.extra_secrets is set)"}
	}
	if u, err := url.Parse(peerURL); err == nil && isLoopback(net.JoinHostPort(u.Hostname(), "0")) && !isLoopback(cl.PeerBind) {
		return &Error{Key: "cluster.advertise_url", Value: peerURL, Expected: "a URL other nodes can reach: it is a loopback address while cluster.peer_bind is not"}
	}
	return nil
}
