package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"github.com/berth-mirror/berth/internal/config"
)

// metricsConns bounds the metrics listener's connections. It faces the node
// network (in Kubernetes the node IP), not just containerd on loopback: a
// few scrapers are expected, and a flood must not cost more than a few
// connections' worth of memory.
const metricsConns = 8

// startMetrics serves /metrics, and nothing else, on metrics_listen when it is
// set. The registry stays on its own (loopback) listener: what Prometheus can
// reach from the network is the counters, never the cache. The listener is
// opened before Run reports ready, so a bad or taken address is a start-up
// error naming the key. The returned stop function closes the listener and
// waits for scrapes in flight (they are short) for up to a few seconds.
func (s *Server) startMetrics(ctx context.Context) (stop func() error, err error) {
	addr := s.cfg.MetricsListen
	if addr == "" {
		return func() error { return nil }, nil
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, errors.Join(&config.Error{Key: "metrics_listen", Value: addr, Expected: "a free HOST:PORT this node can bind"}, err)
	}
	mux := http.NewServeMux()
	// Exactly /metrics: "/metrics/" or "/" would answer other paths too.
	mux.Handle("GET /metrics", s.metricsHandler())
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(netutil.LimitListener(ln, metricsConns)) }()
	s.log.Info("serving metrics", "addr", ln.Addr().String())
	return func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := hs.Shutdown(sctx)
		if err != nil {
			_ = hs.Close()
		}
		if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return err
	}, nil
}

// metricsHandler renders the server's registry as Prometheus text.
func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.Metrics.Registry, promhttp.HandlerOpts{
		// As on the main listener: a gzip writer costs ~1 MB per scrape once
		// GC empties promhttp's pool, for a ~10 KB payload.
		DisableCompression: true,
		ErrorLog:           slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	})
}
