package main

import (
	"bytes"
	"context"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/sysinfo"
)

func TestHealth(t *testing.T) {
	// Like berth: 200 on /readyz, 404 on / (as the registry would answer).
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" && r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	defer ready.Close()
	notReady := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	}))
	defer notReady.Close()
	// A port nothing listens on.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String() + "/readyz"
	ln.Close()

	tests := []struct {
		name string
		url  string
		want int
	}{
		{"ready", ready.URL + "/readyz", 0},
		{"base URL probes /readyz", ready.URL, 0},
		{"base URL with a slash probes /readyz", ready.URL + "/", 0},
		{"an explicit path is probed as given", ready.URL + "/healthz", 0},
		{"an explicit path that is not ready", ready.URL + "/nope", 1},
		{"not a URL", "127.0.0.1:5000", 2},
		{"503", notReady.URL + "/readyz", 1},
		{"nothing listening", dead, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if got := run([]string{"health", "--url", tt.url, "--timeout", "2s"}, &out, &errb); got != tt.want {
				t.Errorf("exit %d, want %d (stderr %q)", got, tt.want, errb.String())
			}
		})
	}
}

// testSecret stands for a credential that must never be printed.
const testSecret = "s3cr3t-T0ken"

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServeBadConfigExits2WithOneLine(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		key  string
	}{
		{"bad flag value", []string{"--max-disk", "lots"}, nil, "max_disk"},
		{"bad upstream", []string{"--upstream", "nourl"}, nil, "upstream"},
		{"unknown default", []string{"--default-upstream", "nope.test"}, nil, "default_upstream"},
		{"bad env", nil, map[string]string{"BERTH_TAG_TTL": "soon"}, "tag_ttl"},
		{"upstream flag with credentials", []string{"--upstream", "x.test=https://user:" + testSecret + "@x.test"}, nil, "upstreams.x.test.url"},
		{"upstream env with credentials", nil, map[string]string{"BERTH_UPSTREAMS": "x.test=https://user:" + testSecret + "@x.test"}, "upstreams.x.test.url"},
		{"misspelt password in the file", []string{"--config", writeFile(t, "upstreams:\n  x.test:\n    url: https://x.test\n    pasword: "+testSecret+"\n")}, nil, "upstreams.x.test.pasword"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var errb bytes.Buffer
			got := runServe(context.Background(), tt.args, &errb)
			if got != 2 {
				t.Fatalf("exit %d, want 2", got)
			}
			msg := strings.TrimSpace(errb.String())
			if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, tt.key) {
				t.Errorf("want one line naming %s, got %q", tt.key, msg)
			}
			if strings.Contains(msg, testSecret) {
				t.Errorf("the error echoes a credential: %q", msg)
			}
		})
	}
}

// TestServeStartsAndStops runs the real serve command and stops it as SIGTERM
// would. Its host is a cgroup v2 tree limited to 1 GiB without GOMEMLIMIT in
// the environment, so serve must have set the runtime's limit to 90% of it.
func TestServeStartsAndStops(t *testing.T) {
	old := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	h := host{
		cgroup: sysinfo.Reader{Root: filepath.Join("..", "..", "internal", "sysinfo", "testdata", "v2-limited")},
		getenv: func(string) (string, bool) { return "", false },
	}
	dir := t.TempDir()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	sock, err := os.MkdirTemp("", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(sock) }()
	conf := writeFile(t, "upstreams:\n  private.test:\n    url: https://private.test\n    username: u\n    password: "+testSecret+
		"\ncluster:\n  secret: "+testSecret+"\n  extra_secrets: "+testSecret+"\n")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		done <- serve(ctx, []string{"--config", conf, "--listen", addr, "--data-dir", dir, "--admin-socket", filepath.Join(sock, "a.sock"), "--log-format", "json"}, &errb, h)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out, e bytes.Buffer
		if run([]string{"health", "--url", "http://" + addr + "/readyz", "--timeout", "1s"}, &out, &e) == 0 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("never ready: %s", errb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, want := debug.SetMemoryLimit(-1), int64(1<<30-(1<<30)/10); got != want {
		t.Errorf("GOMEMLIMIT while serving = %d, want %d (90%% of the cgroup's 1 GiB)", got, want)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d: %s", code, errb.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("serve did not stop")
	}
	if strings.Contains(errb.String(), testSecret) {
		t.Errorf("the log shows a credential: %s", errb.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "meta.db")); err != nil {
		t.Errorf("store not created: %v", err)
	}
}
