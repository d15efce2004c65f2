package hostsconf

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// hostsFile is the part of containerd's hosts.toml schema berth writes.
type hostsFile struct {
	Server string `toml:"server"`
	Host   map[string]struct {
		Capabilities []string `toml:"capabilities"`
		DialTimeout  string   `toml:"dial_timeout"`
	} `toml:"host"`
}

const foreign = "server = \"https://mirror.corp.example\"\n"

// setup creates files (relative path -> content) under a new temp dir.
func setup(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func parse(t *testing.T, path string) hostsFile {
	t.Helper()
	var h hostsFile
	if err := toml.Unmarshal([]byte(read(t, path)), &h); err != nil {
		t.Fatalf("%s is not valid TOML: %v", path, err)
	}
	return h
}

// rel makes the paths of a Result relative to root, for comparing.
func rel(root string, paths []string) []string {
	out := []string{}
	for _, p := range paths {
		r, _ := filepath.Rel(root, p)
		out = append(out, filepath.ToSlash(r))
	}
	return out
}

var regs = map[string]string{
	"docker.io":          "https://registry-1.docker.io",
	"registry.test:5000": "http://127.0.0.1:9",
}

func TestConfigure(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		mirror    string
		written   []string
		unchanged []string
		backedUp  []string
	}{
		{
			name:    "fresh",
			written: []string{"docker.io/hosts.toml", "registry.test:5000/hosts.toml"},
		},
		{
			name:     "foreign file is backed up",
			files:    map[string]string{"docker.io/hosts.toml": foreign, "docker.io/ca.crt": "x"},
			written:  []string{"docker.io/hosts.toml", "registry.test:5000/hosts.toml"},
			backedUp: []string{"docker.io/hosts.toml.berth-backup"},
		},
		{
			name:    "berth file with another mirror is rewritten without backup",
			files:   map[string]string{"docker.io/hosts.toml": string(Render("docker.io", "https://registry-1.docker.io", "http://10.0.0.1:5000", time.Second))},
			written: []string{"docker.io/hosts.toml", "registry.test:5000/hosts.toml"},
		},
		{
			name:      "same content is unchanged, trailing slash ignored",
			mirror:    "http://127.0.0.1:5000/",
			files:     map[string]string{"docker.io/hosts.toml": string(Render("docker.io", "https://registry-1.docker.io", DefaultMirrorURL, DefaultDialTimeout))},
			written:   []string{"registry.test:5000/hosts.toml"},
			unchanged: []string{"docker.io/hosts.toml"},
		},
		{
			name: "identical backup is not made twice",
			files: map[string]string{
				"docker.io/hosts.toml":              foreign,
				"docker.io/hosts.toml.berth-backup": foreign,
			},
			written: []string{"docker.io/hosts.toml", "registry.test:5000/hosts.toml"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := setup(t, tc.files)
			opts := Options{ConfigPath: root, MirrorURL: tc.mirror, Registries: regs}
			res, err := Configure(opts)
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, got, want []string) {
				t.Helper()
				if want == nil {
					want = []string{}
				}
				if g := rel(root, got); !reflect.DeepEqual(g, want) {
					t.Errorf("%s = %q, want %q", what, g, want)
				}
			}
			check("Written", res.Written, tc.written)
			check("Unchanged", res.Unchanged, tc.unchanged)
			check("BackedUp", res.BackedUp, tc.backedUp)
			for name, server := range regs {
				p := filepath.Join(root, name, FileName)
				if !strings.HasPrefix(read(t, p), Marker) {
					t.Errorf("%s lacks the berth marker", p)
				}
				h := parse(t, p)
				host, ok := h.Host[DefaultMirrorURL]
				if h.Server != server || !ok || len(h.Host) != 1 {
					t.Fatalf("%s: server %q hosts %v", p, h.Server, h.Host)
				}
				if !reflect.DeepEqual(host.Capabilities, []string{"pull", "resolve"}) || host.DialTimeout != "2s" {
					t.Errorf("%s: host %+v", p, host)
				}
			}
			for _, p := range res.Written {
				if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
					t.Errorf("%s mode %v, want 0644", p, fi.Mode())
				}
			}
			for _, b := range tc.backedUp {
				if got := read(t, filepath.Join(root, b)); got != foreign {
					t.Errorf("backup %s = %q", b, got)
				}
				if fi, _ := os.Stat(filepath.Join(root, b)); fi.Mode().Perm() != 0o600 {
					t.Errorf("backup %s mode %v, want the original's 0600", b, fi.Mode())
				}
			}
			// A second run changes nothing and backs nothing up.
			again, err := Configure(opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(again.Written)+len(again.BackedUp) != 0 || len(again.Unchanged) != len(regs) {
				t.Errorf("second run: %+v", again)
			}
			if tmp, _ := filepath.Glob(filepath.Join(root, "*", ".*.tmp")); len(tmp) != 0 {
				t.Errorf("temporary files left: %v", tmp)
			}
		})
	}
}

