package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"time"

	"golang.org/x/term"

	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/server"
	"github.com/berth-mirror/berth/internal/sysinfo"
)

// loadConfig parses serve's flags over the file and BERTH_* env.
func loadConfig(args []string, stderr io.Writer) (config.Config, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", os.Getenv("BERTH_CONFIG"), "YAML configuration file (env BERTH_CONFIG)")
	var ups multiValue
	fs.Var(&ups, "upstream", "NAME=URL: map a registry name to an endpoint (repeatable)")
	keys := map[string]string{
		"listen":           "listen",
		"data-dir":         "data_dir",
		"default-upstream": "default_upstream",
		"admin-socket":     "admin.socket",
		"max-disk":         "max_disk",
		"tag-ttl":          "tag_ttl",
		"max-fetches":      "max_fetches",
		"log-level":        "log.level",
		"log-format":       "log.format",
		"peer-bind":        "cluster.peer_bind",
		"peer-join":        "cluster.peer_join",
		"advertise-url":    "cluster.advertise_url",
	}
	vals := map[string]*string{}
	for f, k := range keys {
		vals[f] = fs.String(f, "", fmt.Sprintf("sets %s (env %s)", k, config.EnvName(k)))
	}
	if err := fs.Parse(args); err != nil {
		return config.Config{}, err
	}
	if fs.NArg() > 0 {
		return config.Config{}, fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	cfg, err := config.Load(*file, os.LookupEnv)
	if err != nil {
		return cfg, err
	}
	var ferr error
	fs.Visit(func(f *flag.Flag) {
		if k, ok := keys[f.Name]; ok && ferr == nil {
			ferr = cfg.Set(k, *vals[f.Name])
		}
	})
	if ferr != nil {
		return cfg, ferr
	}
	for _, u := range ups {
		if err := cfg.SetUpstream(u); err != nil {
			return cfg, err
		}
	}
	return cfg, cfg.Validate()
}

// newLogger builds the logger; its level is read from level, which
// config.reload may change.
func newLogger(c config.Log, level *slog.LevelVar, w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.Level))
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level}
	format := c.Format
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// host is what serve reads from the machine it runs on; tests give it fake
// cgroup trees and environments.
type host struct {
	// cgroup reads the memory limit that GOMEMLIMIT is derived from.
	cgroup sysinfo.Reader
	// getenv looks up GOMEMLIMIT.
	getenv func(string) (string, bool)
}

func runServe(ctx context.Context, args []string, stderr io.Writer) int {
	return serve(ctx, args, stderr, host{getenv: os.LookupEnv})
}

// applyMemLimit sets the Go runtime's soft memory limit from the cgroup (unless
// GOMEMLIMIT is set) and returns the attributes of the start-up log line.
func applyMemLimit(log *slog.Logger, h host) []any {
	limit, source, lim, err := sysinfo.Apply(h.cgroup, h.getenv)
	if err != nil {
		log.Warn("reading cgroup limits", "error", err)
	}
	return append([]any{"gomemlimit", limit, "gomemlimit_source", source}, sysinfo.Describe(lim)...)
}

func serve(ctx context.Context, args []string, stderr io.Writer, h host) int {
	cfg, err := loadConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "berth:", err)
		return 2
	}
	level := new(slog.LevelVar)
	log := newLogger(cfg.Log, level, stderr)
	memAttrs := applyMemLimit(log, h)
	log.Info("starting berth", append([]any{"version", version, "gomaxprocs", runtime.GOMAXPROCS(0)}, memAttrs...)...)

	srv, err := server.New(cfg, log, server.WithVersion(version))
	if err != nil {
		log.Error("cannot start", "error", err)
		var ce *config.Error
		if errors.As(err, &ce) {
			return 2
		}
		return 1
	}
	srv.SetLogLevel(level)
	// config.reload re-reads the same sources: file, env and these flags.
	srv.SetReloader(func() (config.Config, error) { return loadConfig(args, io.Discard) })
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		_ = srv.Close()
		log.Error("cannot listen", "addr", cfg.Listen, "error", err)
		return 1
	}
	if err := srv.Run(ctx, ln); err != nil {
		log.Error("server stopped with an error", "error", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// runHealth is the probe for scratch images: no shell, no curl.
func runHealth(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rawURL := fs.String("url", "http://127.0.0.1:5000/readyz", "readiness URL to probe; a base URL (no path) probes its /readyz")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	target, err := probeURL(*rawURL)
	if err != nil {
		fmt.Fprintln(stderr, "berth health:", err)
		return 2
	}
	client := &http.Client{Timeout: *timeout}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, target, nil)
	if err != nil {
		fmt.Fprintln(stderr, "berth health:", err)
		return 1
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "berth health: not ready:", err)
		return 1
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "berth health: not ready:", resp.Status)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

// probeURL is the URL health GETs: a base URL, as people type it
// (http://127.0.0.1:5000 or …:5000/), means its /readyz.
func probeURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--url %q: expected an http:// or https:// URL such as http://127.0.0.1:5000", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/readyz"
	}
	return u.String(), nil
}
