package admin_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-mirror/berth/internal/admin"
	"github.com/berth-mirror/berth/internal/config"
)

func callErr(t *testing.T, c *admin.Client, method string, params any) *admin.Error {
	t.Helper()
	err := c.Call(context.Background(), method, params, nil)
	var e *admin.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: want an RPC error, got %v", method, err)
	}
	return e
}

func TestStatus(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client()
	h.push("test/app", "v1", 2, 1024)
	h.pull("test/app", "v1")
	var st admin.Status
	h.call(c, "status", nil, &st)
	if st.Listen != strings.TrimPrefix(h.url, "http://") || st.Version == "" || st.Uptime == "" {
		t.Errorf("status: %+v", st)
	}
	if st.Store.Objects != 4 || st.Store.Bytes <= 0 || st.Store.MaxBytes != int64(h.cfg.MaxDisk) {
		t.Errorf("store: %+v, want 4 objects (manifest, config, 2 layers)", st.Store)
	}
	if st.Upstreams != len(h.cfg.Upstreams) || st.RSS <= 0 {
		t.Errorf("upstreams %d (want %d), rss %d", st.Upstreams, len(h.cfg.Upstreams), st.RSS)
	}
	if e := callErr(t, c, "status", map[string]int{"x": 1}); e.Code != admin.CodeInvalidParams {
		t.Errorf("status with params: %+v", e)
	}
}

func TestCacheListAndPurge(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client()
	img := h.push("test/app", "v1", 3, 2048)
	h.push("test/other", "v1", 1, 2048)
	h.pull("test/app", "v1")
	h.pull("test/other", "v1")

	var all admin.ListResult
	h.call(c, "cache.list", nil, &all)
	if len(all.Items) != 8 || all.NextCursor != "" {
		t.Fatalf("cache.list: %d items, cursor %q; want 8 (2 manifests, 2 configs, 4 layers)", len(all.Items), all.NextCursor)
	}
	// Pages of 3 walk the same list.
	var paged []admin.CacheItem
	p := admin.ListParams{Limit: 3}
	for {
		var page admin.ListResult
		h.call(c, "cache.list", p, &page)
		paged = append(paged, page.Items...)
		if page.NextCursor == "" {
			break
		}
		p.Cursor = page.NextCursor
	}
	if len(paged) != 8 || paged[0].Digest != all.Items[0].Digest || paged[7].Digest != all.Items[7].Digest {
		t.Errorf("paged listing differs: %d items", len(paged))
	}
	var app admin.ListResult
	h.call(c, "cache.list", admin.ListParams{Repository: "registry.test/test/app"}, &app)
	if len(app.Items) != 5 {
		t.Errorf("repository filter: %d items, want 5", len(app.Items))
	}
	manifests := 0
	for _, it := range app.Items {
		if it.Manifest {
			manifests++
		}
		if it.Repository != "registry.test/test/app" || it.LastAccess.IsZero() || it.Size <= 0 || it.MediaType == "" {
			t.Errorf("item: %+v", it)
		}
	}
	if manifests != 1 {
		t.Errorf("%d manifests listed for test/app, want 1", manifests)
	}
	dg, _ := img.Digest()
	var byPrefix admin.ListResult
	h.call(c, "cache.list", admin.ListParams{DigestPrefix: dg.Hex[:10]}, &byPrefix)
	if len(byPrefix.Items) != 1 || byPrefix.Items[0].Digest != dg.String() || !byPrefix.Items[0].Manifest {
		t.Errorf("prefix filter: %+v", byPrefix.Items)
	}
	if e := callErr(t, c, "cache.list", admin.ListParams{Limit: 10001}); e.Code != admin.CodeInvalidParams {
		t.Errorf("limit over the max: %+v", e)
	}

	// Purge by digest: one present, one absent.
	var res admin.PurgeResult
	absent := "sha256:" + strings.Repeat("0", 64)
	h.call(c, "cache.purge", admin.PurgeParams{Digests: []string{dg.String(), absent, dg.String()}}, &res)
	if res.Purged != 1 || res.Missing != 1 || res.Bytes != byPrefix.Items[0].Size {
		t.Errorf("purge digests: %+v", res)
	}
	// Purge a repository, then everything.
	h.call(c, "cache.purge", admin.PurgeParams{Repository: "registry.test/test/app"}, &res)
	if res.Purged != 4 {
		t.Errorf("purge repository: %+v, want 4", res)
	}
	h.call(c, "cache.purge", admin.PurgeParams{All: true}, &res)
	if res.Purged != 3 {
		t.Errorf("purge all: %+v, want 3", res)
	}
	if b, n := h.srv.Store.Usage(); b != 0 || n != 0 {
		t.Errorf("store after purging all: %d bytes, %d objects", b, n)
	}
	for _, bad := range []admin.PurgeParams{{}, {All: true, Repository: "x"}, {Digests: []string{"nope"}}} {
		if e := callErr(t, c, "cache.purge", bad); e.Code != admin.CodeInvalidParams {
			t.Errorf("purge %+v: %+v", bad, e)
		}
	}
	// Purged content comes back on the next pull.
	h.pull("test/app", "v1")
}

