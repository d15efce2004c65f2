package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSkopeoAndCranePull pulls multi-layer images through berth with the real
// clients, checks that what berth serves is byte for byte what the upstream
// holds, and that a second pull is served without going upstream for blobs.
func TestSkopeoAndCranePull(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "crane", "skopeo")
	reg := startRegistry(t, tools["docker-registry"])
	b := startBerth(t, reg.Addr, berthOptions{})

	for _, tc := range []struct {
		name, tag string
		oci       bool
	}{
		{"docker media types", "v1", false},
		{"OCI media types", "oci", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im := pushImage(t, tools["crane"], reg.Addr, "test/app", tc.tag, 3, tc.oci)
			ref := b.Addr + "/registry.test/" + im.Repo + ":" + im.Tag
			dir := t.TempDir()
			pull := func(round int) {
				t.Helper()
				layout := filepath.Join(dir, "oci-"+string(rune('0'+round)))
				skopeo(t, tools["skopeo"], dir, "copy", "--src-tls-verify=false", "docker://"+ref, "oci:"+layout+":"+im.Tag)
				for _, l := range im.Layers {
					if _, err := os.Stat(filepath.Join(layout, "blobs", "sha256", strings.TrimPrefix(l, "sha256:"))); err != nil {
						t.Errorf("skopeo's layout lacks layer %s: %v", l, err)
					}
				}
				out := filepath.Join(dir, "crane-"+string(rune('0'+round))+".tar")
				if o, err := runTool(t, 2*time.Minute, dir, testEnv("HOME="+dir), tools["crane"], "pull", "--insecure", ref, out); err != nil {
					t.Fatalf("crane pull %s: %v\n%s", ref, err, o)
				}
				if st, err := os.Stat(out); err != nil || st.Size() == 0 {
					t.Fatalf("crane pull wrote no tarball: %v", err)
				}
			}

			pull(1)
			if tc.oci {
				// A client that accepts only OCI types (as containerd and the
				// conformance tool may) gets the OCI manifest.
				resp, body := get(t, b.URL+"/v2/registry.test/"+im.Repo+"/manifests/"+im.Tag, http.Header{"Accept": {
					"application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
				}})
				if dg := resp.Header.Get("Docker-Content-Digest"); dg != im.Digest || sha256Digest(body) != im.Digest {
					t.Errorf("OCI-only Accept: Docker-Content-Digest %s, body %s, want %s", dg, sha256Digest(body), im.Digest)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.oci.image.manifest.v1+json" {
					t.Errorf("OCI-only Accept: Content-Type %q", ct)
				}
			}
			dg, _ := getManifest(t, b, im.Repo, im.Tag)
			if dg != im.Digest {
				t.Errorf("berth serves manifest %s for %s, the upstream says %s (crane digest)", dg, im.Tag, im.Digest)
			}
			if dg2, _ := getManifest(t, b, im.Repo, im.Digest); dg2 != im.Digest {
				t.Errorf("manifest by digest: berth serves %s, want %s", dg2, im.Digest)
			}
			for _, blob := range im.Blobs() {
				checkBlob(t, b, im.Repo, blob)
				if n := reg.settledBlobGets(t, im.Repo, blob); n != 1 {
					t.Errorf("blob %s was fetched upstream %d times, want exactly 1", blob, n)
				}
			}

			before := reg.allBlobGets(t, im.Repo)
			pull(2)
			reg.sync(t) // every request answered so far is logged
			if after := reg.allBlobGets(t, im.Repo); after != before {
				t.Errorf("second pull fetched %d blob(s) upstream, want none (served from the cache)", after-before)
			}

			// containerd's mirror mode names the registry in ?ns=: the same
			// content, and the blobs still come from the cache.
			ns := "?ns=registry.test%3A5000"
			resp, body := get(t, b.URL+"/v2/"+im.Repo+"/manifests/"+im.Tag+ns, http.Header{"Accept": {acceptAll}})
			if dg := resp.Header.Get("Docker-Content-Digest"); dg != im.Digest || sha256Digest(body) != im.Digest {
				t.Errorf("manifest with ?ns=: Docker-Content-Digest %s, body %s, want %s", dg, sha256Digest(body), im.Digest)
			}
			for _, blob := range im.Blobs() {
				_, body := get(t, b.URL+"/v2/"+im.Repo+"/blobs/"+blob+ns, nil)
				if sha256Digest(body) != blob {
					t.Errorf("blob %s with ?ns=: body hashes to %s", blob, sha256Digest(body))
				}
			}
			reg.sync(t)
			if after := reg.allBlobGets(t, im.Repo); after != before {
				t.Errorf("blobs asked for with ?ns= were fetched upstream again (%d GETs)", after-before)
			}
		})
	}
}

// skopeo runs skopeo with an isolated HOME and no signature policy.
func skopeo(t *testing.T, bin, dir string, args ...string) {
	t.Helper()
	args = append([]string{"--insecure-policy"}, args...)
	if out, err := runTool(t, 2*time.Minute, dir, testEnv("HOME="+dir), bin, args...); err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
