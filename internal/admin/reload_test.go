package admin_test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-mirror/berth/internal/admin"
	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/server"
)

func TestConfigReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "berth.yaml")
	var base config.Config
	write := func(extra string) {
		y := fmt.Sprintf("data_dir: %s\nadmin:\n  socket: %s\nupstreams:\n  registry.test:\n    url: %s\n%s",
			base.DataDir, base.Admin.Socket, base.Upstreams["registry.test"].URL, extra)
		if err := os.WriteFile(file, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Like serve: the file, no env, then the --listen flag.
	load := func() (config.Config, error) {
		cfg, err := config.Load(file, func(string) (string, bool) { return "", false })
		if err != nil {
			return cfg, err
		}
		if err := cfg.Set("listen", "127.0.0.1:0"); err != nil {
			return cfg, err
		}
		return cfg, cfg.Validate()
	}
	level := new(slog.LevelVar)
	h := newHarness(t, func(c *config.Config) { base = *c; c.Log.Level = "info" }, func(s *server.Server) {
		s.SetReloader(load)
		s.SetLogLevel(level)
	})
	write("log:\n  level: info\n")
	c := h.client()
	h.push("test/app", "v1", 1, 1024)
	pushed := h.tagHeads.Load() // the push itself checks the tag
	h.pull("test/app", "v1")
	h.pull("test/app", "v1")
	if n := h.tagHeads.Load() - pushed; n != 1 {
		t.Fatalf("tag resolved upstream %d times within tag_ttl, want 1", n)
	}

	var res admin.ReloadResult
	h.call(c, "config.reload", nil, &res)
	if len(res.Applied) != 0 || len(res.RestartRequired) != 0 {
		t.Errorf("reload of an unchanged file: %+v", res)
	}

	write("tag_ttl: 0s\nmax_disk: 1Gi\nmax_fetches: 8\nlog:\n  level: warn\nupstreams:\n  new.test:\n    url: https://new.test\n")
	h.call(c, "config.reload", nil, &res)
	if want := []string{"log.level", "max_disk", "tag_ttl", "upstreams"}; !slices.Equal(res.Applied, want) {
		t.Errorf("applied %v, want %v", res.Applied, want)
	}
	if want := []string{"max_fetches"}; !slices.Equal(res.RestartRequired, want) {
		t.Errorf("restart_required %v, want %v", res.RestartRequired, want)
	}
	if level.Level() != slog.LevelWarn {
		t.Errorf("log level %v after reload, want WARN", level.Level())
	}
	var st admin.Status
	h.call(c, "status", nil, &st)
	if st.Store.MaxBytes != 1<<30 {
		t.Errorf("max_bytes %d after reload", st.Store.MaxBytes)
	}
	var ups []admin.Upstream
	h.call(c, "upstreams.list", nil, &ups)
	if !slices.ContainsFunc(ups, func(u admin.Upstream) bool { return u.Name == "new.test" }) {
		t.Errorf("new.test missing after reload: %+v", ups)
	}
	var cfg map[string]any
	h.call(c, "config.get", nil, &cfg)
	if cfg["tag_ttl"] != "0s" || cfg["max_fetches"] != float64(32) {
		t.Errorf("config in force: tag_ttl %v (want 0s), max_fetches %v (want the old 32 until a restart)", cfg["tag_ttl"], cfg["max_fetches"])
	}
	// tag_ttl 0 is live: the next pull resolves the tag upstream again.
	h.pull("test/app", "v1")
	if n := h.tagHeads.Load() - pushed; n != 2 {
		t.Errorf("tag resolved upstream %d times after tag_ttl became 0, want 2", n)
	}

	// An invalid file is refused with the key named; nothing changes.
	write("tag_ttl: -5s\nmax_disk: 2Gi\n")
	e := callErr(t, c, "config.reload", nil)
	data, _ := e.Data.(map[string]any)
	if e.Code != admin.CodeServer || data["key"] != "tag_ttl" || !strings.Contains(e.Message, "tag_ttl") {
		t.Errorf("invalid reload: %+v", e)
	}
	write("max_disk: [\n")
	if e := callErr(t, c, "config.reload", nil); e.Code != admin.CodeServer || !strings.Contains(e.Message, "berth.yaml") {
		t.Errorf("unparsable reload: %+v", e)
	}
	h.call(c, "config.get", nil, &cfg)
	if cfg["tag_ttl"] != "0s" || cfg["max_disk"] != "1Gi" {
		t.Errorf("config changed by a refused reload: %v", cfg)
	}
}
