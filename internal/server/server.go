// Package server assembles a running berth: the store, the upstream clients,
// the coalescing fetcher, the registry handler and the health and metrics
// endpoints, and runs them until the context ends, then drains.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/singleflight"

	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/metrics"
	"github.com/berth-mirror/berth/internal/registry"
	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/sysinfo"
	"github.com/berth-mirror/berth/internal/throttle"
	"github.com/berth-mirror/berth/internal/upstream"
)

// Server is one berth instance.
type Server struct {
	cfg       config.Config
	log       *slog.Logger
	Store     *store.Store
	Fetcher   *fetch.Coalescer
	Metrics   *metrics.Metrics
	Upstreams *Upstreams
	handler   http.Handler
	ready     atomic.Bool
	started   time.Time
	version   string
	conns     *connGate    // client slots and the probe reserve (listener.go)
	live      live         // what config.reload swaps (reload.go)
	cluster   *clusterNode // nil without a cluster (cluster.go)
	// upload caps what the peer API sends (cluster.upload_rate, live).
	upload *throttle.Limiter
}

// Option configures New beyond the configuration file's keys.
type Option func(*options)

type options struct {
	version string
}

// WithVersion sets the version reported in the User-Agent sent upstream and
// by the admin status method (default "dev").
func WithVersion(v string) Option { return func(o *options) { o.version = v } }

// New opens the store and builds the handler; it does not listen yet.
func New(cfg config.Config, log *slog.Logger, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{version: "dev"}
	for _, opt := range opts {
		opt(&o)
	}
	m := metrics.New()
	m.Registry.MustRegister(sysinfo.NewCollector(sysinfo.Reader{}))
	st, err := store.Open(cfg.DataDir, store.Options{
		MaxBytes: int64(cfg.MaxDisk),
		Logger:   log.With("component", "store"),
		OnEvict:  func(store.Info) { m.Evictions.Inc() },
	})
	if err != nil {
		return nil, err
	}
	ups, err := NewUpstreams(cfg, log, "berth/"+o.version)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	fc := fetch.New(st, fetch.Options{
		MaxFetches:   cfg.MaxFetches,
		Timeout:      cfg.FetchTimeout.D(),
		Resumes:      cfg.UpstreamRetries,
		NoPieces:     cfg.PieceFetches == 0,
		PieceFetches: cfg.PieceFetches,
		Logger:       log.With("component", "fetch"),
		Observer:     metrics.FillObserver{M: m},
	})
	// One manifest coalescer shared by the /v2/ and peer APIs, so a manifest
	// is fetched upstream once per node whichever API asked.
	manifests := new(singleflight.Group)
	s := &Server{cfg: cfg, log: log, Store: st, Fetcher: fc, Metrics: m, Upstreams: ups, started: time.Now(),
		version: o.version, upload: throttle.New(int64(cfg.Cluster.UploadRate))}
	cl, err := newClusterNode(cfg, log, fc, m, s.maxManifestBytes)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	s.cluster = cl
	s.conns = newConnGate(cfg, log.With("component", "http"), func() { m.BadRequests.WithLabelValues(registry.CodeTooLarge).Inc() })
	// One registry handler for the life of the server, serving /v2/ and the
	// peer API: one gate, one manifest cap, one set of limits (the tags/list
	// slots); a reload swaps its live options (registry.Live).
	regLog := log.With("component", "registry")
	v2 := registry.New(registry.Options{
		Access:           accessOptions(cfg, m, log), // one gate for the /v2/ and peer APIs and prefetch
		Store:            st,
		Fetcher:          fc,
		Upstreams:        ups,
		Metrics:          m,
		DefaultRegistry:  cfg.DefaultUpstream,
		TagTTL:           cfg.TagTTL.D(),
		MaxManifestBytes: int64(cfg.MaxManifestBytes),
		UpstreamTimeout:  2 * cfg.UpstreamTimeout.D(),
		MaxHeaderBytes:   int(cfg.MaxHeaderBytes),
		Logger:           regLog,
		Source:           cl.Source(),
		PeerManifest:     cl.PeerManifest(),
		PeerHead:         cl.PeerHead(),
		Manifests:        manifests,
	})
	s.live.v2 = v2
	s.live.setLive = func(cfg config.Config) { v2.SetLive(liveOptions(cfg)) }
	cl.servePeersWith(v2, regLog, s.upload)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", s.readyz)
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{
		// A gzip writer costs ~1 MB per scrape once GC empties promhttp's
		// pool, for a ~10 KB payload: not worth it on a memory-bounded daemon.
		DisableCompression: true,
	}))
	// /v2/ bypasses ServeMux: it would answer a path with "..", "." or "//"
	// with a redirect to the cleaned path instead of the registry's OCI error.
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cluster.ServePeer(w, r) { // /peer/v1/
			return
		}
		if r.URL.Path == "/v2" || strings.HasPrefix(r.URL.Path, "/v2/") {
			v2.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
	m.Registry.MustRegister(storeCollector{st}, inflightCollector{fc}, connCollector{s.conns})
	return s, nil
}

