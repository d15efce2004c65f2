package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/registry"
)

// live is what a configuration reload changes while the server runs.
type live struct {
	mu  sync.Mutex // serialises reloads
	cfg atomic.Pointer[config.Config]
	// v2 is the registry handler, built once; setLive puts a
	// configuration's live keys into force in it.
	v2      *registry.Handler
	setLive func(config.Config)
	load    func() (config.Config, error)
	level   *slog.LevelVar
}

// liveOptions are the registry handler's reloadable options for cfg.
func liveOptions(cfg config.Config) registry.Live {
	return registry.Live{
		DefaultRegistry:  cfg.DefaultUpstream,
		TagTTL:           cfg.TagTTL.D(),
		UpstreamTimeout:  2 * cfg.UpstreamTimeout.D(),
		MaxManifestBytes: int64(cfg.MaxManifestBytes),
	}
}

// maxManifestBytes is max_manifest_bytes in force: the registry handler's
// (so /v2/ and the peer API's), which the cluster's fetcher (manifests from
// peers) and admin prefetch read too, so that one cap applies whichever API
// asked first. A reload changes it for all of them (setLive).
func (s *Server) maxManifestBytes() int64 {
	if s.live.v2 == nil { // a Server not built by New (tests)
		return int64(s.current().MaxManifestBytes)
	}
	return s.live.v2.Live().MaxManifestBytes
}

// SetReloader gives config.reload its source: load must read the
// configuration as start-up did (file, env and the original flags) and
// validate it. Call before Run.
func (s *Server) SetReloader(load func() (config.Config, error)) { s.live.load = load }

// SetLogLevel lets config.reload change log.level through v, the level of
// the server's logger. Call before Run.
func (s *Server) SetLogLevel(v *slog.LevelVar) { s.live.level = v }

// current returns the configuration in force.
func (s *Server) current() config.Config {
	if c := s.live.cfg.Load(); c != nil {
		return *c
	}
	return s.cfg
}

// Reload re-reads the configuration and applies the keys that can change
// live (those config marks live). An invalid configuration is refused (the
// error names the key) and nothing changes. It returns the changed keys
// applied and those that need a restart, each sorted; until the restart the
// latter keep their old values.
func (s *Server) Reload(_ context.Context) (applied, restart []string, err error) {
	if s.live.load == nil {
		return nil, nil, errors.New("config.reload: the server was started without a configuration source")
	}
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	next, err := s.live.load()
	if err != nil {
		return nil, nil, err
	}
	if err := next.Validate(); err != nil {
		return nil, nil, err
	}
	old := s.current()
	for _, k := range config.Diff(old, next) {
		if s.canApply(k) {
			applied = append(applied, k)
		} else {
			restart = append(restart, k)
		}
	}
	eff := config.Merge(old, next, applied)
	if err := s.apply(eff, applied); err != nil {
		return nil, nil, err
	}
	s.live.cfg.Store(&eff)
	return applied, restart, nil
}

// effect is what putting a live key into force takes.
type effect int

const (
	effUpstreams  effect = iota // new upstream clients (Upstreams.Set)
	effHandler                  // the registry handler's live options (registry.Live)
	effStoreLimit               // Store.SetMaxBytes
	effLogLevel                 // the logger's LevelVar
	effUploadRate               // the peer upload cap (throttle.Limiter.Set)
)

// effects lists what applying key takes; none means it cannot change live.
// Every key config marks live has effects here (TestLiveKeysHaveEffects).
func effects(key string) []effect {
	switch key {
	case "upstreams", "upstream_retries":
		return []effect{effUpstreams}
	case "upstream_timeout":
		return []effect{effUpstreams, effHandler}
	case "default_upstream", "tag_ttl", "max_manifest_bytes":
		return []effect{effHandler}
	case "max_disk":
		return []effect{effStoreLimit}
	case "log.level":
		return []effect{effLogLevel}
	case "cluster.upload_rate":
		return []effect{effUploadRate}
	}
	return nil
}

// canApply reports whether a change of key can be put into force now.
func (s *Server) canApply(key string) bool {
	k, ok := config.LookupKey(key)
	if !ok || !k.Live || len(effects(key)) == 0 {
		return false
	}
	return key != "log.level" || s.live.level != nil // serve gives the level
}

// apply puts eff into force for the keys applied, each effect once.
func (s *Server) apply(eff config.Config, applied []string) error {
	need := map[effect]bool{}
	for _, k := range applied {
		for _, e := range effects(k) {
			need[e] = true
		}
	}
	if need[effUpstreams] {
		if err := s.Upstreams.Set(eff, s.log); err != nil {
			return err
		}
	}
	if need[effHandler] && s.live.setLive != nil {
		s.live.setLive(eff)
	}
	if need[effStoreLimit] {
		s.Store.SetMaxBytes(int64(eff.MaxDisk))
	}
	if need[effUploadRate] {
		s.upload.Set(int64(eff.Cluster.UploadRate))
	}
	if need[effLogLevel] {
		var l slog.Level
		if l.UnmarshalText([]byte(eff.Log.Level)) == nil {
			s.live.level.Set(l)
		}
	}
	return nil
}
