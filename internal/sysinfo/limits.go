package sysinfo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// unlimitedV1 is the smallest v1 memory.limit_in_bytes taken as "no limit":
// the kernel reports its page counter maximum (9223372036854771712 with 4 KiB
// pages), rounded down to a page.
const unlimitedV1 = 1 << 62

// v1CPUMounts are the directories a v1 cpu controller may be mounted at.
var v1CPUMounts = []string{"cpu,cpuacct", "cpuacct,cpu", "cpu"}

// Limits reads the memory limit and CPU quota of the process's cgroup. When no
// memory controller is found, Limits returns Version 0 and no error; files that
// exist but cannot be read or parsed are errors.
func (r Reader) Limits() (Limits, error) {
	m, err := r.membership()
	if err != nil {
		return Limits{}, fmt.Errorf("sysinfo: limits: %w", err)
	}
	c := r.memCgroup(m)
	l := Limits{Version: c.version}
	if c.version != 0 {
		if l.MemoryLimit, err = c.limit(); err != nil {
			return Limits{}, fmt.Errorf("sysinfo: memory limit: %w", err)
		}
	}
	if l.CPUQuota, err = r.cpuQuota(m); err != nil {
		return Limits{}, fmt.Errorf("sysinfo: cpu quota: %w", err)
	}
	return l, nil
}

// limit reads the memory limit in bytes, 0 meaning none. A v2 cgroup without
// memory.max (the root cgroup) has no limit.
func (c memCgroup) limit() (int64, error) {
	path := filepath.Join(c.dir, c.files().limit)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && c.version == 2 {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	if n >= unlimitedV1 {
		return 0, nil
	}
	return int64(n), nil
}

// cpuQuota reads the CFS quota in cores from the v1 cpu controller, else from
// v2 cpu.max. No controller, or no quota, is 0.
func (r Reader) cpuQuota(m membership) (float64, error) {
	for _, name := range v1CPUMounts {
		dir := resolve(r.path(cgroupMount, name), m.v1["cpu"])
		quota, err := readInt(filepath.Join(dir, "cpu.cfs_quota_us"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		period, err := readInt(filepath.Join(dir, "cpu.cfs_period_us"))
		if err != nil {
			return 0, err
		}
		return cores(quota, period), nil
	}
	for _, mount := range r.v2Mounts() {
		data, err := os.ReadFile(filepath.Join(resolve(mount, m.v2), "cpu.max"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return parseCPUMax(data)
	}
	return 0, nil
}

// parseCPUMax parses v2 cpu.max: "$MAX $PERIOD", where $MAX may be "max" and
// $PERIOD defaults to 100000.
func parseCPUMax(data []byte) (float64, error) {
	fields := strings.Fields(string(data))
	if len(fields) == 0 || len(fields) > 2 {
		return 0, fmt.Errorf("parse cpu.max %q: want \"$MAX $PERIOD\"", data)
	}
	if fields[0] == "max" {
		return 0, nil
	}
	quota, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse cpu.max: %w", err)
	}
	period := int64(100000)
	if len(fields) == 2 {
		if period, err = strconv.ParseInt(fields[1], 10, 64); err != nil {
			return 0, fmt.Errorf("parse cpu.max: %w", err)
		}
	}
	return cores(quota, period), nil
}

// cores turns a quota and period into cores; a non-positive quota or period
// means no quota.
func cores(quota, period int64) float64 {
	if quota <= 0 || period <= 0 {
		return 0
	}
	return float64(quota) / float64(period)
}
