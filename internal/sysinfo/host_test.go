package sysinfo

import (
	"runtime"
	"testing"
)

// TestHost reads the real machine: no errors and sane values. It asserts no
// particular cgroup version, so it passes on v1 (this dev machine), v2 and
// hosts without a memory controller alike.
func TestHost(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("cgroups and /proc are Linux only")
	}
	r := Reader{Root: "/"}
	l, err := r.Limits()
	if err != nil {
		t.Fatalf("Limits: %v", err)
	}
	t.Logf("limits: %+v", l)
	if l.Version < 0 || l.Version > 2 || l.MemoryLimit < 0 || l.CPUQuota < 0 {
		t.Errorf("Limits = %+v, out of range", l)
	}
	if l.Version != 0 {
		usage, err := r.Usage()
		if err != nil || usage <= 0 {
			t.Errorf("Usage = %d, %v; want > 0", usage, err)
		}
		ws, err := r.WorkingSet()
		if err != nil || ws < 0 {
			t.Errorf("WorkingSet = %d, %v; want >= 0", ws, err)
		}
		t.Logf("usage %d, working set %d", usage, ws)
	}
	rss, err := r.RSS()
	if err != nil || rss <= 0 {
		t.Errorf("RSS = %d, %v; want > 0", rss, err)
	}
	peak, err := r.PeakRSS()
	if err != nil || peak <= 0 {
		t.Errorf("PeakRSS = %d, %v; want > 0", peak, err)
	}
	t.Logf("rss %d, peak %d", rss, peak)
}
