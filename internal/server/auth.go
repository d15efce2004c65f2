package server

import (
	"log/slog"

	"github.com/berth-mirror/berth/internal/access"
	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/metrics"
)

// accessOptions configure the access gate of the server's one registry
// handler, which the /v2/ API, the peer API and admin prefetch all ask, so
// decisions and private marks outlive a reload (auth_ttl, auth_grace and
// private_content need a restart). The handler adds its store, clock and
// live upstream timeout.
func accessOptions(cfg config.Config, m *metrics.Metrics, log *slog.Logger) access.Options {
	grace := cfg.AuthGrace.D()
	if grace == 0 {
		grace = -1 // configured: none
	}
	return access.Options{
		TTL:        cfg.AuthTTL.D(),
		Grace:      grace,
		Mode:       cfg.PrivateContent,
		Registerer: m.Registry,
		Logger:     log.With("component", "auth"),
	}
}