func TestConfigureErrors(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		files map[string]string
		want  string
		is    error
	}{
		{name: "no registries", opts: Options{}, want: "no registries"},
		{name: "bad mirror scheme", opts: Options{MirrorURL: "ftp://x", Registries: regs}, want: "mirror URL"},
		{name: "mirror with path", opts: Options{MirrorURL: "http://x/v2", Registries: regs}, want: "mirror URL"},
		{name: "negative dial timeout", opts: Options{DialTimeout: -time.Second, Registries: regs}, want: "dial timeout"},
		{name: "escaping name", opts: Options{Registries: map[string]string{"..": "https://x"}}, want: "registry name"},
		{name: "name with slash", opts: Options{Registries: map[string]string{"a/b": "https://x"}}, want: "registry name"},
		{name: "bad upstream", opts: Options{Registries: map[string]string{"ghcr.io": "ghcr.io"}}, want: "upstream URL"},
		{
			name:  "different backup exists",
			opts:  Options{Registries: map[string]string{"docker.io": "https://registry-1.docker.io"}},
			files: map[string]string{"docker.io/hosts.toml": foreign, "docker.io/hosts.toml.berth-backup": "older"},
			is:    ErrBackupExists,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := setup(t, tc.files)
			tc.opts.ConfigPath = root
			_, err := Configure(tc.opts)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.is == nil {
				tc.is = ErrInvalidOptions
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			for p, content := range tc.files {
				if got := read(t, filepath.Join(root, p)); got != content {
					t.Errorf("%s changed to %q", p, got)
				}
			}
		})
	}
}

func TestConfigureWarnsAboutShadowingDir(t *testing.T) {
	root := setup(t, map[string]string{"registry.test_5000_/hosts.toml": foreign})
	res, err := Configure(Options{ConfigPath: root, Registries: regs})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "registry.test_5000_") {
		t.Errorf("warnings %q", res.Warnings)
	}
}

func TestUndo(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string // before Configure
		after    map[string]string // added after Configure
		restored []string
		removed  []string
		gone     []string // paths that must not exist afterwards
		kept     map[string]string
		warnings int
	}{
		{
			name:    "fresh configure is fully undone",
			removed: []string{"docker.io/hosts.toml", "registry.test:5000/hosts.toml"},
			gone:    []string{"docker.io", "registry.test:5000"},
		},
		{
			name:     "backup restored, other files kept",
			files:    map[string]string{"docker.io/hosts.toml": foreign, "docker.io/ca.crt": "cert", "quay.io/hosts.toml": foreign},
			restored: []string{"docker.io/hosts.toml"},
			removed:  []string{"registry.test:5000/hosts.toml"},
			gone:     []string{"docker.io/hosts.toml.berth-backup", "registry.test:5000"},
			kept:     map[string]string{"docker.io/hosts.toml": foreign, "docker.io/ca.crt": "cert", "quay.io/hosts.toml": foreign},
		},
		{
			name:     "file replaced by someone else since is left alone",
			files:    map[string]string{"docker.io/hosts.toml": foreign},
			after:    map[string]string{"docker.io/hosts.toml": "server = \"https://other\"\n"},
			removed:  []string{"registry.test:5000/hosts.toml"},
			kept:     map[string]string{"docker.io/hosts.toml": "server = \"https://other\"\n", "docker.io/hosts.toml.berth-backup": foreign},
			warnings: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := setup(t, tc.files)
			opts := Options{ConfigPath: root, Registries: regs}
			if _, err := Configure(opts); err != nil {
				t.Fatal(err)
			}
			for p, content := range tc.after {
				if err := os.WriteFile(filepath.Join(root, p), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			res, err := Undo(Options{ConfigPath: root}) // Registries not needed
			if err != nil {
				t.Fatal(err)
			}
			if g := rel(root, res.Restored); !reflect.DeepEqual(g, nonNil(tc.restored)) {
				t.Errorf("Restored = %q, want %q", g, tc.restored)
			}
			if g := rel(root, res.Removed); !reflect.DeepEqual(g, nonNil(tc.removed)) {
				t.Errorf("Removed = %q, want %q", g, tc.removed)
			}
			if len(res.Warnings) != tc.warnings {
				t.Errorf("warnings %q", res.Warnings)
			}
			for _, p := range tc.gone {
				if exists(filepath.Join(root, p)) {
					t.Errorf("%s still exists", p)
				}
			}
			for p, content := range tc.kept {
				if got := read(t, filepath.Join(root, p)); got != content {
					t.Errorf("%s = %q, want %q", p, got, content)
				}
			}
			// Undo twice is a no-op.
			again, err := Undo(opts)
			if err != nil || len(again.Restored)+len(again.Removed) != 0 {
				t.Errorf("second undo: %+v, %v", again, err)
			}
		})
	}
}

func TestUndoMissingDir(t *testing.T) {
	res, err := Undo(Options{ConfigPath: filepath.Join(t.TempDir(), "nope")})
	if err != nil || len(res.Removed) != 0 {
		t.Fatalf("%+v, %v", res, err)
	}
}

func TestQuote(t *testing.T) {
	var v struct{ S string }
	in := "a\"b\\c\x01d"
	if err := toml.Unmarshal([]byte("S = "+quote(in)), &v); err != nil || v.S != in {
		t.Fatalf("round trip: %q, %v", v.S, err)
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
