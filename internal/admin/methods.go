package admin

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/sysinfo"
)

// Deps are what the berth methods act on; internal/server builds them.
// Store, Registry and Config are required.
type Deps struct {
	// Store is the content store (cache.list, cache.purge, status).
	Store *store.Store
	// Registry serves /v2/: prefetch sends it in-process GET requests, so
	// content arrives through the normal routed, coalesced, verified path.
	Registry http.Handler
	// Config returns the configuration in force.
	Config func() config.Config
	// MaxManifestBytes returns the cap on a manifest in force, the
	// registry's (nil: Config's max_manifest_bytes).
	MaxManifestBytes func() int64
	// Reload re-reads the configuration and applies what can change live,
	// returning the keys applied and those needing a restart (nil: config.reload
	// is refused).
	Reload func(ctx context.Context) (applied, restartRequired []string, err error)
	// Peers lists the cluster members (nil: no cluster, this node alone).
	Peers func() []Member
	// InFlight returns the number of fills running (nil: 0).
	InFlight func() int
	// Listen is the registry's listen address as bound.
	Listen string
	// Version and Started are reported by status.
	Version string
	Started time.Time
	// Logger receives job events (default: discard).
	Logger *slog.Logger
}

// Service implements the berth methods. Close it to stop prefetch jobs.
type Service struct {
	d    Deps
	log  *slog.Logger
	jobs *jobs
}

// NewService returns the methods over d.
func NewService(d Deps) *Service {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.InFlight == nil {
		d.InFlight = func() int { return 0 }
	}
	return &Service{d: d, log: d.Logger, jobs: newJobs()}
}

// Register adds every method to m.
func (s *Service) Register(m *Mux) {
	Handle(m, "status", s.status)
	Handle(m, "cache.list", s.cacheList)
	Handle(m, "cache.purge", s.cachePurge)
	Handle(m, "images.prefetch", s.prefetch)
	Handle(m, "jobs.get", s.jobGet)
	Handle(m, "peers.list", s.peers)
	Handle(m, "upstreams.list", s.upstreams)
	Handle(m, "config.get", s.configGet)
	Handle(m, "config.reload", s.configReload)
}

// Close cancels running prefetch jobs and waits for them.
func (s *Service) Close() { s.jobs.close() }

// none is the params of methods that take none.
type none struct{}

// Status is the result of status.
type Status struct {
	Version         string      `json:"version"`
	Uptime          string      `json:"uptime"`
	UptimeSeconds   float64     `json:"uptime_seconds"`
	Listen          string      `json:"listen"`
	Store           StoreStatus `json:"store"`
	FetchesInFlight int         `json:"fetches_in_flight"`
	Upstreams       int         `json:"upstreams"`
	// GoMemLimit is the Go runtime's soft memory limit in bytes; 0 means none.
	GoMemLimit int64 `json:"gomemlimit"`
	// RSS is the resident set size in bytes (0 if it could not be read).
	RSS         int64 `json:"rss_bytes"`
	JobsRunning int   `json:"jobs_running"`
}

// StoreStatus is the store part of [Status].
type StoreStatus struct {
	Bytes   int64 `json:"bytes"`
	Objects int   `json:"objects"`
	// MaxBytes is max_disk; 0 means unbounded.
	MaxBytes int64 `json:"max_bytes"`
}

func (s *Service) status(context.Context, none) (Status, error) {
	cfg := s.d.Config()
	b, n := s.d.Store.Usage()
	up := time.Since(s.d.Started)
	lim := debug.SetMemoryLimit(-1)
	if lim == math.MaxInt64 {
		lim = 0
	}
	rss, _ := sysinfo.Reader{}.RSS()
	return Status{
		Version:         s.d.Version,
		Uptime:          up.Round(time.Second).String(),
		UptimeSeconds:   up.Seconds(),
		Listen:          s.d.Listen,
		Store:           StoreStatus{Bytes: b, Objects: n, MaxBytes: int64(cfg.MaxDisk)},
		FetchesInFlight: s.d.InFlight(),
		Upstreams:       len(cfg.Upstreams),
		GoMemLimit:      lim,
		RSS:             rss,
		JobsRunning:     s.jobs.running(),
	}, nil
}

// Upstream is one entry of upstreams.list.
type Upstream struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	// Auth is true when credentials are configured (never returned).
	Auth bool `json:"auth"`
	// Default is true for the default upstream.
	Default bool `json:"default"`
}

func (s *Service) upstreams(context.Context, none) ([]Upstream, error) {
	cfg := s.d.Config()
	out := make([]Upstream, 0, len(cfg.Upstreams))
	for name, u := range cfg.Upstreams {
		out = append(out, Upstream{Name: name, URL: u.URL, Auth: u.Username != "" || u.Password != "",
			Default: name == cfg.DefaultUpstream})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// configGet returns the configuration in force with secrets redacted, keyed
// as in the YAML file.
func (s *Service) configGet(context.Context, none) (map[string]any, error) {
	return s.d.Config().Map(), nil
}

// ReloadResult is the result of config.reload.
type ReloadResult struct {
	// Applied lists the keys whose new values are now in force.
	Applied []string `json:"applied"`
	// RestartRequired lists changed keys that take effect only after a restart;
	// until then their old values stay in force.
	RestartRequired []string `json:"restart_required"`
}

func (s *Service) configReload(ctx context.Context, _ none) (ReloadResult, error) {
	if s.d.Reload == nil {
		return ReloadResult{}, errors.New("config.reload: this server has no configuration source to re-read")
	}
	applied, restart, err := s.d.Reload(ctx)
	if err != nil {
		return ReloadResult{}, err
	}
	if applied == nil {
		applied = []string{}
	}
	if restart == nil {
		restart = []string{}
	}
	s.log.Info("configuration reloaded", "applied", applied, "restart_required", restart)
	return ReloadResult{Applied: applied, RestartRequired: restart}, nil
}

// Peers is the result of peers.list.
type Peers struct {
	Members []Member `json:"members"`
	Note    string   `json:"note,omitempty"`
}

// Member is one node of the cluster.
type Member struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	URL     string `json:"url"`
	State   string `json:"state"`
	// Self marks this node; ServedBytes is what the member has sent it.
	Self        bool  `json:"self,omitempty"`
	ServedBytes int64 `json:"served_bytes"`
	// Conflict describes a recent claim of the member's name from another
	// address; on this node's row with state "conflict", it lost the name.
	Conflict string `json:"conflict,omitempty"`
}

func (s *Service) peers(context.Context, none) (Peers, error) {
	if s.d.Peers != nil {
		if ms := s.d.Peers(); ms != nil {
			return Peers{Members: ms}, nil
		}
	}
	host, _ := os.Hostname()
	return Peers{
		Members: []Member{{Name: host, Address: s.d.Listen, URL: "http://" + advertised(s.d.Listen, host), State: "alive"}},
		Note:    "no cluster configured (cluster.peer_bind): this node is the only member",
	}, nil
}

// advertised turns a listen address into one others could reach: an
// unspecified host becomes the hostname.
func advertised(listen, hostname string) string {
	h, p, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
		if hostname == "" {
			hostname = "localhost"
		}
		h = hostname
	}
	return net.JoinHostPort(strings.TrimSpace(h), p)
}
