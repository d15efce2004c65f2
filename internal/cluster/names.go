package cluster

import (
	"net"
	"strconv"
	"strings"
)

// maxNameLen is cluster.node_name's limit (a Kubernetes node name).
const maxNameLen = 253

// DefaultNodeName is the member name of a node given none: its hostname
// and advertised gossip address, as in "myhost-10.0.0.5-7946". Nodes
// sharing a host (tests, several berths on one machine) get distinct
// names, and a node restarted on the same address gets its name back.
// The result passes cluster.node_name's validation: IPv6 colons become
// '-' (an IPv6 string has no '-', so distinct addresses stay distinct).
func DefaultNodeName(hostname string, ip net.IP, port int) string {
	suffix := "-" + strings.ReplaceAll(ip.String(), ":", "-") + "-" + strconv.Itoa(port)
	host := sanitizeName(hostname)
	if host == "" {
		host = "berth"
	}
	if len(host)+len(suffix) > maxNameLen {
		host = host[:maxNameLen-len(suffix)]
	}
	return host + suffix
}

// sanitizeName keeps the characters a node name admits (letters, digits,
// '.', '_', '-'), replacing the others with '-', and drops what cannot
// start a name.
func sanitizeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !nameChar(c) {
			b[i] = '-'
		}
	}
	return strings.TrimLeft(string(b), "._-")
}

func nameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}
