package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestPrefixPull: an upstream whose name has a port (registry.test:5000)
// cannot be named in a reference's path ("berth/registry.test:5000/team/app"
// does not parse), so it gets a prefix name (upstreams.NAME.prefix: corp),
// and crane, skopeo and oras pull berth/corp/team/app from it.
func TestPrefixPull(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "crane", "skopeo", "oras")
	reg := startRegistry(t, tools["docker-registry"])
	im := pushImage(t, tools["crane"], reg.Addr, "team/app", "v1", 2, true)
	dir := t.TempDir()
	b := startBerth(t, reg.Addr, berthOptions{Env: []string{"BERTH_CONFIG=" + prefixConfig(t, dir, "registry.test:5000", "corp")}})
	env := testEnv("HOME="+dir, "DOCKER_CONFIG="+filepath.Join(dir, ".docker"))
	run := func(tool string, args ...string) {
		t.Helper()
		if out, err := runTool(t, 2*time.Minute, dir, env, tools[tool], args...); err != nil {
			t.Fatalf("%s %v: %v\n%s", tool, args, err, out)
		}
	}
	// Without the prefix, the reference itself is refused by the client.
	if out, err := runTool(t, time.Minute, dir, env, tools["crane"], "pull", "--insecure",
		b.Addr+"/registry.test:5000/team/app:v1", filepath.Join(dir, "x.tar")); err == nil {
		t.Fatalf("crane pull of berth/registry.test:5000/… succeeded: the prefix is not needed after all?\n%s", out)
	}
	ref := b.Addr + "/corp/team/app:v1"
	run("crane", "pull", "--insecure", ref, filepath.Join(dir, "crane.tar"))
	run("skopeo", "copy", "--src-tls-verify=false", "docker://"+ref, "oci:"+filepath.Join(dir, "skopeo")+":v1")
	run("oras", "copy", "--from-plain-http", ref, "--to-oci-layout", filepath.Join(dir, "oras")+":v1")
	for _, blob := range im.Blobs() {
		if _, err := os.Stat(filepath.Join(dir, "oras", "blobs", "sha256", blob[len("sha256:"):])); err != nil {
			t.Errorf("oras copied no blob %s: %v", blob, err)
		}
	}
	// Every client went to registry.test:5000 by the prefix: berth logged
	// each blob under that upstream, and fetched it upstream once.
	served := berthPathRequests(t, b, "registry.test:5000", "team/app", "corp/team/app")
	for _, blob := range im.Blobs() {
		if served[blob] < 3 {
			t.Errorf("berth served blob %s by the prefix %d times, want 3 (crane, skopeo, oras)", blob, served[blob])
		}
		if n := reg.settledBlobGets(t, im.Repo, blob); n != 1 {
			t.Errorf("upstream blob %s fetched %d times, want 1", blob, n)
		}
	}
}
