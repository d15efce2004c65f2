// Package metrics defines berth's Prometheus metrics on a registry of its own
// (no global state), so several servers can live in one test process.
package metrics

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/upstream"
)

// Metrics holds every collector berth exports.
type Metrics struct {
	Registry *prometheus.Registry

	Requests        *prometheus.CounterVec   // route, method, code
	RequestDuration *prometheus.HistogramVec // route
	Cache           *prometheus.CounterVec   // kind (blob, manifest), result (hit, miss, coalesced)
	ServedBytes     *prometheus.CounterVec   // source (cache, fill)
	UpstreamBytes   *prometheus.CounterVec   // upstream
	UpstreamErrors  *prometheus.CounterVec   // upstream, reason
	FetchesInFlight prometheus.Gauge
	FetchDuration   *prometheus.HistogramVec // upstream
	VerifyFailures  prometheus.Counter
	StaleTags       *prometheus.CounterVec // upstream
	Evictions       prometheus.Counter
	BadRequests     *prometheus.CounterVec // code
	FetchRejected   *prometheus.CounterVec // reason (overloaded, shutdown)
	PieceFetches    *prometheus.CounterVec // source (upstream, peer), result (ok, error, no_range)
	PieceBytes      prometheus.Gauge       // bytes of pieces being fetched now
}

// New creates the metrics and registers them, with the Go and process collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_http_requests_total", Help: "Registry API requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "berth_http_request_duration_seconds", Help: "Time to serve a registry API request.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"route"}),
		Cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_cache_requests_total", Help: "Content lookups by kind and result (hit, miss, coalesced, stale).",
		}, []string{"kind", "result"}),
		ServedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_served_bytes_total", Help: "Blob bytes sent to clients, from the cache or from a fill in progress.",
		}, []string{"source"}),
		UpstreamBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_upstream_bytes_total", Help: "Blob bytes received from upstream registries.",
		}, []string{"upstream"}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_upstream_errors_total", Help: "Failed upstream requests and fetches.",
		}, []string{"upstream", "reason"}),
		FetchesInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "berth_fetches_in_flight", Help: "Blob fills running now.",
		}),
		FetchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "berth_fetch_duration_seconds", Help: "Time to fetch, verify and commit one blob.",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 10),
		}, []string{"upstream"}),
		VerifyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_verify_failures_total", Help: "Fetched content that did not match its digest and was discarded.",
		}),
		StaleTags: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_tag_stale_served_total", Help: "Tags served from the last known digest because the upstream could not be reached.",
		}, []string{"upstream"}),
		Evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_store_evictions_total", Help: "Objects evicted to stay under max_disk.",
		}),
		BadRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_rejected_requests_total", Help: "Requests rejected as invalid, by OCI error code.",
		}, []string{"code"}),
		FetchRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_fetch_rejected_total", Help: "Blob requests refused with 503 because no fill could start (too many running and queued, or shutting down).",
		}, []string{"reason"}),
		PieceFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_piece_fetches_total", Help: "Ranged fetches of one piece of a blob, by source (upstream, peer) and result (ok, error, no_range).",
		}, []string{"source", "result"}),
		PieceBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "berth_piece_bytes_in_flight", Help: "Bytes of blob pieces being fetched now (what is left of each piece in flight).",
		}),
	}
	r.MustRegister(m.Requests, m.RequestDuration, m.Cache, m.ServedBytes, m.UpstreamBytes,
		m.UpstreamErrors, m.FetchesInFlight, m.FetchDuration, m.VerifyFailures, m.StaleTags,
		m.Evictions, m.BadRequests, m.FetchRejected, m.PieceFetches, m.PieceBytes,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// FillObserver adapts Metrics to fetch.Observer.
type FillObserver struct{ M *Metrics }

// FillStarted counts a fill in flight.
func (o FillObserver) FillStarted(fetch.Request) { o.M.FetchesInFlight.Inc() }

// FillDone records a fill's bytes, duration and outcome.
func (o FillObserver) FillDone(req fetch.Request, n int64, d time.Duration, err error) {
	o.M.FetchesInFlight.Dec()
	o.M.UpstreamBytes.WithLabelValues(req.Registry).Add(float64(n))
	if err != nil {
		// A definite answer (404, 401, 403) is no failure of the upstream.
		if upstream.Classify(err).Definite() {
			return
		}
		o.M.UpstreamErrors.WithLabelValues(req.Registry, "fetch").Inc()
		if errors.Is(err, fetch.ErrVerify) {
			o.M.VerifyFailures.Inc()
		}
		return
	}
	o.M.FetchDuration.WithLabelValues(req.Registry).Observe(d.Seconds())
}

// PieceStarted counts a piece fetch's bytes in flight.
func (o FillObserver) PieceStarted(_ fetch.Request, bytes int64) { o.M.PieceBytes.Add(float64(bytes)) }

// PieceDone records a piece fetch's outcome (one per attempt).
func (o FillObserver) PieceDone(_ fetch.Request, peer bool, bytes int64, err error) {
	o.M.PieceBytes.Sub(float64(bytes))
	source, result := "upstream", "ok"
	if peer {
		source = "peer"
	}
	switch {
	case errors.Is(err, fetch.ErrNoRange):
		result = "no_range"
	case err != nil:
		result = "error"
	}
	o.M.PieceFetches.WithLabelValues(source, result).Inc()
}
