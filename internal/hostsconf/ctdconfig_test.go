package hostsconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckContainerdConfig: config_path is looked for in the section each
// config version is read from; a problem names the file, the section and
// the fix.
func TestCheckContainerdConfig(t *testing.T) {
	const certs = "/etc/containerd/certs.d"
	tests := []struct {
		name, config, hostsDir string
		want                   string // "" for no problem, else a substring of the one problem
	}{
		{"v2 with config_path", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n", certs, ""},
		{"v2 without", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"x\"\n", certs, `[plugins."io.containerd.grpc.v1.cri".registry]`},
		{"v2 key in the v3 section", "version = 2\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = \"/etc/containerd/certs.d\"\n", certs, "containerd 1.x then ignores"},
		{"v3 with config_path", "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = \"/x:/etc/containerd/certs.d\"\n", certs, ""},
		{"v3 without: 2.x default", "version = 3\n", certs, ""},
		{"v3 without, other dir", "version = 3\n", "/run/certs.d", `[plugins."io.containerd.cri.v1.images".registry]`},
		{"v3 key in the v2 section", "version = 3\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/x\"\n", "/x", `[plugins."io.containerd.cri.v1.images".registry]`},
		{"other config_path", "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = \"/x\"\n", certs, "--config-path /x"},
		{"mirrors", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  endpoint = [\"https://m\"]\n", certs, "deprecated registry.mirrors"},
		{"no file", "", certs, "does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "config.toml")
			if tt.config != "" {
				if err := os.WriteFile(file, []byte(tt.config), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			problems, err := CheckContainerdConfig(file, tt.hostsDir)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.want == "" && len(problems) > 0:
				t.Errorf("problems %q, want none", problems)
			case tt.want != "" && (len(problems) != 1 || !strings.Contains(problems[0], tt.want) || !strings.Contains(problems[0], file)):
				t.Errorf("problems %q, want one naming %s and %q", problems, file, tt.want)
			}
		})
	}
	if _, err := CheckContainerdConfig(writeTemp(t, "version = [\n"), certs); err == nil {
		t.Error("a config that is not TOML passed")
	}
}

func writeTemp(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
