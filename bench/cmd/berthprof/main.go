// Command berthprof runs the same server as `berth serve` (server.New + Run,
// GOMEMLIMIT from the cgroup) with net/http/pprof on a second loopback
// listener, so heap and allocation profiles can be taken while the memory
// benchmark drives it. It is a measuring harness, not a product binary.
//
//	berthprof -listen 127.0.0.1:5000 -pprof 127.0.0.1:6060 -data-dir /var/tmp/d \
//	          -upstream registry.test=http://127.0.0.1:5001
//	go tool pprof -sample_index=alloc_space -base allocs.before allocs.after
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/server"
	"github.com/berth-mirror/berth/internal/sysinfo"
)

func main() { os.Exit(run()) }

func run() int {
	listen := flag.String("listen", "127.0.0.1:5000", "registry listen address")
	pprofAddr := flag.String("pprof", "127.0.0.1:6060", "pprof listen address")
	dataDir := flag.String("data-dir", "", "data directory")
	up := flag.String("upstream", "", "NAME=URL of the upstream, also the default upstream")
	rate := flag.Int("memprofilerate", 0, "runtime.MemProfileRate (0: Go's default, 512 KiB)")
	flag.Parse()
	if *rate > 0 {
		runtime.MemProfileRate = *rate
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	limit, source, lim, err := sysinfo.Apply(sysinfo.Reader{}, os.LookupEnv)
	if err != nil {
		log.Warn("reading cgroup limits", "error", err)
	}
	log.Info("starting berthprof", append([]any{"gomemlimit", limit, "gomemlimit_source", source,
		"gomaxprocs", runtime.GOMAXPROCS(0)}, sysinfo.Describe(lim)...)...)

	cfg := config.Default()
	cfg.Listen, cfg.DataDir, cfg.Admin.Socket = *listen, *dataDir, ""
	if err := cfg.SetUpstream(*up); err != nil {
		fmt.Fprintln(os.Stderr, "berthprof:", err)
		return 2
	}
	name, _, _ := strings.Cut(*up, "=")
	cfg.DefaultUpstream = name
	srv, err := server.New(cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "berthprof:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	ps := &http.Server{Addr: *pprofAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = ps.ListenAndServe() }()
	defer func() { _ = ps.Close() }()

	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		_ = srv.Close()
		fmt.Fprintln(os.Stderr, "berthprof:", err)
		return 1
	}
	if err := srv.Run(ctx, ln); err != nil {
		fmt.Fprintln(os.Stderr, "berthprof:", err)
		return 1
	}
	return 0
}
