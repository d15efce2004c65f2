package sysinfo

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrNoCgroup is returned by Usage and WorkingSet when no cgroup
// memory controller was found for the process.
var ErrNoCgroup = errors.New("sysinfo: no cgroup memory controller found")

// Reader reads cgroup and process figures from a filesystem root. The zero
// value reads the calling process on the real machine. A Reader holds no state:
// every call reads the files afresh, and it is safe for concurrent use.
type Reader struct {
	// Root is the directory that proc and sys/fs/cgroup are found under.
	// "" means "/"; tests point it at fixture trees.
	Root string
	// PID is the process whose cgroup membership and status are read.
	// 0 means the calling process (/proc/self).
	PID int
}

// Limits are the resource limits of a process's cgroup.
type Limits struct {
	// Version is the cgroup version of the memory controller: 1, 2, or 0 when
	// no memory controller was found.
	Version int
	// MemoryLimit is the memory limit in bytes; 0 means no limit ("max" in v2,
	// or the v1 "unlimited" page counter of at least 1<<62).
	MemoryLimit int64
	// CPUQuota is the CFS quota in cores; 0 means no quota ("max" in v2 cpu.max,
	// -1 in v1 cpu.cfs_quota_us).
	CPUQuota float64
}

// path joins elem below the reader's root.
func (r Reader) path(elem ...string) string {
	root := r.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(append([]string{root}, elem...)...)
}

// procDir is /proc/<pid> (or /proc/self) below the root.
func (r Reader) procDir() string {
	if r.PID == 0 {
		return r.path("proc", "self")
	}
	return r.path("proc", strconv.Itoa(r.PID))
}

// exists reports whether path names an existing file or directory.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// readInt reads a file holding one decimal integer.
func readInt(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return n, nil
}

// statValue returns the value of key in a "key value" per line file such as
// memory.stat. A key that is absent counts as 0, as cAdvisor counts it.
func statValue(data []byte, key string) (int64, error) {
	for line := range strings.Lines(string(data)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s: %w", key, err)
		}
		return n, nil
	}
	return 0, nil
}
