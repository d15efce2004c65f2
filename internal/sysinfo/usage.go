package sysinfo

import (
	"fmt"
	"os"
	"path/filepath"
)

// Usage returns the memory charged to the process's cgroup, page cache
// included: v2 memory.current, v1 memory.usage_in_bytes. Without a memory
// controller it returns ErrNoCgroup.
func (r Reader) Usage() (int64, error) {
	c, err := r.findMemCgroup()
	if err != nil {
		return 0, err
	}
	n, err := c.usage()
	if err != nil {
		return 0, fmt.Errorf("sysinfo: usage: %w", err)
	}
	return n, nil
}

// WorkingSet returns the cgroup's working set as the kubelet counts it for
// eviction and OOM decisions: usage minus inactive file cache (v2
// memory.current - inactive_file, v1 memory.usage_in_bytes -
// total_inactive_file), never negative. Without a memory controller it returns
// ErrNoCgroup.
func (r Reader) WorkingSet() (int64, error) {
	c, err := r.findMemCgroup()
	if err != nil {
		return 0, err
	}
	usage, err := c.usage()
	if err != nil {
		return 0, fmt.Errorf("sysinfo: working set: %w", err)
	}
	stat, err := os.ReadFile(filepath.Join(c.dir, "memory.stat"))
	if err != nil {
		return 0, fmt.Errorf("sysinfo: working set: %w", err)
	}
	inactive, err := statValue(stat, c.files().inactive)
	if err != nil {
		return 0, fmt.Errorf("sysinfo: working set: %w", err)
	}
	return workingSet(usage, inactive), nil
}

// usage reads memory.current or memory.usage_in_bytes.
func (c memCgroup) usage() (int64, error) {
	return readInt(filepath.Join(c.dir, c.files().usage))
}

// workingSet is usage less inactive file pages, clamped at 0 (the two files
// are not read atomically, and the kubelet clamps the same way).
func workingSet(usage, inactive int64) int64 {
	return max(usage-inactive, 0)
}
