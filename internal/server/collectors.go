package server

import (
	"io"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/store"
)

var (
	storeBytesDesc   = prometheus.NewDesc("berth_store_bytes", "Bytes of content in the store.", nil, nil)
	storeObjectsDesc = prometheus.NewDesc("berth_store_objects", "Blobs and manifests in the store.", nil, nil)
	fillsDesc        = prometheus.NewDesc("berth_fills_running", "Digests being fetched now (coalesced).", nil, nil)
)

// storeCollector reads the store's usage at scrape time.
type storeCollector struct{ st *store.Store }

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- storeBytesDesc
	ch <- storeObjectsDesc
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	b, n := c.st.Usage()
	ch <- prometheus.MustNewConstMetric(storeBytesDesc, prometheus.GaugeValue, float64(b))
	ch <- prometheus.MustNewConstMetric(storeObjectsDesc, prometheus.GaugeValue, float64(n))
}

type inflightCollector struct{ fc *fetch.Coalescer }

func (c inflightCollector) Describe(ch chan<- *prometheus.Desc) { ch <- fillsDesc }

func (c inflightCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(fillsDesc, prometheus.GaugeValue, float64(c.fc.InFlight()))
}

// limitListener caps concurrent connections: Accept waits for a free slot,
// so excess clients queue in the kernel's backlog instead of costing memory.
func limitListener(l net.Listener, n int) net.Listener {
	return &limited{Listener: l, sem: make(chan struct{}, n)}
}

type limited struct {
	net.Listener
	sem chan struct{}
}

func (l *limited) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// ReadFrom keeps sendfile: net/http hands files to the connection's ReadFrom.
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

type writerOnly struct{ io.Writer }
