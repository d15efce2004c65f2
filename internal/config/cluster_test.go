package config

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateCluster(t *testing.T) {
	const secret = "0123456789abcdef"
	tests := []struct {
		name    string
		listen  string
		cl      Cluster
		wantKey string // "" : valid
		wantURL string
	}{
		{name: "off", cl: Cluster{Name: "berth"}},
		{name: "join without bind", cl: Cluster{Name: "berth", PeerJoin: "a:7946"}, wantKey: "cluster.peer_bind"},
		{name: "loopback, no secret", listen: "127.0.0.2:5000", cl: Cluster{Name: "berth", PeerBind: "127.0.0.2:7946", PeerJoin: "127.0.0.1:7946,127.0.0.3:7946"}, wantURL: "http://127.0.0.2:5000"},
		{name: "bad bind", listen: "127.0.0.1:5000", cl: Cluster{Name: "berth", PeerBind: "7946"}, wantKey: "cluster.peer_bind"},
		{name: "bad name", listen: "127.0.0.1:5000", cl: Cluster{Name: "two words", PeerBind: "127.0.0.1:7946"}, wantKey: "cluster.name"},
		{name: "bad node name", listen: "127.0.0.1:5000", cl: Cluster{Name: "b", NodeName: "a/b", PeerBind: "127.0.0.1:7946"}, wantKey: "cluster.node_name"},
		{name: "bad join", listen: "127.0.0.1:5000", cl: Cluster{Name: "b", PeerBind: "127.0.0.1:7946", PeerJoin: "berth-peers"}, wantKey: "cluster.peer_join"},
		{name: "non-loopback bind needs a secret", listen: "10.0.0.5:5000", cl: Cluster{Name: "b", PeerBind: "0.0.0.0:7946"}, wantKey: "cluster.secret"},
		{name: "non-loopback peer listener needs a secret", listen: "127.0.0.1:5000", cl: Cluster{Name: "b", PeerBind: "127.0.0.1:7946", PeerListen: "10.0.0.5:5001"}, wantKey: "cluster.secret"},
		{name: "short secret", listen: "10.0.0.5:5000", cl: Cluster{Name: "b", PeerBind: "10.0.0.5:7946", Secret: "short"}, wantKey: "cluster.secret"},
		{name: "short extra secret", listen: "10.0.0.5:5000", cl: Cluster{Name: "b", PeerBind: "10.0.0.5:7946", Secret: secret, ExtraSecrets: "x"}, wantKey: "cluster.secret"},
		{name: "extra without primary", listen: "127.0.0.1:5000", cl: Cluster{Name: "b", PeerBind: "127.0.0.1:7946", ExtraSecrets: secret}, wantKey: "cluster.secret"},
		{name: "kubernetes", listen: "127.0.0.1:5000", cl: Cluster{Name: "b", PeerBind: "0.0.0.0:7946", PeerJoin: "berth-peers.berth.svc:7946", PeerListen: "10.0.0.5:5001", Secret: secret}, wantURL: "http://10.0.0.5:5001"},
		{name: "unspecified listen, no URL", listen: ":5000", cl: Cluster{Name: "b", PeerBind: "10.0.0.5:7946", Secret: secret}, wantKey: "cluster.advertise_url"},
		{name: "explicit URL", listen: ":5000", cl: Cluster{Name: "b", PeerBind: "10.0.0.5:7946", Secret: secret, AdvertiseURL: "http://node-a:5000/"}, wantURL: "http://node-a:5000"},
		{name: "bad URL", listen: ":5000", cl: Cluster{Name: "b", PeerBind: "10.0.0.5:7946", Secret: secret, AdvertiseURL: "node-a:5000"}, wantKey: "cluster.advertise_url"},
		{name: "loopback URL with a non-loopback bind", listen: "127.0.0.1:5000", cl: Cluster{Name: "b", PeerBind: "10.0.0.5:7946", Secret: secret}, wantKey: "cluster.advertise_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			if tt.listen != "" {
				c.Listen = tt.listen
			}
			c.Cluster = tt.cl
			err := c.Validate()
			var ce *Error
			switch {
			case tt.wantKey == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantKey != "" && (!errors.As(err, &ce) || ce.Key != tt.wantKey):
				t.Fatalf("error %v, want one naming %s", err, tt.wantKey)
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows the secret: %v", err)
			}
			if tt.wantURL != "" {
				if u, err := c.PeerURL(); err != nil || u != tt.wantURL {
					t.Errorf("PeerURL = %q, %v; want %q", u, err, tt.wantURL)
				}
			}
		})
	}
}

func TestClusterSecretsRedactedAndEnv(t *testing.T) {
	c, err := Load("", env(map[string]string{
		"BERTH_CLUSTER_SECRET": "0123456789abcdef", "BERTH_CLUSTER_EXTRA_SECRETS": " old-secret-0123456 , ",
		"BERTH_CLUSTER_NODE_NAME": "node-a", "BERTH_CLUSTER_PEER_JOIN": "a:1, b:2",
	}))
	if err != nil {
		t.Fatal(err)
	}
	p, extra := c.Cluster.Secrets()
	if p != "0123456789abcdef" || len(extra) != 1 || extra[0] != "old-secret-0123456" || c.Cluster.NodeName != "node-a" {
		t.Fatalf("secrets %q %q, node %q", p, extra, c.Cluster.NodeName)
	}
	if j := c.Cluster.JoinList(); len(j) != 2 || j[1] != "b:2" {
		t.Fatalf("join list %q", j)
	}
	r := c.Redacted()
	if r.Cluster.Secret != "REDACTED" || r.Cluster.ExtraSecrets != "REDACTED" {
		t.Fatalf("not redacted: %+v", r.Cluster)
	}
}
