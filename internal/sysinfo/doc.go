// Package sysinfo reads the resource limits and memory use that berth runs
// under: cgroup v1 and v2 memory and CPU limits, the working set as the kubelet
// counts it, and the process's resident set. It derives GOMEMLIMIT from the
// cgroup limit and exports the figures as Prometheus gauges.
//
// Everything is read from files below a root directory (Reader.Root), so tests
// point it at fixture trees under testdata/. cgroup hierarchies are expected at
// their usual mount points: v1 controllers at /sys/fs/cgroup/<controller>, v2
// at /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid).
package sysinfo
