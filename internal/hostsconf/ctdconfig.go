package hostsconf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/pelletier/go-toml/v2"
)

// DefaultContainerdConfig is containerd's configuration file.
const DefaultContainerdConfig = "/etc/containerd/config.toml"

// containerd2DefaultConfigPath is the CRI image service's hosts directories
// in containerd 2.x when its config sets neither config_path nor mirrors
// (containerd's plugins/cri/images).
const containerd2DefaultConfigPath = "/etc/containerd/certs.d:/etc/docker/certs.d"

// CheckContainerdConfig reads containerd's config file and returns what stops
// the CRI plugin (the kubelet's pulls) from reading hostsDir: config_path
// missing or different in the section the config's version is read from
// (version 2: plugins."io.containerd.grpc.v1.cri".registry, read by containerd
// 1.x and migrated by 2.x; version 3: plugins."io.containerd.cri.v1.images".registry,
// containerd 2.x only), or the deprecated registry.mirrors set instead. A
// missing file is containerd's defaults. It returns no problem when all is well.
func CheckContainerdConfig(file, hostsDir string) ([]string, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return checkConfigPath(file, 0, "", false, hostsDir), nil
	}
	if err != nil {
		return nil, fmt.Errorf("hostsconf: %w", err)
	}
	var doc map[string]any
	if err := toml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("hostsconf: %s: %w", file, err)
	}
	version, _ := doc["version"].(int64)
	plugin := "io.containerd.grpc.v1.cri"
	switch {
	case version == 3:
		plugin = "io.containerd.cri.v1.images"
	case version < 2:
		plugin = "cri"
	}
	reg := table(table(table(doc, "plugins"), plugin), "registry")
	cp, _ := reg["config_path"].(string)
	mirrors := len(table(reg, "mirrors")) > 0
	return checkConfigPath(file, version, cp, mirrors, hostsDir), nil
}

// checkConfigPath explains what config_path (cp, "" when unset) in a config of
// version means for containerd reading hostsDir.
func checkConfigPath(file string, version int64, cp string, mirrors bool, hostsDir string) []string {
	section := map[int64]string{3: `[plugins."io.containerd.cri.v1.images".registry]`, 2: `[plugins."io.containerd.grpc.v1.cri".registry]`}[version]
	if section == "" {
		section = `[plugins."io.containerd.grpc.v1.cri".registry] (with version = 2 at the top)`
	}
	fix := fmt.Sprintf("set config_path = %q under %s in %s and restart containerd", hostsDir, section, file)
	switch {
	case cp == "" && mirrors:
		return []string{fmt.Sprintf("%s sets the deprecated registry.mirrors and no config_path: containerd ignores hosts.toml files, so the kubelet's pulls do not go through berth; remove the mirrors and %s", file, fix)}
	case cp == "" && version == 3:
		if inPathList(containerd2DefaultConfigPath, hostsDir) {
			return nil
		}
		return []string{fmt.Sprintf("%s sets no config_path: containerd 2.x reads hosts.toml from %s only, not %s; %s", file, containerd2DefaultConfigPath, hostsDir, fix)}
	case cp == "":
		what := "has no config_path"
		if version == 0 {
			what = "does not exist or has no version"
		}
		return []string{fmt.Sprintf("%s %s: containerd 1.x then ignores hosts.toml files (containerd 2.x reads %s); %s", file, what, containerd2DefaultConfigPath, fix)}
	case !inPathList(cp, hostsDir):
		return []string{fmt.Sprintf("%s has config_path = %q, which does not include %s: containerd does not read berth's hosts.toml files; %s, or run configure-containerd with --config-path %s", file, cp, hostsDir, fix, filepath.SplitList(cp)[0])}
	}
	return nil
}

func inPathList(list, dir string) bool {
	return slices.ContainsFunc(filepath.SplitList(list), func(p string) bool { return filepath.Clean(p) == filepath.Clean(dir) })
}

// table returns m[key] as a TOML table, or nil.
func table(m map[string]any, key string) map[string]any {
	t, _ := m[key].(map[string]any)
	return t
}
