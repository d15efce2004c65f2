package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// referrersRegistry is a registry that serves the referrers API as the spec
// says. Debian's docker-registry (distribution 2.8) has no referrers API, and
// go-containerregistry's in-process registry ignores ?artifactType= and sends
// no OCI-Subject: this wraps the latter to filter, to say so in
// OCI-Filters-Applied, and to acknowledge a pushed subject, so that real
// clients (oras) take it for a registry with the API.
type referrersRegistry struct {
	*httptest.Server
	mu        sync.Mutex
	referrers map[string]int // GETs of /referrers/ by path and query
}

func startReferrersRegistry(t *testing.T) *referrersRegistry {
	t.Helper()
	reg := ggcr.New(ggcr.WithReferrersSupport(true), ggcr.Logger(log.New(io.Discard, "", 0)))
	rr := &referrersRegistry{referrers: map[string]int{}}
	rr.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/referrers/") && r.Method == http.MethodGet:
			rr.mu.Lock()
			rr.referrers[r.URL.Path+"?"+r.URL.RawQuery]++
			rr.mu.Unlock()
			rr.serveReferrers(w, r, reg)
		case strings.Contains(r.URL.Path, "/manifests/") && r.Method == http.MethodPut:
			body, _ := io.ReadAll(io.LimitReader(r.Body, 4<<20))
			var m struct {
				Subject *struct {
					Digest string `json:"digest"`
				} `json:"subject"`
			}
			if json.Unmarshal(body, &m) == nil && m.Subject != nil {
				w.Header().Set("OCI-Subject", m.Subject.Digest)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			reg.ServeHTTP(w, r)
		default:
			reg.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(rr.Close)
	return rr
}

func (rr *referrersRegistry) serveReferrers(w http.ResponseWriter, r *http.Request, reg http.Handler) {
	rec := httptest.NewRecorder()
	reg.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
		return
	}
	var idx map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &idx)
	want := r.URL.Query().Get("artifactType")
	repo := strings.TrimPrefix(r.URL.Path[:strings.Index(r.URL.Path, "/referrers/")], "/v2/")
	kept := []any{}
	ms, _ := idx["manifests"].([]any)
	for _, m := range ms {
		d, ok := m.(map[string]any)
		if !ok {
			continue
		}
		// The spec: a manifest's artifactType field, else its config's type
		// (go-containerregistry reads only the latter).
		if at := manifestArtifactType(reg, repo, d["digest"]); at != "" {
			d["artifactType"] = at
		}
		if want == "" || d["artifactType"] == want {
			kept = append(kept, d)
		}
	}
	idx["manifests"] = kept
	b, _ := json.Marshal(idx)
	w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
	if want != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	_, _ = w.Write(b)
}

// manifestArtifactType reads the artifactType field of a stored manifest.
func manifestArtifactType(reg http.Handler, repo string, dg any) string {
	s, _ := dg.(string)
	rec := httptest.NewRecorder()
	reg.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/"+repo+"/manifests/"+s, nil))
	var m struct {
		ArtifactType string `json:"artifactType"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &m)
	return m.ArtifactType
}

func (rr *referrersRegistry) gets(pathPrefix string) int {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	n := 0
	for k, v := range rr.referrers {
		if strings.HasPrefix(k, pathPrefix) {
			n += v
		}
	}
	return n
}

// TestReferrersWithOras: oras attaches a signature and an SBOM to an image
// with the referrers API; through berth, `oras discover` lists both with the
// referrers API, --artifact-type filters (OCI-Filters-Applied passed on), an
// image without referrers gets an empty index, and asking again within
// tag_ttl does not reach the upstream.
func TestReferrersWithOras(t *testing.T) {
	tools := requireE2E(t, "oras")
	up := startReferrersRegistry(t)
	upAddr := strings.TrimPrefix(up.URL, "http://")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	push := func(tag string) string {
		img, err := random.Image(1024, 1)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := name.ParseReference(upAddr+"/team/app:"+tag, name.Insecure)
		if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
			t.Fatal(err)
		}
		dg, _ := img.Digest()
		return dg.String()
	}
	signed, bare := push("v1"), push("v2")
	dir := t.TempDir()
	oras := func(args ...string) string {
		t.Helper()
		out, err := runTool(t, time.Minute, dir, testEnv("HOME="+dir), tools["oras"], args...)
		if err != nil {
			t.Fatalf("oras %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	if err := os.WriteFile(filepath.Join(dir, "sig.txt"), []byte("signature"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sbom.json"), []byte(`{"sbom":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	attach := func(artifactType, file string) {
		oras("attach", "--plain-http", "--distribution-spec", "v1.1-referrers-api", "--artifact-type", artifactType,
			upAddr+"/team/app@"+signed, file)
	}
	attach("application/vnd.test.signature", "sig.txt")
	attach("application/vnd.test.sbom", "sbom.json")

	b := startBerth(t, upAddr, berthOptions{Args: []string{"--tag-ttl", "1m"}})
	discover := func(ref string, extra ...string) []string {
		t.Helper()
		out := oras(append([]string{"discover", "--plain-http", "--distribution-spec", "v1.1-referrers-api", "--format", "json", ref}, extra...)...)
		var res struct {
			Referrers []struct {
				ArtifactType string `json:"artifactType"`
			} `json:"referrers"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("oras discover output: %v\n%s", err, out)
		}
		var types []string
		for _, r := range res.Referrers {
			types = append(types, r.ArtifactType)
		}
		return types
	}
	through := b.Addr + "/registry.test/team/app@"
	if got := discover(through + signed); len(got) != 2 {
		t.Fatalf("oras discover through berth: %v, want the signature and the SBOM", got)
	}
	if got := discover(through+signed, "--artifact-type", "application/vnd.test.sbom"); len(got) != 1 || got[0] != "application/vnd.test.sbom" {
		t.Errorf("--artifact-type through berth: %v", got)
	}
	if got := discover(through + bare); len(got) != 0 {
		t.Errorf("an image without referrers: %v", got)
	}
	resp, body := get(t, b.URL+"/v2/registry.test/team/app/referrers/"+signed+"?artifactType=application/vnd.test.signature", nil)
	if resp.StatusCode != 200 || resp.Header.Get("OCI-Filters-Applied") != "artifactType" || !strings.Contains(string(body), "application/vnd.test.signature") {
		t.Errorf("filtered GET: %d, OCI-Filters-Applied %q, %s", resp.StatusCode, resp.Header.Get("OCI-Filters-Applied"), body)
	}
	if resp, body := get(t, b.URL+"/v2/registry.test/team/app/referrers/"+bare, nil); resp.StatusCode != 200 || !strings.Contains(string(body), `"manifests":[]`) {
		t.Errorf("no referrers: %d %s; want 200 and an empty index", resp.StatusCode, body)
	}
	n := up.gets("/v2/team/app/referrers/")
	discover(through + signed)
	discover(through+signed, "--artifact-type", "application/vnd.test.sbom")
	if got := up.gets("/v2/team/app/referrers/") - n; got != 0 {
		t.Errorf("%d upstream referrers requests within tag_ttl, want 0", got)
	}
}
