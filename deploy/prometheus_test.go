package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/server"
)

// tool finds a Debian-packaged tool (scripts/deps.sh installs it); missing, it
// skips, or fails under BERTH_E2E=1.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("BERTH_E2E") == "1" {
		t.Fatalf("%s not found (BERTH_E2E=1): run scripts/deps.sh", name)
	}
	t.Skipf("%s not found: run scripts/deps.sh (BERTH_E2E=1 makes this a failure)", name)
	return ""
}

// TestAlertRulesPromtool: the chart's rules (the same as docs/alerting.md's)
// are valid Prometheus rules.
func TestAlertRulesPromtool(t *testing.T) {
	out, err := exec.Command(tool(t, "promtool"), "check", "rules", filepath.Join(chartDir, "files", "alerts.yaml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// TestPrometheusScrapesMetricsListen runs berth with metrics_listen on a
// second loopback address (standing in for the node IP) and the real
// Prometheus scraping it as docs/alerting.md says, with the chart's alert
// rules loaded: the target is up, berth's families are stored, and every
// rule evaluates without error against them.
func TestPrometheusScrapesMetricsListen(t *testing.T) {
	prom := tool(t, "prometheus")
	dir := t.TempDir()
	metricsAddr := freeAddr(t, "127.0.0.2")
	stop := runBerth(t, dir, metricsAddr)
	defer stop()

	rules, err := filepath.Abs(filepath.Join(chartDir, "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: berth
    static_configs: [{targets: [%q]}]
`, rules, metricsAddr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	web := freeAddr(t, "127.0.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+web)
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	api := "http://" + web + "/api/v1/"

	deadline := time.Now().Add(60 * time.Second)
	var missing []string
	for time.Now().Before(deadline) {
		missing = missing[:0]
		for _, q := range []string{
			`up{job="berth"} == 1`, `berth_store_bytes`, `berth_memory_working_set_bytes`,
			`berth_http_requests_total`, `process_resident_memory_bytes`,
		} {
			if n := queryCount(api, q); n == 0 {
				missing = append(missing, q)
			}
		}
		if len(missing) == 0 && rulesHealthy(t, api, false) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(missing) > 0 {
		log, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
		t.Fatalf("Prometheus has no %q from metrics_listen %s\n%s", missing, metricsAddr, tail(log))
	}
	rulesHealthy(t, api, true)
}

// runBerth runs berth in-process with metrics_listen set, makes one request so
// the request counters have a series, and returns a stop function.
func runBerth(t *testing.T, dir, metricsAddr string) func() {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Admin.Socket = ""
	cfg.MetricsListen = metricsAddr
	s, err := server.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + ln.Addr().String() + "/v2/")
		if err == nil {
			_ = resp.Body.Close()
			break
		}
		if i > 500 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

func freeAddr(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("cannot bind %s: %v", host, err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// queryCount returns how many series an instant query returns (0 on any error).
func queryCount(api, q string) int {
	resp, err := http.Get(api + "query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if json.NewDecoder(resp.Body).Decode(&r) != nil {
		return 0
	}
	return len(r.Data.Result)
}

// rulesHealthy reports whether every alert of the rule file has been
// evaluated without error; with report it says what is wrong.
func rulesHealthy(t *testing.T, api string, report bool) bool {
	t.Helper()
	resp, err := http.Get(api + "rules")
	if err != nil {
		if report {
			t.Error(err)
		}
		return false
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name           string `json:"name"`
					Health         string `json:"health"`
					LastError      string `json:"lastError"`
					LastEvaluation string `json:"lastEvaluation"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		if report {
			t.Error(err)
		}
		return false
	}
	var names []string
	ok := true
	for _, g := range r.Data.Groups {
		for _, rule := range g.Rules {
			names = append(names, rule.Name)
			if rule.Health != "ok" {
				ok = false
				if report {
					t.Errorf("rule %s: health %q %s", rule.Name, rule.Health, rule.LastError)
				}
			}
		}
	}
	for _, want := range []string{"BerthWorkingSetNearLimit", "BerthCacheHitRatioLow", "BerthUpstreamErrors",
		"BerthVerifyFailures", "BerthServingStaleTags", "BerthDown"} {
		if !slices.Contains(names, want) {
			ok = false
			if report {
				t.Errorf("rule %s not loaded (have %s)", want, strings.Join(names, ", "))
			}
		}
	}
	return ok
}

func tail(b []byte) string {
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}
