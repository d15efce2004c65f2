package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/berth-mirror/berth/internal/config"
)

// TestClusterWiring: the chart's DaemonSet with the cluster on, its
// environment expanded as the kubelet does on a node, gives berth a valid
// cluster configuration: gossip and the peer listener on the node IP, the
// node's own name, joining the headless Service, the secret from a Secret,
// the registry still on loopback.
func TestClusterWiring(t *testing.T) {
	objs := decode(t, render(t, "--set", "cluster.enabled=true", "--set", "cluster.existingSecret=berth-cluster"))
	c := objs.daemonSet.Spec.Template.Spec.Containers[0]
	// What the kubelet would set on node "node-a" with IP 10.0.0.5.
	fields := map[string]string{"status.hostIP": "10.0.0.5", "spec.nodeName": "node-a"}
	const secret = "a-secret-from-the-berth-cluster-Secret"
	env := map[string]string{}
	ref := regexp.MustCompile(`\$\(([A-Z_]+)\)`)
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			env[e.Name] = fields[e.ValueFrom.FieldRef.FieldPath]
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			s := e.ValueFrom.SecretKeyRef
			if s.Name != "berth-cluster" {
				t.Errorf("%s from Secret %s, want berth-cluster", e.Name, s.Name)
			}
			if s.Key == "secret" {
				env[e.Name] = secret
			}
		default:
			env[e.Name] = ref.ReplaceAllStringFunc(e.Value, func(m string) string { return env[ref.FindStringSubmatch(m)[1]] })
		}
	}
	if env["BERTH_CLUSTER_SECRET"] != secret {
		t.Fatal("BERTH_CLUSTER_SECRET does not come from a Secret")
	}
	cm, ok := objs.configMaps["berth"]
	if !ok {
		t.Fatal("no ConfigMap berth")
	}
	p := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(p, []byte(cm.Data["berth.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the node's configuration is invalid: %v", err)
	}
	cl := cfg.Cluster
	if cl.PeerBind != "10.0.0.5:7946" || cl.PeerListen != "10.0.0.5:5001" || cl.NodeName != "node-a" {
		t.Errorf("cluster config %+v", cfg.Redacted().Cluster)
	}
	if u, _ := cfg.PeerURL(); u != "http://10.0.0.5:5001" {
		t.Errorf("peers reach this node at %q, want its peer listener", u)
	}
	if !slices.Equal(cl.JoinList(), []string{"berth-peers.berth.svc.cluster.local:7946"}) {
		t.Errorf("peer_join %q, want the headless Service berth-peers", cl.JoinList())
	}
	if cfg.Listen != "127.0.0.1:5000" {
		t.Errorf("listen %q: the registry must stay on loopback", cfg.Listen)
	}
	ports := map[string]bool{}
	for _, p := range c.Ports {
		ports[fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol)] = true
	}
	for _, want := range []string{"7946/TCP", "7946/UDP", "5001/TCP"} {
		if !ports[want] {
			t.Errorf("port %s not declared on the container (the scheduler must see it taken)", want)
		}
	}
}
