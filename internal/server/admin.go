package server

import (
	"github.com/berth-mirror/berth/internal/admin"
)

// startAdmin starts the control socket when admin.socket is set. The stop
// function it returns cancels prefetch jobs, closes the connections and
// removes the socket file.
func (s *Server) startAdmin(listen string) (stop func() error, err error) {
	cfg := s.current()
	if cfg.Admin.Socket == "" {
		return func() error { return nil }, nil
	}
	log := s.log.With("component", "admin")
	svc := admin.NewService(admin.Deps{
		Store:            s.Store,
		Registry:         s.handler,
		Config:           s.current,
		MaxManifestBytes: s.maxManifestBytes,
		Reload:           s.Reload,
		InFlight:         s.Fetcher.InFlight,
		Peers:            s.cluster.Members,
		Listen:           listen,
		Version:          s.version,
		Started:          s.started,
		Logger:           log,
	})
	mux := admin.NewMux(log)
	svc.Register(mux)
	srv, err := admin.Start(admin.Options{
		Socket:          cfg.Admin.Socket,
		MaxMessageBytes: int64(cfg.Admin.MaxMessageBytes),
		Logger:          log,
	}, mux)
	if err != nil {
		svc.Close()
		return nil, err
	}
	log.Info("admin socket listening", "socket", cfg.Admin.Socket)
	return func() error {
		err := srv.Close()
		svc.Close()
		return err
	}, nil
}
