package sysinfo

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	cpuHelp = "# HELP berth_cpu_quota_cores CPU quota of berth's cgroup in cores; 0 means none.\n" +
		"# TYPE berth_cpu_quota_cores gauge\n"
	limitHelp = "# HELP berth_memory_limit_bytes Memory limit of berth's cgroup; 0 means none.\n" +
		"# TYPE berth_memory_limit_bytes gauge\n"
	usageHelp = "# HELP berth_memory_usage_bytes Memory charged to berth's cgroup, page cache included.\n" +
		"# TYPE berth_memory_usage_bytes gauge\n"
	wsHelp = "# HELP berth_memory_working_set_bytes Memory working set of berth's cgroup as the kubelet counts it: usage minus inactive file cache.\n" +
		"# TYPE berth_memory_working_set_bytes gauge\n"
)

func TestCollector(t *testing.T) {
	tests := []struct {
		name      string
		root      string
		wantCount int
		want      string // the whole exposition
	}{
		{name: "v2 limited", root: "v2-limited", wantCount: 4, want: cpuHelp + "berth_cpu_quota_cores 2.5\n" +
			limitHelp + "berth_memory_limit_bytes 1.073741824e+09\n" +
			usageHelp + "berth_memory_usage_bytes 6.291456e+08\n" +
			wsHelp + "berth_memory_working_set_bytes 4.194304e+08\n"},
		{name: "v1 unlimited", root: "v1-unlimited", wantCount: 4, want: cpuHelp + "berth_cpu_quota_cores 0\n" +
			limitHelp + "berth_memory_limit_bytes 0\n" +
			usageHelp + "berth_memory_usage_bytes 7.51616e+06\n" +
			wsHelp + "berth_memory_working_set_bytes 7.499776e+06\n"},
		{name: "no cgroup skips usage", root: "missing", wantCount: 2, want: cpuHelp + "berth_cpu_quota_cores 0\n" +
			limitHelp + "berth_memory_limit_bytes 0\n"},
		{name: "unreadable limits and stat are skipped", root: "malformed", wantCount: 1,
			want: usageHelp + "berth_memory_usage_bytes 4096\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCollector(fixture(tt.root))
			if n := testutil.CollectAndCount(c); n != tt.wantCount {
				t.Errorf("CollectAndCount = %d, want %d", n, tt.wantCount)
			}
			if err := testutil.CollectAndCompare(c, strings.NewReader(tt.want)); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestCollectorLint(t *testing.T) {
	problems, err := testutil.CollectAndLint(NewCollector(fixture("v2-limited")))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}
