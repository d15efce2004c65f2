package sysinfo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// cgroupMount is where cgroup hierarchies are mounted, relative to the root.
const cgroupMount = "sys/fs/cgroup"

// membership is a parsed /proc/<pid>/cgroup: the v1 path of each controller
// and the v2 (unified) path.
type membership struct {
	v1 map[string]string
	v2 string
}

// membership reads /proc/<pid>/cgroup. A missing file is not an error: every
// path is then "/", the mount root.
func (r Reader) membership() (membership, error) {
	data, err := os.ReadFile(filepath.Join(r.procDir(), "cgroup"))
	if errors.Is(err, fs.ErrNotExist) {
		return parseMembership(nil), nil
	}
	if err != nil {
		return membership{}, err
	}
	return parseMembership(data), nil
}

// parseMembership parses lines of hierarchy-ID:controller-list:path. The v2
// line is "0::path"; a v1 line's controller list may name several controllers
// ("cpu,cpuacct"). Malformed lines are skipped.
func parseMembership(data []byte) membership {
	m := membership{v1: map[string]string{}, v2: "/"}
	for line := range strings.Lines(string(data)) {
		id, rest, ok := strings.Cut(strings.TrimRight(line, "\n"), ":")
		if !ok {
			continue
		}
		controllers, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if id == "0" && controllers == "" {
			m.v2 = path
			continue
		}
		for _, c := range strings.Split(controllers, ",") {
			m.v1[c] = path
		}
	}
	return m
}

// resolve returns the cgroup directory of path under mount, or mount itself
// when that directory does not exist: inside a container (cgroup namespace or
// a bind-mounted subtree) the mount root is the container's own cgroup.
func resolve(mount, path string) string {
	dir := filepath.Join(mount, filepath.Clean("/"+path))
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return dir
	}
	return mount
}

// v2Mounts are the places a cgroup v2 hierarchy may be mounted: unified mode,
// then hybrid mode.
func (r Reader) v2Mounts() []string {
	return []string{r.path(cgroupMount), r.path(cgroupMount, "unified")}
}

// memCgroup is the directory of a memory controller and its version.
type memCgroup struct {
	version int // 0 when none was found
	dir     string
}

// memFiles names a memory controller's files and memory.stat keys.
type memFiles struct {
	limit, usage, inactive string
}

func (c memCgroup) files() memFiles {
	if c.version == 1 {
		return memFiles{"memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"}
	}
	return memFiles{"memory.max", "memory.current", "inactive_file"}
}

// memCgroup finds the memory controller, preferring v1. A v2 hierarchy only
// counts when it has memory files: a hybrid host's unified mount has none.
func (r Reader) memCgroup(m membership) memCgroup {
	v1 := resolve(r.path(cgroupMount, "memory"), m.v1["memory"])
	if exists(filepath.Join(v1, "memory.limit_in_bytes")) {
		return memCgroup{version: 1, dir: v1}
	}
	for _, mount := range r.v2Mounts() {
		dir := resolve(mount, m.v2)
		if exists(filepath.Join(dir, "memory.max")) || exists(filepath.Join(dir, "memory.current")) {
			return memCgroup{version: 2, dir: dir}
		}
	}
	return memCgroup{}
}

// findMemCgroup reads the membership and finds the memory controller. Its
// errors are ready to return: ErrNoCgroup when there is none.
func (r Reader) findMemCgroup() (memCgroup, error) {
	m, err := r.membership()
	if err != nil {
		return memCgroup{}, fmt.Errorf("sysinfo: cgroup membership: %w", err)
	}
	c := r.memCgroup(m)
	if c.version == 0 {
		return memCgroup{}, ErrNoCgroup
	}
	return c, nil
}
