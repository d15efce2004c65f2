package hostsconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigureRegistries: one [[registry]] per registry with berth as its
// mirror (by name, or by prefix for a registry with a port; left out with a
// warning without one), a foreign file backed up and restored by the undo.
func TestConfigureRegistries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registries.conf.d", "50-berth.conf")
	opts := RegistriesOptions{Path: path, MirrorURL: "http://127.0.0.1:5000", Registries: []Registry{
		{Name: "docker.io", URL: "https://registry-1.docker.io"},
		{Name: "registry.corp:5000", URL: "http://10.0.0.1:5000", Prefix: "corp"},
		{Name: "other.corp:6000", URL: "https://other.corp:6000"},
	}}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	foreign := []byte("[[registry]]\nlocation = \"docker.io\"\n")
	if err := os.WriteFile(path, foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := ConfigureRegistries(opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Written) != 1 || len(res.BackedUp) != 1 || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "other.corp:6000") {
		t.Fatalf("result %+v", res)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "\n[[registry]]\nlocation = \"docker.io\"\n\n[[registry.mirror]]\nlocation = \"127.0.0.1:5000/docker.io\"\ninsecure = true\n" +
		"\n[[registry]]\nlocation = \"registry.corp:5000\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"127.0.0.1:5000/corp\"\ninsecure = true\n"
	if !IsBerthFile(b) || !strings.HasSuffix(string(b), want) || strings.Contains(string(b), "other.corp") {
		t.Errorf("drop-in:\n%s\nwant it to end with:\n%s", b, want)
	}
	if res, err := ConfigureRegistries(opts); err != nil || len(res.Unchanged) != 1 {
		t.Errorf("second run: %+v, %v", res, err)
	}
	res, err = UndoRegistries(path)
	if err != nil || len(res.Restored) != 1 {
		t.Fatalf("undo: %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(foreign) {
		t.Errorf("after undo: %q", b)
	}
	for _, bad := range []RegistriesOptions{
		{Path: path},
		{Path: path, Registries: []Registry{{Name: "a.test", URL: "ftp://x"}}},
		{Path: path, Registries: []Registry{{Name: "a.test:1", URL: "http://x", Prefix: "a.b"}}},
		{Path: path, MirrorURL: "http://x/path", Registries: []Registry{{Name: "a.test", URL: "http://x"}}},
	} {
		if _, err := ConfigureRegistries(bad); err == nil {
			t.Errorf("ConfigureRegistries(%+v) accepted", bad)
		}
	}
}
