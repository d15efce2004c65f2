package cluster

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the cluster's Prometheus series.
type Metrics struct {
	// Bytes counts blob bytes received from peers (direction "in") and
	// served to them ("out").
	Bytes *prometheus.CounterVec
	// Requests counts peer requests by side (client: this node asked;
	// server: a peer asked this node) and result.
	Requests *prometheus.CounterVec
	// Fallbacks counts moves to the next source, by reason.
	Fallbacks *prometheus.CounterVec
	// FirstByte is the time from asking a peer to its first body byte.
	FirstByte prometheus.Histogram
	// NameConflicts counts claims of one member name from two addresses,
	// by this node's role: lost (its name is held by a node that started
	// first), kept, or observed (between two other nodes).
	NameConflicts *prometheus.CounterVec
}

// NewMetrics returns unregistered metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_peer_bytes_total", Help: "Blob bytes received from (in) and served to (out) cluster peers.",
		}, []string{"direction"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_peer_requests_total", Help: "Peer API requests by side (client, server) and result.",
		}, []string{"side", "result"}),
		Fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_peer_fallbacks_total", Help: "Moves from a peer to the next source, by reason.",
		}, []string{"reason"}),
		FirstByte: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "berth_peer_first_byte_seconds",
			Help:    "Time from a request to a peer to its first body byte.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
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
	return []prometheus.Collector{m.Bytes, m.Requests, m.Fallbacks, m.FirstByte, m.NameConflicts}
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
