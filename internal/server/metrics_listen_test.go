package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/berth-mirror/berth/internal/config"
)

// freeAddr returns host:port with a port free on host at the time of the call.
func freeAddr(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("cannot bind %s: %v", host, err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// runServer starts Run on cfg.Listen and returns a stop function that ends it
// and returns Run's error.
func runServer(t *testing.T, cfg config.Config) (registryURL string, stop func() error) {
	t.Helper()
	s, err := New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	h := runOn(t, s, ln)
	url := "http://" + ln.Addr().String()
	waitFor(t, url+"/readyz", h.done)
	return url, h.stop
}

func waitFor(t *testing.T, url string, done <-chan error) {
	t.Helper()
	for i := 0; ; i++ {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if i > 500 {
			t.Fatalf("%s never answered 200: %v", url, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// TestMetricsListen scrapes a running server's metrics_listen on a second
// loopback address (standing in for the node IP) and parses what it gets as
// Prometheus text: the families an operator alerts on are there, the registry
// and the probes are not reachable on that address, and the registry's own
// listener is unchanged.
func TestMetricsListen(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := testConfig(t)
	cfg.Admin.Socket = ""
	cfg.MetricsListen = freeAddr(t, "127.0.0.2")
	registryURL, stop := runServer(t, cfg)
	metricsURL := "http://" + cfg.MetricsListen

	// A request on the registry listener, so that the request counters have a series.
	if code, _ := get(t, registryURL+"/v2/"); code != http.StatusOK {
		t.Fatalf("GET /v2/ on the registry listener: %d", code)
	}
	resp, err := http.Get(metricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics on metrics_listen: %d", resp.StatusCode)
	}
	if got := expfmt.ResponseFormat(resp.Header); got.FormatType() != expfmt.TypeTextPlain {
		t.Errorf("Content-Type %q: want Prometheus text", resp.Header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("metrics_listen does not serve Prometheus text: %v", err)
	}
	// What docs/alerting.md and the dashboard use that exists before any pull.
	for _, name := range []string{
		"berth_http_requests_total", "berth_http_request_duration_seconds",
		"berth_fetches_in_flight", "berth_verify_failures_total", "berth_store_evictions_total",
		"berth_store_bytes", "berth_store_objects",
		"berth_memory_working_set_bytes", "berth_memory_limit_bytes",
		"process_resident_memory_bytes", "go_goroutines",
	} {
		if families[name] == nil {
			t.Errorf("family %s missing from the scrape", name)
		}
	}

	for _, path := range []string{"/v2/", "/healthz", "/readyz", "/metrics/", "/", "/v2/library/alpine/manifests/latest"} {
		if code, _ := get(t, metricsURL+path); code != http.StatusNotFound {
			t.Errorf("GET %s on metrics_listen: %d, want 404 (metrics only)", path, code)
		}
	}
	if code, _ := get(t, registryURL+"/metrics"); code != http.StatusOK {
		t.Errorf("GET /metrics on the registry listener: %d, want it kept", code)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if c, err := net.DialTimeout("tcp", cfg.MetricsListen, time.Second); err == nil {
		_ = c.Close()
		t.Error("metrics_listen still accepts connections after Run returned")
	}
}

// TestMetricsListenOff: without metrics_listen nothing else listens, and the
// registry listener keeps /metrics.
func TestMetricsListenOff(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := testConfig(t)
	cfg.Admin.Socket = ""
	registryURL, stop := runServer(t, cfg)
	if code, _ := get(t, registryURL+"/metrics"); code != http.StatusOK {
		t.Errorf("GET /metrics: %d", code)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsListenTaken: an address that cannot be bound fails Run at start
// with an error naming metrics_listen, and releases the registry listener.
func TestMetricsListenTaken(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	busy, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2: %v", err)
	}
	defer busy.Close()
	cfg := testConfig(t)
	cfg.Admin.Socket = ""
	cfg.MetricsListen = busy.Addr().String()
	s, err := New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = s.Run(ctx, ln)
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Key != "metrics_listen" {
		t.Fatalf("Run: %v, want a config error for metrics_listen", err)
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		_ = c.Close()
		t.Error("the registry listener is still open after Run failed")
	}
}
