package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestContainerdCRIFallback is the promise of every hosts.toml berth writes:
// with berth up, the kubelet's pull (crictl through the CRI image service)
// goes through berth; with berth down, the next pull still succeeds, from the
// real registry named as the fallback `server`. Once per containerd build,
// 2.x in its default transfer-service mode.
func TestContainerdCRIFallback(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "crane", "crictl")
	forEachContainerd(t, func(t *testing.T, cb containerdBuild) { testContainerdCRIFallback(t, tools, cb) })
}

func testContainerdCRIFallback(t *testing.T, tools map[string]string, cb containerdBuild) {
	reg := startRegistry(t, tools["docker-registry"])
	viaBerth := pushImage(t, tools["crane"], reg.Addr, "test/app", "v1", 2, false)
	direct := pushImage(t, tools["crane"], reg.Addr, "test/other", "v1", 2, true)
	b := startBerth(t, reg.Addr, berthOptions{})
	ctd, hostsDir := startCRIContainerd(t, cb)
	runBerthCmd(t, "configure-containerd", "--config-path", hostsDir, "--mirror-url", b.URL,
		"--registry", "registry.test:5000=http://"+reg.Addr)
	pull := func(im image) time.Duration {
		t.Helper()
		t0 := time.Now()
		ref := "registry.test:5000/" + im.Repo + ":" + im.Tag
		if out, err := ctd.crictl(t, tools["crictl"], "pull", ref); err != nil {
			t.Fatalf("crictl pull %s: %v\n%s", ref, err, out)
		}
		return time.Since(t0)
	}

	took := pull(viaBerth)
	served := berthRequests(t, b, "registry.test:5000", viaBerth.Repo)
	for _, blob := range viaBerth.Blobs() {
		if served[blob] == 0 {
			t.Errorf("berth did not serve %s of %s: the pull did not go through berth", blob, viaBerth.Repo)
		}
	}
	if lines := reg.linesWithout(t, "berth/"); len(lines) > 0 {
		t.Errorf("with berth up, containerd went to the registry itself:\n%s", strings.Join(lines, "\n"))
	}
	t.Logf("crictl pull through berth: %s", took.Round(time.Millisecond))

	if code := b.stop(15 * time.Second); code != 0 {
		t.Fatalf("berth exited with code %d when stopped", code)
	}
	took = pull(direct)
	t.Logf("crictl pull with berth down (fallback to the registry): %s", took.Round(time.Millisecond))
	reg.sync(t)
	// containerd's own requests (its user agent, not berth's); it names the
	// registry in ?ns= to the fallback server too.
	lines := reg.linesWithout(t, "berth/")
	for _, blob := range direct.Blobs() {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, "GET /v2/"+direct.Repo+"/blobs/"+blob) && strings.Contains(l, `" 200 `) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("with berth down, the registry served blob %s of %s to containerd %d times, want 1", blob, direct.Repo, n)
		}
	}
	ctd.checkTransferPulls(t)
}
