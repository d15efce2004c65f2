package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-mirror/berth/internal/admin"
	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/server"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ctl")

// shortTemp is a temporary directory short enough for a socket path.
func shortTemp(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

var lastAccess = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)

// fakeBerth serves canned results, so tables are stable.
func fakeBerth(t *testing.T) string {
	t.Helper()
	m := admin.NewMux(nil)
	admin.Handle(m, "status", func(context.Context, struct{}) (admin.Status, error) {
		return admin.Status{Version: "v1.2.3", Uptime: "1h2m3s", Listen: "127.0.0.1:5000",
			Store:           admin.StoreStatus{Bytes: 3 << 30, Objects: 1234, MaxBytes: 20 << 30},
			FetchesInFlight: 2, Upstreams: 8, GoMemLimit: 90 << 20, RSS: 31 << 20, JobsRunning: 1}, nil
	})
	items := []admin.CacheItem{
		{Digest: "sha256:" + strings.Repeat("1", 64), Size: 1234, MediaType: "application/vnd.oci.image.manifest.v1+json", Manifest: true, Repository: "docker.io/library/alpine", LastAccess: lastAccess},
		{Digest: "sha256:" + strings.Repeat("2", 64), Size: 3 << 20, MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Repository: "docker.io/library/alpine", LastAccess: lastAccess.Add(-time.Hour)},
		{Digest: "sha256:" + strings.Repeat("3", 64), Size: 512, MediaType: "application/vnd.oci.image.config.v1+json", LastAccess: lastAccess.Add(-48 * time.Hour)},
	}
	admin.Handle(m, "cache.list", func(_ context.Context, p admin.ListParams) (admin.ListResult, error) {
		// Pages of two, to exercise the client's paging.
		start := 0
		for start < len(items) && p.Cursor != "" && items[start].Digest <= p.Cursor {
			start++
		}
		end := min(start+2, len(items))
		if p.Limit > 0 {
			end = min(end, start+p.Limit)
		}
		res := admin.ListResult{Items: items[start:end]}
		if end < len(items) {
			res.NextCursor = items[end-1].Digest
		}
		return res, nil
	})
	admin.Handle(m, "cache.purge", func(_ context.Context, p admin.PurgeParams) (admin.PurgeResult, error) {
		if p.All {
			return admin.PurgeResult{Purged: 3, Bytes: 3<<20 + 1746}, nil
		}
		return admin.PurgeResult{Purged: 1, Bytes: 1234, Missing: len(p.Digests) - 1}, nil
	})
	admin.Handle(m, "peers.list", func(context.Context, struct{}) (admin.Peers, error) {
		return admin.Peers{Members: []admin.Member{
			{Name: "node-a", Address: "10.0.0.5:7946", URL: "http://10.0.0.5:5001", State: "alive", Self: true},
			{Name: "node-b", Address: "10.0.0.6:7946", URL: "http://10.0.0.6:5001", State: "alive", ServedBytes: 3<<20 + 1746,
				Conflict: `name "node-b" is claimed by 10.0.0.6:7946 and by 10.0.0.9:7946 (refused: started later)`},
			{Name: "node-c", Address: "10.0.0.7:7946", URL: "http://10.0.0.7:5001", State: "dead", ServedBytes: 1234},
		}}, nil
	})
	admin.Handle(m, "config.reload", func(context.Context, struct{}) (admin.ReloadResult, error) {
		return admin.ReloadResult{Applied: []string{"max_disk", "tag_ttl"}, RestartRequired: []string{"listen"}}, nil
	})
	var polls atomic.Int32
	admin.Handle(m, "images.prefetch", func(_ context.Context, p admin.PrefetchParams) (admin.PrefetchResult, error) {
		polls.Store(0)
		return admin.PrefetchResult{Job: "job1"}, nil
	})
	admin.Handle(m, "jobs.get", func(_ context.Context, p admin.JobParams) (admin.Job, error) {
		if p.Job != "job1" {
			return admin.Job{}, admin.Errorf(admin.CodeNotFound, "no job %q", p.Job)
		}
		j := admin.Job{ID: "job1", State: admin.StateRunning, BytesDone: 1 << 20, BytesTotal: 4 << 20, Started: lastAccess,
			Images: []admin.ImageProgress{
				{Ref: "alpine:3.20", State: admin.StateDone, BytesDone: 1 << 20, BytesTotal: 1 << 20},
				{Ref: "registry.test/app:v1", State: admin.StateRunning, BytesTotal: 3 << 20},
			}}
		if polls.Add(1) > 1 {
			j.State = admin.StateFailed
			j.BytesDone = 2 << 20
			j.Images[1].State = admin.StateFailed
			j.Images[1].BytesDone = 1 << 20
			j.Images[1].Error = "GET /v2/registry.test/app/blobs/sha256:…: 502 UNAVAILABLE: upstream registry.test failed: unavailable"
		}
		return j, nil
	})
	admin.Handle(m, "fail", func(context.Context, struct{}) (any, error) { return nil, errors.New("it broke") })
	m.Handle("echo", func(_ context.Context, p json.RawMessage) (any, error) { return p, nil })
	srv, err := admin.Start(admin.Options{Socket: filepath.Join(shortTemp(t), "a.sock")}, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv.Addr()
}

func runCtlTest(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code = runCtl(ctx, args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "ctl", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s:\n--- got\n%s--- want\n%s", name, path, got, want)
	}
}

func TestCtlTables(t *testing.T) {
	sock := fakeBerth(t)
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"status", []string{"status"}, 0},
		{"ls", []string{"ls"}, 0},
		{"ls-limit", []string{"ls", "--limit", "1"}, 0},
		{"purge-digests", []string{"purge", "sha256:" + strings.Repeat("1", 64), "sha256:" + strings.Repeat("9", 64)}, 0},
		{"purge-all", []string{"purge", "--all"}, 0},
		{"peers", []string{"peers"}, 0},
		{"reload", []string{"reload"}, 0},
		{"prefetch", []string{"prefetch", "alpine:3.20", "registry.test/app:v1", "--platform", "linux/arm64"}, 1},
		{"call", []string{"call", "echo", `{"a":[1,2],"b":"x"}`}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCtlTest(t, "", append([]string{"--socket", sock}, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, tt.code, errOut)
			}
			golden(t, tt.name, out)
		})
	}
}