func TestPrefetchThenPullHitsNoUpstreamBlob(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client()
	img := h.push("test/app", "v1", 4, 256<<10)
	var sub admin.PrefetchResult
	h.call(c, "images.prefetch", admin.PrefetchParams{Images: []string{"registry.test/test/app:v1"}}, &sub)
	job := h.waitJob(c, sub.Job)
	if job.State != admin.StateDone || len(job.Images) != 1 || job.Images[0].State != admin.StateDone {
		t.Fatalf("job: %+v", job)
	}
	dg, _ := img.Digest()
	if job.Images[0].Digest != dg.String() {
		t.Errorf("job digest %q, want %s", job.Images[0].Digest, dg)
	}
	if job.BytesDone != job.BytesTotal || job.BytesTotal < 4*256<<10 {
		t.Errorf("bytes %d of %d", job.BytesDone, job.BytesTotal)
	}
	before := h.blobGets.Load()
	if before != 5 {
		t.Errorf("upstream blob GETs during prefetch: %d, want 5 (config and 4 layers)", before)
	}
	h.pull("test/app", "v1")
	if after := h.blobGets.Load(); after != before {
		t.Errorf("pulling after the prefetch made %d upstream blob requests, want 0", after-before)
	}
}

func TestPrefetchIndexPlatforms(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client()
	node := v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	other := v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	if node.Architecture == "arm64" {
		other = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	skipped := v1.Platform{OS: "linux", Architecture: "s390x"}
	_, imgs := h.pushIndex("test/multi", "v2", node, other, skipped)
	var sub admin.PrefetchResult
	h.call(c, "images.prefetch", admin.PrefetchParams{Images: []string{"registry.test/test/multi:v2"},
		Platforms: []string{other.OS + "/" + other.Architecture}}, &sub)
	if job := h.waitJob(c, sub.Job); job.State != admin.StateDone {
		t.Fatalf("job: %+v", job)
	}
	for p, img := range imgs {
		layers, _ := img.Layers()
		for _, l := range layers {
			d, _ := l.Digest()
			var res admin.ListResult
			h.call(c, "cache.list", admin.ListParams{DigestPrefix: d.String()}, &res)
			if want := p != skipped.String(); (len(res.Items) == 1) != want {
				t.Errorf("%s layer %s cached: %v, want %v", p, d, len(res.Items) == 1, want)
			}
		}
	}
	// A platform the index lacks fails the image, with the reason.
	h.call(c, "images.prefetch", admin.PrefetchParams{Images: []string{"registry.test/test/multi:v2"},
		Platforms: []string{"windows/amd64"}}, &sub)
	job := h.waitJob(c, sub.Job)
	if job.State != admin.StateFailed || !strings.Contains(job.Images[0].Error, "no image for windows/amd64") {
		t.Errorf("missing platform: %+v", job)
	}
}

func TestPrefetchFailures(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client()
	h.push("test/app", "v1", 1, 1024)
	var sub admin.PrefetchResult
	h.call(c, "images.prefetch", admin.PrefetchParams{Images: []string{"registry.test/test/app:v1", "registry.test/test/nope:v1"}}, &sub)
	job := h.waitJob(c, sub.Job)
	if job.State != admin.StateFailed || job.Images[0].State != admin.StateDone || job.Images[1].State != admin.StateFailed ||
		!strings.Contains(job.Images[1].Error, "404") {
		t.Errorf("job: %+v", job)
	}
	for _, bad := range []admin.PrefetchParams{{}, {Images: []string{"UPPER/case"}}, {Images: []string{"a"}, Platforms: []string{"linux"}}} {
		if e := callErr(t, c, "images.prefetch", bad); e.Code != admin.CodeInvalidParams {
			t.Errorf("prefetch %+v: %+v", bad, e)
		}
	}
	if e := callErr(t, c, "jobs.get", admin.JobParams{Job: "nope"}); e.Code != admin.CodeNotFound {
		t.Errorf("unknown job: %+v", e)
	}
	// An unknown registry is denied by the router, as for pulls: no
	// outbound connection.
	h.call(c, "images.prefetch", admin.PrefetchParams{Images: []string{"evil.example/x:1"}}, &sub)
	job = h.waitJob(c, sub.Job)
	if job.State != admin.StateFailed || !strings.Contains(job.Images[0].Error, "DENIED") {
		t.Errorf("unknown registry: %+v", job)
	}
}

func TestUpstreamsConfigPeers(t *testing.T) {
	h := newHarness(t, func(c *config.Config) {
		c.Upstreams["private.test"] = config.Upstream{URL: "https://private.test", Username: "u", Password: "hunter2"}
	})
	c := h.client()
	var ups []admin.Upstream
	h.call(c, "upstreams.list", nil, &ups)
	found := 0
	for _, u := range ups {
		switch u.Name {
		case "private.test":
			found++
			if !u.Auth || u.URL != "https://private.test" {
				t.Errorf("private.test: %+v", u)
			}
		case "registry.test":
			found++
			if u.Auth || u.URL != h.upstream.URL {
				t.Errorf("registry.test: %+v", u)
			}
		case "docker.io":
			if !u.Default {
				t.Errorf("docker.io not marked default")
			}
		}
	}
	if found != 2 || len(ups) != len(h.cfg.Upstreams) {
		t.Errorf("upstreams.list: %+v", ups)
	}

	var cfg map[string]any
	h.call(c, "config.get", nil, &cfg)
	ups2, _ := cfg["upstreams"].(map[string]any)
	priv, _ := ups2["private.test"].(map[string]any)
	if priv["password"] != "REDACTED" || priv["username"] != "u" {
		t.Errorf("config.get upstream: %v", priv)
	}
	adm, _ := cfg["admin"].(map[string]any)
	if cfg["tag_ttl"] != "1m0s" || cfg["max_disk"] != "20Gi" || adm["socket"] != h.socket {
		t.Errorf("config.get: %v", cfg)
	}

	var peers admin.Peers
	h.call(c, "peers.list", nil, &peers)
	if len(peers.Members) != 1 || peers.Members[0].State != "alive" || peers.Members[0].URL != h.url || peers.Note == "" {
		t.Errorf("peers.list: %+v", peers)
	}
}
