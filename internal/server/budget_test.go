package server

import (
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/berth-mirror/berth/internal/config"
)

// manifests is the rendered Helm chart with its defaults, as shipped.
const manifests = "../../deploy/kubernetes/berth.yaml"

// manifestDoc decodes the first document of the given kind into v.
func manifestDoc(t *testing.T, kind string, v any) {
	t.Helper()
	f, err := os.Open(manifests)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			t.Fatalf("no %s in %s: %v", kind, manifests, err)
		}
		var head struct {
			Kind string `yaml:"kind"`
		}
		if n.Decode(&head) == nil && head.Kind == kind {
			if err := n.Decode(v); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}

// manifestMemoryLimit reads the berth container's memory limit from the
// DaemonSet.
func manifestMemoryLimit(t *testing.T) int64 {
	t.Helper()
	var ds struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Name      string `yaml:"name"`
						Resources struct {
							Limits map[string]string `yaml:"limits"`
						} `yaml:"resources"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	manifestDoc(t, "DaemonSet", &ds)
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name == "berth" {
			n, err := config.ParseSize(c.Resources.Limits["memory"])
			if err != nil || n <= 0 {
				t.Fatalf("memory limit %q: %v", c.Resources.Limits["memory"], err)
			}
			return int64(n)
		}
	}
	t.Fatal("no container berth in the DaemonSet")
	return 0
}

// manifestConfig loads the ConfigMap's berth.yaml.
func manifestConfig(t *testing.T) config.Config {
	t.Helper()
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	manifestDoc(t, "ConfigMap", &cm)
	p := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(p, []byte(cm.Data["berth.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestConnectionsFitMemoryLimit: what the connections may hold at most with
// the defaults, and with the shipped ConfigMap, plus everything else berth
// needs, fits the memory limit the DaemonSet gives it.
func TestConnectionsFitMemoryLimit(t *testing.T) {
	limit := manifestMemoryLimit(t)
	for _, tt := range []struct {
		name string
		cfg  config.Config
	}{
		{"defaults", config.Default()},
		{"ConfigMap", manifestConfig(t)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conns := connectionsMemory(tt.cfg)
			if conns == 0 {
				t.Fatal("max_connections 0: connections are unbounded")
			}
			t.Logf("max_connections %d (+%d reserve) x %d KiB + %d MiB = %d MiB, limit %d MiB",
				tt.cfg.MaxConnections, probeReserve, connMemory(int(tt.cfg.MaxHeaderBytes))>>10,
				fixedAllowance>>20, (conns+fixedAllowance)>>20, limit>>20)
			if conns+fixedAllowance > limit {
				t.Errorf("connections may hold %d MiB: with %d MiB for the rest, over the %d MiB limit",
					conns>>20, fixedAllowance>>20, limit>>20)
			}
		})
	}
}