func TestCtlJSON(t *testing.T) {
	sock := fakeBerth(t)
	_, out, _ := runCtlTest(t, "", "--socket", sock, "--json", "status")
	var st admin.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Version != "v1.2.3" || st.Store.Objects != 1234 {
		t.Errorf("status --json: %q (%v)", out, err)
	}
	// Flags may follow the command too; ls --json gathers every page.
	_, out, _ = runCtlTest(t, "", "ls", "--socket", sock, "--json")
	var l admin.ListResult
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Items) != 3 || l.NextCursor != "" {
		t.Errorf("ls --json: %q (%v)", out, err)
	}
	code, out, _ := runCtlTest(t, "", "--socket", sock, "--json", "prefetch", "alpine:3.20")
	var j admin.Job
	if err := json.Unmarshal([]byte(out), &j); err != nil || code != 1 || j.State != admin.StateFailed {
		t.Errorf("prefetch --json: exit %d, %q (%v)", code, out, err)
	}
	_, out, _ = runCtlTest(t, "", "--socket", sock, "prefetch", "--no-wait", "alpine")
	if out != "job1\n" {
		t.Errorf("prefetch --no-wait: %q", out)
	}
}

func TestCtlCallParams(t *testing.T) {
	sock := fakeBerth(t)
	file := filepath.Join(t.TempDir(), "p.json")
	if err := os.WriteFile(file, []byte(`{"from":"file"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		stdin string
		arg   string
		want  string
	}{
		{"", "@" + file, `{"from":"file"}`},
		{`{"from":"stdin"}`, "-", `{"from":"stdin"}`},
		{"", `{"x":1}`, `{"x":1}`},
	} {
		code, out, errOut := runCtlTest(t, tt.stdin, "--socket", sock, "--json", "call", "echo", tt.arg)
		if code != 0 || strings.TrimSpace(out) != tt.want {
			t.Errorf("call echo %s: exit %d, %q, %s", tt.arg, code, out, errOut)
		}
	}
}

func TestCtlExitCodes(t *testing.T) {
	sock := fakeBerth(t)
	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no command", nil, 2, "usage: berth ctl"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"purge without a target", []string{"purge"}, 2, "give exactly one of"},
		{"purge with two targets", []string{"purge", "--all", "--repo", "x"}, 2, "give exactly one of"},
		{"status with an argument", []string{"status", "x"}, 2, "takes no arguments"},
		{"bad flag", []string{"ls", "--nope"}, 2, "flag provided but not defined"},
		{"call with bad JSON", []string{"call", "echo", "{"}, 2, "not valid JSON"},
		{"prefetch nothing", []string{"prefetch"}, 2, "at least one IMAGE"},
		{"method error", []string{"call", "fail"}, 1, "fail: it broke (code -32000)"},
		{"unknown method", []string{"call", "nope"}, 1, "(code -32601)"},
		{"help", []string{"-h"}, 0, "usage: berth ctl"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runCtlTest(t, "", append([]string{"--socket", sock}, tt.args...)...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, tt.code, tt.stderr)
			}
		})
	}
	code, _, errOut := runCtlTest(t, "", "--socket", filepath.Join(shortTemp(t), "none.sock"), "status")
	if code != 1 || !strings.Contains(errOut, "cannot reach berth at") {
		t.Errorf("no server: exit %d, %q", code, errOut)
	}
}

func TestCtlSocketFromEnv(t *testing.T) {
	sock := fakeBerth(t)
	t.Setenv("BERTH_ADMIN_SOCKET", sock)
	if code, out, errOut := runCtlTest(t, "", "peers"); code != 0 || !strings.Contains(out, "node-a") {
		t.Errorf("socket from env: exit %d, %q, %q", code, out, errOut)
	}
	t.Setenv("BERTH_ADMIN_SOCKET", "")
	_ = os.Unsetenv("BERTH_ADMIN_SOCKET") // restored by t.Setenv's cleanup
	file := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(file, []byte("admin:\n  socket: "+sock+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BERTH_CONFIG", file)
	if code, _, errOut := runCtlTest(t, "", "peers"); code != 0 {
		t.Errorf("socket from BERTH_CONFIG: exit %d, %q", code, errOut)
	}
}

// TestCtlAgainstServer drives a real berth whose upstream is an in-process
// registry: prefetch, list, purge.
func TestCtlAgainstServer(t *testing.T) {
	reg := ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))
	var blobGets atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			blobGets.Add(1)
		}
		reg.ServeHTTP(w, r)
	}))
	defer up.Close()
	img, err := random.Image(128<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(strings.TrimPrefix(up.URL, "http://") + "/test/app:v1")
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	dir := shortTemp(t)
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Admin.Socket = filepath.Join(dir, "admin.sock")
	cfg.Upstreams["registry.test"] = config.Upstream{URL: up.URL}
	srv, err := server.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	sock := []string{"--socket", cfg.Admin.Socket}
	for i := 0; ; i++ {
		if code, _, _ := runCtlTest(t, "", append(sock, "status")...); code == 0 {
			break
		}
		if i > 500 {
			t.Fatal("berth did not come up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	code, out, errOut := runCtlTest(t, "", append(sock, "prefetch", "registry.test/test/app:v1")...)
	if code != 0 || !strings.Contains(out, "registry.test/test/app:v1: done") || !strings.Contains(out, "job ") {
		t.Fatalf("prefetch: exit %d\n%s%s", code, out, errOut)
	}
	if n := blobGets.Load(); n != 4 {
		t.Errorf("upstream blob GETs %d, want 4 (config and 3 layers)", n)
	}
	_, out, _ = runCtlTest(t, "", append(sock, "--json", "ls", "--repo", "registry.test/test/app")...)
	var l admin.ListResult
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Items) != 5 {
		t.Errorf("ls --json: %d items (%v), want 5", len(l.Items), err)
	}
	code, out, _ = runCtlTest(t, "", append(sock, "purge", "--repo", "registry.test/test/app")...)
	if code != 0 || !strings.HasPrefix(out, "purged 5 objects") {
		t.Errorf("purge: exit %d, %q", code, out)
	}
	code, out, _ = runCtlTest(t, "", append(sock, "--json", "call", "upstreams.list")...)
	var ups []admin.Upstream
	if err := json.Unmarshal([]byte(out), &ups); code != 0 || err != nil || len(ups) != len(cfg.Upstreams) {
		t.Errorf("call upstreams.list: exit %d, %q", code, out)
	}
}
