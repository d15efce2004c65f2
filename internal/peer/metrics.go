package peer

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the peer protocol's Prometheus series, of both sides.
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
}

// NewMetrics returns unregistered metrics.
func NewMetrics() *Metrics {
	return &Metrics{
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
	}
}

// Collectors returns the metrics, for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Bytes, m.Requests, m.Fallbacks, m.FirstByte}
}

// Served counts one request served to a peer: its result and the blob
// bytes sent (ServerOptions.Served).
func (m *Metrics) Served(result string, bytes int64) {
	m.Requests.WithLabelValues("server", result).Inc()
	m.Bytes.WithLabelValues("out").Add(float64(bytes))
}
