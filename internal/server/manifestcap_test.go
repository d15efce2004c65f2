package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-mirror/berth/internal/cluster"
	"github.com/berth-mirror/berth/internal/config"
	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/peer"
)

// TestReloadOneManifestCap: max_manifest_bytes is one cap for /v2/, the
// peer API, manifests from peers and admin prefetch. A reload changes it in
// the one registry handler (the same object before and after: its gate and
// tags/list slots survive), and the cluster's fetcher and admin read that.
// A 3 MiB manifest an owner serves under the default 4 MiB cap is refused
// by an asking node whose cap a reload lowered to 2 MiB (before, peers were
// held to a fixed 8 MiB), and accepted after a reload raises it again.
func TestReloadOneManifestCap(t *testing.T) {
	reg := ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))
	up := httptest.NewServer(reg)
	defer up.Close()
	body := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%064x","size":2},"layers":[],`+
		`"annotations":{"pad":%q}}`, 0, strings.Repeat("x", 3<<20))
	dg := digest.FromBytes(body)
	putManifest(t, up.URL, "team/app", dg, body)

	a := startClusterServer(t, "a", up.URL, "")
	waitUntil(t, func() bool { return len(a.s.cluster.Members()) == 1 })
	b := startClusterServer(t, "b", up.URL, a.s.cluster.cfg.PeerBind)
	waitUntil(t, func() bool { return alive(a.s) == 2 && alive(b.s) == 2 })
	asker := a // the node that does not own the manifest
	if cluster.Owners(dg.String(), []cluster.Member{{Name: "a"}, {Name: "b"}})[0].Name == "a" {
		asker = b
	}

	limit := config.Size(4 << 20)
	asker.s.SetReloader(func() (config.Config, error) {
		next := asker.s.Config()
		next.MaxManifestBytes = limit
		return next, nil
	})
	v2 := asker.s.live.v2
	reload := func(to config.Size) {
		t.Helper()
		limit = to
		applied, _, err := asker.s.Reload(t.Context())
		if err != nil || !slices.Equal(applied, []string{"max_manifest_bytes"}) {
			t.Fatalf("reload to %v: applied %v, %v", to, applied, err)
		}
		if asker.s.live.v2 != v2 {
			t.Fatal("a reload replaced the registry handler")
		}
		if got := v2.Live().MaxManifestBytes; got != int64(to) {
			t.Fatalf("registry handler cap %d, want %d", got, int64(to))
		}
		if got := asker.s.maxManifestBytes(); got != int64(to) {
			t.Fatalf("cap given to the fetcher and admin: %d, want %d", got, int64(to))
		}
	}
	req := fetch.Request{Digest: dg, Registry: "registry.test", Repository: "team/app"}
	tooLarge := asker.s.cluster.pm.Fallbacks.WithLabelValues("too_large")

	reload(2 << 20)
	if _, _, err := asker.s.cluster.fetcher.Manifest(t.Context(), req, ""); !errors.Is(err, peer.ErrNoPeer) {
		t.Fatalf("3 MiB manifest from a peer under a 2 MiB cap: %v, want ErrNoPeer", err)
	}
	if v := testutil.ToFloat64(tooLarge); v < 1 {
		t.Errorf("fallbacks{too_large} = %v: the peer's manifest was not refused by the cap", v)
	}
	if code := getManifest(t, asker.url, dg); code == http.StatusOK {
		t.Errorf("/v2/ served a 3 MiB manifest under a 2 MiB cap")
	}

	reload(4 << 20)
	got, _, err := asker.s.cluster.fetcher.Manifest(t.Context(), req, "")
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("3 MiB manifest from a peer under a 4 MiB cap: %d bytes, %v", len(got), err)
	}
	if code := getManifest(t, asker.url, dg); code != http.StatusOK {
		t.Errorf("/v2/ GET of a 3 MiB manifest under a 4 MiB cap: %d", code)
	}
}

func putManifest(t *testing.T, base, repo string, dg digest.Digest, body []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, base+"/v2/"+repo+"/manifests/"+dg.String(), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push manifest: %s", resp.Status)
	}
}

func getManifest(t *testing.T, base string, dg digest.Digest) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/v2/registry.test/team/app/manifests/"+dg.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
