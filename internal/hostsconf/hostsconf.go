// Package hostsconf points a node's runtimes at berth, and takes them away
// again: containerd by writing hosts.toml files (one per registry under
// containerd's certs.d directory), CRI-O, podman and buildah by writing a
// containers-registries.conf.d drop-in (registries.go).
//
// Each file names berth as the first host to try and the real registry as the
// fallback `server`, so when berth is down containerd pulls as if berth were not
// there. containerd adds `?ns=<registry>` to every request it sends to a mirror,
// which is how berth knows which upstream a request is for.
//
// Files written here start with Marker. Configure never overwrites a file
// without it until that file has been copied to hosts.toml.berth-backup, and
// Undo only removes files with it, restoring the backup beside them.
package hostsconf

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-mirror/berth/internal/config"
)

const (
	// DefaultConfigPath is containerd's usual hosts directory (the CRI plugin's
	// registry.config_path).
	DefaultConfigPath = "/etc/containerd/certs.d"
	// DefaultMirrorURL is where berth listens on the node.
	DefaultMirrorURL = "http://127.0.0.1:5000"
	// DefaultDialTimeout bounds containerd's TCP connect to berth. containerd's own
	// default is 30s; a dial that hangs that long on every pull (berth's address
	// black-holed, or its accept queue full) would stall the node's pulls instead of
	// falling back to the registry. A loopback connect takes microseconds and a
	// refused one fails at once, so the timeout only matters for a hang: 2s leaves
	// room for one SYN retransmission (Linux's initial RTO is 1s) under a burst,
	// then gives up on berth and lets containerd use the `server` line.
	DefaultDialTimeout = 2 * time.Second

	// FileName is the file containerd reads in each registry directory.
	FileName = "hosts.toml"
	// BackupSuffix is appended to FileName for the copy of a file berth replaced.
	BackupSuffix = ".berth-backup"
	// Marker starts every file berth writes; files without it are not berth's.
	Marker = "# Managed by berth"
)

// Options says what to write and where. The zero value of each field but
// Registries means its default.
type Options struct {
	// ConfigPath is containerd's hosts directory (default DefaultConfigPath).
	ConfigPath string
	// MirrorURL is berth's address as containerd on this node reaches it
	// (default DefaultMirrorURL). It must be http:// or https:// with no path.
	MirrorURL string
	// Registries maps a registry name as containerd sees it in image references
	// ("docker.io", "registry.test:5000") to the real endpoint written as the
	// fallback `server` ("https://registry-1.docker.io"). Configure needs at least
	// one; Undo ignores it and cleans every registry directory.
	Registries map[string]string
	// DialTimeout is written as each host's dial_timeout (default
	// DefaultDialTimeout). containerd before 1.7 ignores the key.
	DialTimeout time.Duration
}

// Result lists the paths each call touched or looked at, sorted by registry.
type Result struct {
	// Written are hosts.toml files created or changed.
	Written []string
	// Unchanged are hosts.toml files that already had the wanted content.
	Unchanged []string
	// BackedUp are backups made of files that were not berth's, before replacing them.
	BackedUp []string
	// Restored are hosts.toml files put back from their backup by Undo.
	Restored []string
	// Removed are berth's hosts.toml files Undo deleted (no backup to restore).
	Removed []string
	// Warnings describe things left alone that the operator should look at.
	Warnings []string
}

// ErrInvalidOptions is wrapped by every error about Options themselves (a bad
// URL, registry name or timeout), as opposed to errors from the filesystem.
var ErrInvalidOptions = errors.New("hostsconf: invalid options")

// ErrBackupExists is returned when a file that is not berth's would have to be
// backed up but a different backup is already there: berth never overwrites a backup.
var ErrBackupExists = errors.New("hostsconf: a different backup already exists")

// withDefaults fills in defaults and checks every option.
func (o Options) withDefaults() (Options, error) {
	if o.ConfigPath == "" {
		o.ConfigPath = DefaultConfigPath
	}
	if o.MirrorURL == "" {
		o.MirrorURL = DefaultMirrorURL
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.DialTimeout < 0 {
		return o, fmt.Errorf("%w: dial timeout %s: must be > 0", ErrInvalidOptions, o.DialTimeout)
	}
	u, err := checkURL(o.MirrorURL)
	if err != nil {
		return o, fmt.Errorf("%w: mirror URL %q: %v", ErrInvalidOptions, o.MirrorURL, err)
	}
	o.MirrorURL = u
	return o, nil
}

// checkURL accepts http(s)://host[:port][/] and returns it without the slash.
func checkURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", errors.New("expected an http:// or https:// URL")
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return "", errors.New("expected scheme://host[:port] with no path, query or credentials")
	}
	return u.Scheme + "://" + u.Host, nil
}

// checkName rejects names that are not registry hosts or would escape ConfigPath.
func checkName(name string) error {
	if !config.ValidRegistryName(name) || name == "." || name == ".." || filepath.Base(name) != name {
		return fmt.Errorf("%w: registry name %q: expected a registry host such as docker.io or registry.test:5000", ErrInvalidOptions, name)
	}
	return nil
}

// Render returns the hosts.toml berth writes for one registry. mirror and
// server must already be valid URLs.
func Render(registry, server, mirror string, dialTimeout time.Duration) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: written by `berth configure-containerd` for %s.\n", Marker, registry)
	b.WriteString("# Edits are overwritten. `berth configure-containerd --undo` removes this file\n")
	b.WriteString("# and restores the hosts.toml" + BackupSuffix + " beside it, if any.\n")
	b.WriteString("# containerd tries berth first (adding ?ns=<registry>) and falls back to server.\n\n")
	fmt.Fprintf(&b, "server = %s\n\n", quote(server))
	fmt.Fprintf(&b, "[host.%s]\n", quote(mirror))
	b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
	fmt.Fprintf(&b, "  dial_timeout = %s\n", quote(dialTimeout.String()))
	return []byte(b.String())
}

// quote writes a TOML basic string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// hostDirectory is the "host_port_" spelling containerd looks for before "host:port".
func hostDirectory(name string) string {
	i := strings.LastIndex(name, ":")
	if i <= 0 {
		return name
	}
	return name[:i] + "_" + name[i+1:] + "_"
}