// Handler is the server's HTTP handler (for tests).
func (s *Server) Handler() http.Handler { return s.handler }

// Config returns the configuration in force.
func (s *Server) Config() config.Config { return s.current() }

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if !s.ready.Load() {
		http.Error(w, "not ready\n", http.StatusServiceUnavailable)
		return
	}
	if reason := s.cluster.notReady(); reason != "" {
		http.Error(w, "not ready: "+reason+"\n", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// Run serves on ln until ctx ends, then stops accepting, lets responses in
// flight finish for up to shutdown_timeout, and closes the store.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	ln = s.conns.listen(ln)
	hs := &http.Server{
		Handler:           s.conns.handler(s.handler),
		ReadHeaderTimeout: 10 * time.Second,
		// No ReadTimeout: its deadline stays on the connection while the
		// handler runs, and net/http's background read then cancels the
		// request context of any download longer than it. Pull requests have
		// no body; ReadHeaderTimeout bounds slow clients on the way in and
		// per-write deadlines on the way out.
		IdleTimeout: 120 * time.Second,
		// The registry handler answers headers over max_header_bytes with an
		// OCI 431, and the connection gate answers past its cap before
		// net/http would (Go adds 4 KiB of slack to this backstop).
		MaxHeaderBytes: s.conns.headerCap,
		ConnState:      s.conns.connState,
		ConnContext:    s.conns.connContext,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:    func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	stopAdmin, err := s.startAdmin(ln.Addr().String())
	if err != nil {
		_ = ln.Close()
		return errors.Join(err, s.Close())
	}
	stopMetrics, err := s.startMetrics(ctx)
	if err != nil {
		return errors.Join(err, ln.Close(), stopAdmin(), s.Close())
	}
	if err := s.cluster.Start(ctx); err != nil {
		return errors.Join(err, ln.Close(), stopMetrics(), stopAdmin(), s.Close())
	}
	flushDone := make(chan struct{})
	go s.flushLoop(ctx, flushDone)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.ready.Store(true)
	s.log.Info("serving", "addr", ln.Addr().String(), "data_dir", s.cfg.DataDir,
		"default_upstream", s.cfg.DefaultUpstream, "upstreams", len(s.cfg.Upstreams))
	select {
	case err = <-errc:
	case <-ctx.Done():
		s.ready.Store(false)
		s.log.Info("shutting down: draining requests in flight", "timeout", s.cfg.ShutdownTimeout.String())
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout.D())
		// Leave first, and only then refuse fills: until peers hear that
		// this node is going, they still choose it as an owner, and a fill
		// refused meanwhile is a 503 and a fallback for them.
		if lerr := s.cluster.leave(sctx); lerr != nil {
			// Not a failed drain: the leave keeps being gossiped until
			// gossip stops, after the drain.
			s.log.Warn("leaving the cluster: not confirmed in time", "error", lerr)
		}
		// Fills run detached from requests: from now on no new one starts,
		// and the running ones share the drain's deadline with the
		// responses in flight (one shutdown_timeout in all, inside the
		// pod's grace period).
		s.log.Info("refusing new fills; draining the running ones")
		fills := make(chan struct{})
		go func() { s.drainFills(sctx); close(fills) }()
		// The peer listener serves until now: peers fetching from this
		// node finish like the clients of the registry listener.
		peers := make(chan error, 1)
		go func() { peers <- s.cluster.drainPeers(sctx) }()
		err = hs.Shutdown(sctx)
		err = errors.Join(err, <-peers)
		if err != nil {
			s.log.Warn("drain timed out; closing remaining connections", "error", err)
			_ = hs.Close()
		}
		if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		<-fills
		cancel()
	}
	<-flushDone
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	// Gossip stops last; a join in flight (bounded by memberlist's stream
	// timeout) gets the shutdown timeout.
	cctx, ccancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout.D())
	err = errors.Join(err, s.cluster.stop(cctx))
	ccancel()
	err = errors.Join(err, stopMetrics(), stopAdmin())
	// A no-op after a drain; after a failed Serve, the fills still get the
	// shutdown timeout before the store closes under them.
	dctx, dcancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout.D())
	s.drainFills(dctx)
	dcancel()
	return errors.Join(err, s.Close())
}

