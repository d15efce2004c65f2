package hostsconf

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/berth-mirror/berth/internal/config"
)

// DefaultRegistriesDropIn is where CRI-O, podman, buildah and skopeo (the
// containers/image library) read registry mirrors from besides
// /etc/containers/registries.conf (containers-registries.conf.d(5)).
const DefaultRegistriesDropIn = "/etc/containers/registries.conf.d/50-berth.conf"

// Registry is one registry the drop-in mirrors through berth.
type Registry struct {
	// Name is the registry as image references name it (docker.io, registry.corp:5000).
	Name string
	// URL is its real endpoint; only its scheme is used (http: the registry is insecure).
	URL string
	// Prefix is berth's path name for it (upstreams.NAME.prefix). A registry
	// whose name has a port needs one: "berth:5000/registry.corp:5000/…" is
	// not a valid image reference, "berth:5000/corp/…" is.
	Prefix string
}

// RegistriesOptions says what drop-in to write.
type RegistriesOptions struct {
	// Path is the drop-in file (default DefaultRegistriesDropIn).
	Path string
	// MirrorURL is berth's address as the node's runtimes reach it (default
	// DefaultMirrorURL); http:// makes the mirror `insecure = true`.
	MirrorURL string
	// Registries to mirror; ConfigureRegistries needs at least one.
	Registries []Registry
}

// RenderRegistries returns the drop-in for regs (sorted by name) and a warning
// for each registry it had to leave out.
func RenderRegistries(mirrorURL string, regs []Registry) ([]byte, []string) {
	u, _ := url.Parse(mirrorURL)
	mirrorInsecure := u.Scheme == "http"
	sort.Slice(regs, func(i, j int) bool { return regs[i].Name < regs[j].Name })
	var b strings.Builder
	fmt.Fprintf(&b, "%s: written by `berth configure-registries`.\n", Marker)
	b.WriteString("# Edits are overwritten; `berth configure-registries --undo` removes this file.\n")
	b.WriteString("# CRI-O, podman and buildah try berth first and fall back to each registry itself.\n")
	var warnings []string
	for _, r := range regs {
		path := r.Name
		if strings.Contains(r.Name, ":") {
			if r.Prefix == "" {
				warnings = append(warnings, fmt.Sprintf("%s left out: a registry with a port can be mirrored only through a prefix name (upstreams.%s.prefix)", r.Name, r.Name))
				continue
			}
			path = r.Prefix
		}
		fmt.Fprintf(&b, "\n[[registry]]\nlocation = %s\n", quote(r.Name))
		if strings.HasPrefix(r.URL, "http://") {
			b.WriteString("insecure = true\n")
		}
		fmt.Fprintf(&b, "\n[[registry.mirror]]\nlocation = %s\n", quote(u.Host+"/"+path))
		if mirrorInsecure {
			b.WriteString("insecure = true\n")
		}
	}
	return []byte(b.String()), warnings
}

// ConfigureRegistries writes the drop-in, first backing up a file there that
// is not berth's (as Configure does for hosts.toml).
func ConfigureRegistries(opts RegistriesOptions) (Result, error) {
	var res Result
	if opts.Path == "" {
		opts.Path = DefaultRegistriesDropIn
	}
	o, err := Options{MirrorURL: opts.MirrorURL}.withDefaults()
	if err != nil {
		return res, err
	}
	if len(opts.Registries) == 0 {
		return res, fmt.Errorf("%w: no registries to configure", ErrInvalidOptions)
	}
	for _, r := range opts.Registries {
		if err := checkName(r.Name); err != nil {
			return res, err
		}
		if _, err := checkURL(r.URL); err != nil {
			return res, fmt.Errorf("%w: upstream URL %q for %s: %v", ErrInvalidOptions, r.URL, r.Name, err)
		}
		if r.Prefix != "" && !config.ValidPrefix(r.Prefix) {
			return res, fmt.Errorf("%w: prefix %q for %s: expected one path component without '.' or ':'", ErrInvalidOptions, r.Prefix, r.Name)
		}
	}
	want, warnings := RenderRegistries(o.MirrorURL, opts.Registries)
	res.Warnings = warnings
	if err := os.MkdirAll(filepath.Dir(opts.Path), 0o755); err != nil {
		return res, fmt.Errorf("hostsconf: %w", err)
	}
	return res, writeOwned(&res, opts.Path, want)
}

// writeOwned writes want to path unless it is there already, backing up a
// file that is not berth's.
func writeOwned(res *Result, path string, want []byte) error {
	cur, mode, err := readFile(path)
	if err != nil {
		return err
	}
	if cur != nil && string(cur) == string(want) {
		res.Unchanged = append(res.Unchanged, path)
		return nil
	}
	if cur != nil && !IsBerthFile(cur) {
		made, err := backup(path, cur, mode)
		if err != nil {
			return err
		}
		if made {
			res.BackedUp = append(res.BackedUp, path+BackupSuffix)
		}
	}
	if err := writeAtomic(path, want, 0o644); err != nil {
		return err
	}
	res.Written = append(res.Written, path)
	return nil
}

// UndoRegistries removes berth's drop-in at path (default
// DefaultRegistriesDropIn) and restores the backup beside it, if any; a file
// that is not berth's is left alone.
func UndoRegistries(path string) (Result, error) {
	var res Result
	if path == "" {
		path = DefaultRegistriesDropIn
	}
	if _, err := os.Stat(filepath.Dir(path)); errors.Is(err, fs.ErrNotExist) {
		return res, nil
	}
	cur, _, err := readFile(path)
	if err != nil {
		return res, err
	}
	bak, _, err := readFile(path + BackupSuffix)
	if err != nil {
		return res, err
	}
	ours := cur != nil && IsBerthFile(cur)
	switch {
	case bak != nil && (ours || cur == nil):
		if err := os.Rename(path+BackupSuffix, path); err != nil {
			return res, fmt.Errorf("hostsconf: restoring %s: %w", path, err)
		}
		res.Restored = append(res.Restored, path)
	case ours:
		if err := os.Remove(path); err != nil {
			return res, fmt.Errorf("hostsconf: %w", err)
		}
		res.Removed = append(res.Removed, path)
	case bak != nil:
		res.Warnings = append(res.Warnings, fmt.Sprintf("%s is not berth's and was left alone; %s kept", path, path+BackupSuffix))
	}
	syncDir(filepath.Dir(path))
	return res, nil
}
