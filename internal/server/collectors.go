package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/store"
)

var (
	storeBytesDesc   = prometheus.NewDesc("berth_store_bytes", "Bytes of content in the store.", nil, nil)
	storeObjectsDesc = prometheus.NewDesc("berth_store_objects", "Blobs, manifests and pieces in the store.", nil, nil)
	piecesHeldDesc   = prometheus.NewDesc("berth_pieces_held", "Pieces of blobs this node keeps as their cluster owner (included in berth_store_objects).", nil, nil)
	fillsDesc        = prometheus.NewDesc("berth_fills_running", "Digests being fetched now (coalesced).", nil, nil)
	connsDesc        = prometheus.NewDesc("berth_connections_open",
		"Client connections open, by slot: client (up to max_connections) or reserve (probes and /metrics only).", []string{"slot"}, nil)
	reserveRefusedDesc = prometheus.NewDesc("berth_reserve_refused_total",
		"Requests other than probes and /metrics refused with 503 on a connection accepted past max_connections.", nil, nil)
)

// storeCollector reads the store's usage at scrape time.
type storeCollector struct{ st *store.Store }

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- storeBytesDesc
	ch <- storeObjectsDesc
	ch <- piecesHeldDesc
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	b, n := c.st.Usage()
	ch <- prometheus.MustNewConstMetric(storeBytesDesc, prometheus.GaugeValue, float64(b))
	ch <- prometheus.MustNewConstMetric(storeObjectsDesc, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(piecesHeldDesc, prometheus.GaugeValue, float64(c.st.Pieces()))
}

type inflightCollector struct{ fc *fetch.Coalescer }

func (c inflightCollector) Describe(ch chan<- *prometheus.Desc) { ch <- fillsDesc }

func (c inflightCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(fillsDesc, prometheus.GaugeValue, float64(c.fc.InFlight()))
}

// connCollector reads the connection gate's counters at scrape time.
type connCollector struct{ g *connGate }

func (c connCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- connsDesc
	ch <- reserveRefusedDesc
}

func (c connCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range []slot{slotClient, slotReserve} {
		ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, float64(c.g.open[s].Load()), s.String())
	}
	ch <- prometheus.MustNewConstMetric(reserveRefusedDesc, prometheus.CounterValue, float64(c.g.reserveRefuse.Load()))
}
