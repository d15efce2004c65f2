package server

import (
	"log/slog"

	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/metrics"
	"github.com/berth-mirror/berth/internal/registry"
	"github.com/berth-mirror/berth/internal/store"
)

// newAuth builds the private-content state once per server: registry
// handlers rebuilt by config.reload share it, so decisions and private marks
// outlive a reload (auth_ttl, auth_grace and private_content need a restart).
func newAuth(cfg config.Config, st *store.Store, m *metrics.Metrics, log *slog.Logger) *registry.Auth {
	grace := cfg.AuthGrace.D()
	if grace == 0 {
		grace = -1 // configured: none
	}
	return registry.NewAuth(registry.AuthOptions{
		TTL:        cfg.AuthTTL.D(),
		Grace:      grace,
		Mode:       cfg.PrivateContent,
		Marks:      st,
		Registerer: m.Registry,
		Logger:     log.With("component", "auth"),
	})
}
