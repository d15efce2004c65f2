package cluster

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the cluster's Prometheus series (the peer requests' are the
// peer package's).
type Metrics struct {
	// NameConflicts counts claims of one member name from two addresses,
	// by this node's role: lost (its name is held by a node that started
	// first), kept, or observed (between two other nodes).
	NameConflicts *prometheus.CounterVec
}

// NewMetrics returns unregistered metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		NameConflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_cluster_name_conflicts_total",
			Help: "Claims of one member name from two addresses, by this node's role (lost, kept, observed).",
		}, []string{"role"}),
	}
	// Every role from 0, so that increase() sees the first conflict.
	for _, role := range []string{RoleLost, RoleKept, RoleObserved} {
		m.NameConflicts.WithLabelValues(role)
	}
	return m
}

// Collectors returns the metrics, for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.NameConflicts}
}

// MembersCollector is a berth_cluster_members{state} gauge over members
// (which may return nil while the cluster is not running).
func MembersCollector(members func() []Member) prometheus.Collector {
	return membersCollector{members}
}

var membersDesc = prometheus.NewDesc("berth_cluster_members", "Cluster members known to this node, by state (this node included).", []string{"state"}, nil)

type membersCollector struct{ members func() []Member }

func (membersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- membersDesc }

func (mc membersCollector) Collect(ch chan<- prometheus.Metric) {
	n := map[string]int{StateAlive: 0, StateDead: 0, StateLeft: 0}
	for _, m := range mc.members() {
		n[m.State]++
	}
	for state, v := range n {
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(v), state)
	}
}