// drainFills stops new fills, lets the running ones finish until ctx ends,
// then cancels them and waits for their cleanup, so the store never closes
// under a commit.
func (s *Server) drainFills(ctx context.Context) {
	if err := s.Fetcher.Shutdown(ctx); err != nil {
		s.log.Warn("blob fills cancelled at shutdown", "error", err)
	}
}

// Close closes the store. Run calls it.
func (s *Server) Close() error {
	return s.Store.Close()
}

func (s *Server) flushLoop(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Store.Flush(); err != nil {
				s.log.Warn("writing access times", "error", err)
			}
		}
	}
}

// Upstreams is the set of registries berth may contact.
type Upstreams struct {
	mu        sync.RWMutex
	m         map[string]*upstream.Client
	prefixes  map[string]*upstream.Client // upstreams.NAME.prefix -> NAME's client
	userAgent string
}

// NewUpstreams builds a client for every configured and built-in registry;
// they send userAgent upstream.
func NewUpstreams(cfg config.Config, log *slog.Logger, userAgent string) (*Upstreams, error) {
	u := &Upstreams{m: map[string]*upstream.Client{}, userAgent: userAgent}
	return u, u.Set(cfg, log)
}

// Set replaces the clients from cfg, closing the idle connections of those
// it replaces.
func (u *Upstreams) Set(cfg config.Config, log *slog.Logger) error {
	m := make(map[string]*upstream.Client, len(cfg.Upstreams))
	prefixes := map[string]*upstream.Client{}
	base := upstream.NewTransport(cfg.UpstreamTimeout.D())
	for name, ep := range cfg.Upstreams {
		c, err := upstream.New(upstream.Endpoint{Name: name, URL: ep.URL, Username: ep.Username, Password: ep.Password},
			upstream.Options{
				Timeout:   cfg.UpstreamTimeout.D(),
				Retries:   cfg.UpstreamRetries,
				Transport: base,
				Logger:    log.With("component", "upstream"),
				UserAgent: u.userAgent,
			})
		if err != nil {
			return fmt.Errorf("config: upstreams.%s: %w", name, err)
		}
		m[name] = c
		if ep.Prefix != "" {
			prefixes[ep.Prefix] = c
		}
	}
	u.mu.Lock()
	old := u.m
	u.m, u.prefixes = m, prefixes
	u.mu.Unlock()
	// The replaced clients' pools (shared by every client derived from
	// them) are not used for new requests: close what is idle now; what is
	// in flight finishes and is closed after the pool's IdleConnTimeout.
	for _, c := range old {
		c.CloseIdleConnections()
	}
	return nil
}

// Lookup implements registry.Upstreams: the client of a registry name, or of
// the registry whose prefix name is (its Name then differs from name).
func (u *Upstreams) Lookup(name string) (*upstream.Client, bool) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	if c, ok := u.m[name]; ok {
		return c, true
	}
	c, ok := u.prefixes[name]
	return c, ok
}

// Names lists the registry names, sorted.
func (u *Upstreams) Names() []string {
	u.mu.RLock()
	defer u.mu.RUnlock()
	names := make([]string, 0, len(u.m))
	for n := range u.m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
