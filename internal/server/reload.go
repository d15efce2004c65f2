package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"

	"go.yaml.in/yaml/v3"

	"github.com/berth-mirror/berth/internal/config"
)

// liveKeys are the configuration keys config.reload applies without a
// restart. Every other key that changes is reported as restart_required and
// keeps its old value until then.
var liveKeys = map[string]bool{
	"upstreams":        true, // Upstreams.Set
	"upstream_timeout": true, // new upstream clients, new registry handler
	"upstream_retries": true, // new upstream clients
	"default_upstream": true, // new registry handler
	"tag_ttl":          true, // new registry handler
	"max_disk":         true, // Store.SetMaxBytes
	"log.level":        true, // the logger's LevelVar, when serve set one
}

// live is what a configuration reload swaps while the server runs.
type live struct {
	mu    sync.Mutex // serialises reloads
	cfg   atomic.Pointer[config.Config]
	v2    swapHandler
	build func(config.Config) http.Handler // a registry handler for a config
	load  func() (config.Config, error)
	level *slog.LevelVar
}

// swapHandler serves with the handler last stored; a reload stores a new
// one while requests in flight finish on the old.
type swapHandler struct{ h atomic.Pointer[http.Handler] }

func (s *swapHandler) set(h http.Handler) { s.h.Store(&h) }

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
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
// live. An invalid configuration is refused (the error names the key) and
// nothing changes. It returns the changed keys applied and those that need a
// restart, each sorted.
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
	changed := changedKeys(old, next)
	eff := old
	for _, k := range changed {
		if liveKeys[k] && (k != "log.level" || s.live.level != nil) {
			applied = append(applied, k)
		} else {
			restart = append(restart, k)
		}
	}
	eff.Upstreams = next.Upstreams
	eff.UpstreamTimeout = next.UpstreamTimeout
	eff.UpstreamRetries = next.UpstreamRetries
	eff.DefaultUpstream = next.DefaultUpstream
	eff.TagTTL = next.TagTTL
	eff.MaxDisk = next.MaxDisk
	if s.live.level != nil {
		eff.Log.Level = next.Log.Level
	}
	if has(applied, "upstreams", "upstream_timeout", "upstream_retries") {
		if err := s.Upstreams.Set(eff, s.log); err != nil {
			return nil, nil, err
		}
	}
	if has(applied, "upstream_timeout", "default_upstream", "tag_ttl") && s.live.build != nil {
		s.live.v2.set(s.live.build(eff))
	}
	if has(applied, "max_disk") {
		s.Store.SetMaxBytes(int64(eff.MaxDisk))
	}
	if has(applied, "log.level") {
		var l slog.Level
		if l.UnmarshalText([]byte(eff.Log.Level)) == nil {
			s.live.level.Set(l)
		}
	}
	s.live.cfg.Store(&eff)
	return applied, restart, nil
}

func has(list []string, keys ...string) bool {
	for _, k := range keys {
		for _, l := range list {
			if l == k {
				return true
			}
		}
	}
	return false
}

// changedKeys lists the dotted keys whose values differ, sorted; upstreams
// count as one key.
func changedKeys(a, b config.Config) []string {
	var out []string
	if !reflect.DeepEqual(a.Upstreams, b.Upstreams) {
		out = append(out, "upstreams")
	}
	a.Upstreams, b.Upstreams = nil, nil
	fa, fb := flatten(a), flatten(b)
	for k, v := range fa {
		if fb[k] != v {
			out = append(out, k)
		}
	}
	for k := range fb {
		if _, ok := fa[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// flatten renders c's scalar keys as dotted names and YAML strings.
func flatten(c config.Config) map[string]string {
	out := map[string]string{}
	b, err := yaml.Marshal(c)
	if err != nil {
		return out
	}
	var m map[string]any
	if yaml.Unmarshal(b, &m) != nil {
		return out
	}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				walk(prefix+k+".", sub)
				continue
			}
			s, _ := yaml.Marshal(v)
			out[prefix+k] = string(s)
		}
	}
	walk("", m)
	return out
}
