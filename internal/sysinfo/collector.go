package sysinfo

import "github.com/prometheus/client_golang/prometheus"

// collector reads the cgroup figures at scrape time.
type collector struct {
	r                                  Reader
	workingSet, limit, usage, cpuQuota *prometheus.Desc
}

// NewCollector returns a prometheus.Collector exporting, read at scrape time:
// berth_memory_working_set_bytes, berth_memory_limit_bytes (0 if none),
// berth_memory_usage_bytes and berth_cpu_quota_cores (0 if none), all gauges.
// A figure that cannot be read is left out of that scrape.
func NewCollector(r Reader) prometheus.Collector {
	return &collector{
		r: r,
		workingSet: prometheus.NewDesc("berth_memory_working_set_bytes",
			"Memory working set of berth's cgroup as the kubelet counts it: usage minus inactive file cache.", nil, nil),
		limit: prometheus.NewDesc("berth_memory_limit_bytes",
			"Memory limit of berth's cgroup; 0 means none.", nil, nil),
		usage: prometheus.NewDesc("berth_memory_usage_bytes",
			"Memory charged to berth's cgroup, page cache included.", nil, nil),
		cpuQuota: prometheus.NewDesc("berth_cpu_quota_cores",
			"CPU quota of berth's cgroup in cores; 0 means none.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.workingSet
	ch <- c.limit
	ch <- c.usage
	ch <- c.cpuQuota
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if l, err := c.r.Limits(); err == nil {
		ch <- gauge(c.limit, float64(l.MemoryLimit))
		ch <- gauge(c.cpuQuota, l.CPUQuota)
	}
	if n, err := c.r.WorkingSet(); err == nil {
		ch <- gauge(c.workingSet, float64(n))
	}
	if n, err := c.r.Usage(); err == nil {
		ch <- gauge(c.usage, float64(n))
	}
}

func gauge(d *prometheus.Desc, v float64) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
}
