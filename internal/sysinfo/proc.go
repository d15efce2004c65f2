package sysinfo

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// RSS returns the process's resident set size in bytes (VmRSS in
// /proc/<pid>/status).
func (r Reader) RSS() (int64, error) {
	return r.statusBytes("VmRSS")
}

// PeakRSS returns the process's peak resident set size in bytes, its
// high-water mark (VmHWM in /proc/<pid>/status).
func (r Reader) PeakRSS() (int64, error) {
	return r.statusBytes("VmHWM")
}

func (r Reader) statusBytes(field string) (int64, error) {
	data, err := os.ReadFile(filepath.Join(r.procDir(), "status"))
	if err != nil {
		return 0, fmt.Errorf("sysinfo: %s: %w", field, err)
	}
	n, err := parseStatusKB(data, field)
	if err != nil {
		return 0, fmt.Errorf("sysinfo: %s: %w", field, err)
	}
	return n, nil
}

// parseStatusKB finds "field:   N kB" in a /proc/<pid>/status and returns N
// KiB in bytes. Kernel threads have no Vm* fields: that is an error.
func parseStatusKB(data []byte, field string) (int64, error) {
	for line := range strings.Lines(string(data)) {
		name, value, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		num, unit, _ := strings.Cut(strings.TrimSpace(value), " ")
		if unit != "kB" {
			return 0, fmt.Errorf("unit %q, want kB", unit)
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse: %w", err)
		}
		return n * 1024, nil
	}
	return 0, fmt.Errorf("no %s field in status", field)
}
