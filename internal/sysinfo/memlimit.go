package sysinfo

import (
	"log/slog"
	"os"
	"runtime/debug"
)

// Sources of a GOMEMLIMIT decision, as MemLimit and Apply report them.
const (
	// SourceEnv means the GOMEMLIMIT environment variable is set and wins.
	SourceEnv = "env"
	// SourceCgroup means the limit was derived from the cgroup memory limit.
	SourceCgroup = "cgroup"
	// SourceNone means there is neither: the Go runtime's default applies.
	SourceNone = "none"
)

// MemLimit decides GOMEMLIMIT. If the GOMEMLIMIT environment variable is set
// (and not empty), it returns (0, SourceEnv): leave the runtime's setting
// alone. If the cgroup has a memory limit, it returns 90% of it and
// SourceCgroup, leaving headroom for memory the Go runtime does not manage.
// Otherwise it returns (0, SourceNone). A nil getenv means os.LookupEnv.
func MemLimit(l Limits, getenv func(string) (string, bool)) (limit int64, source string) {
	if getenv == nil {
		getenv = os.LookupEnv
	}
	if v, ok := getenv("GOMEMLIMIT"); ok && v != "" {
		return 0, SourceEnv
	}
	if l.MemoryLimit > 0 {
		return l.MemoryLimit - l.MemoryLimit/10, SourceCgroup
	}
	return 0, SourceNone
}

// Apply reads r's limits and calls debug.SetMemoryLimit when MemLimit returns
// SourceCgroup. It returns the decision and the limits for the startup log.
// When the limits cannot be read it changes nothing and returns the error,
// with source SourceEnv or SourceNone.
func Apply(r Reader, getenv func(string) (string, bool)) (limit int64, source string, l Limits, err error) {
	l, err = r.Limits()
	if err != nil {
		l = Limits{}
	}
	limit, source = MemLimit(l, getenv)
	if source == SourceCgroup {
		debug.SetMemoryLimit(limit)
	}
	return limit, source, l, err
}

// Describe returns slog attributes of l for the startup log line:
// memory_limit (bytes, 0 = none), cpu_quota (cores, 0 = none) and
// cgroup_version (not "version": the start-up line has berth's own).
func Describe(l Limits) []any {
	return []any{
		slog.Int64("memory_limit", l.MemoryLimit),
		slog.Float64("cpu_quota", l.CPUQuota),
		slog.Int("cgroup_version", l.Version),
	}
}
