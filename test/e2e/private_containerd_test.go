package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// TestContainerdPrivate pulls a private image through berth with containerd
// as the kubelet drives it: `ctr --user` (the resolver and authorizer the
// CRI uses; in 2.x, the transfer service) and, in TestContainerdCRIPrivate,
// `crictl pull --creds` (the CRI image service itself, the pull secret's
// path). containerd sends credentials to the mirror only after berth's 401
// challenge. Once per containerd build.
func TestContainerdPrivate(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "htpasswd")
	forEachContainerd(t, func(t *testing.T, cb containerdBuild) { testContainerdPrivate(t, tools, cb) })
}

func testContainerdPrivate(t *testing.T, tools map[string]string, cb containerdBuild) {
	s := setupPrivate(t, tools)
	ctd := startContainerd(t, cb)
	hostsDir := filepath.Join(ctd.dir, "certs.d")
	runBerthCmd(t, "configure-containerd", "--config-path", hostsDir, "--mirror-url", s.b.URL,
		"--registry", "registry.test:5000=http://127.0.0.1:9", "--registry", "public.test=http://127.0.0.1:9")
	ref := "registry.test:5000/team/app:v1"
	pull := func(args ...string) (string, error) {
		return ctd.try(t, 2*time.Minute, append([]string{"images", "pull", "--hosts-dir", hostsDir, "--snapshotter", ctd.snapshotter}, args...)...)
	}

	if out, err := pull("public.test/lib/pub:v1"); err != nil {
		t.Fatalf("ctr pull of a public image: %v\n%s", err, out)
	}
	for _, l := range requestLines(t, s.b, "lib/pub") {
		if strings.Contains(l, `"status":401`) {
			t.Fatalf("a public image was challenged: %s", l)
		}
	}
	if out, err := pull(ref); err == nil {
		t.Fatalf("ctr pull of a private image without --user succeeded:\n%s", out)
	}
	if out, err := pull("--user", privUser+":wrong", ref); err == nil {
		t.Fatalf("ctr pull with a wrong password succeeded:\n%s", out)
	}
	out, err := pull("--user", privUser+":"+privPass, ref)
	if err != nil {
		t.Fatalf("ctr pull --user: %v\n%s", err, out)
	}
	if !cb.v2 && !strings.Contains(out, "done") { // 2.x: the transfer service's progress, no "done"
		t.Errorf("ctr pull output:\n%s", out)
	}
	checkChallengedThenServed(t, s.b, s.img)
	// Once berth has it cached: a containerd without the secret gets nothing.
	ctd.run(t, time.Minute, "images", "rm", "--sync", ref)
	for _, b := range append([]string{s.img.Digest}, s.img.Blobs()...) {
		_, _ = ctd.try(t, time.Minute, "content", "rm", b)
	}
	if out, err := pull(ref); err == nil {
		t.Fatalf("ctr pull without --user succeeded from berth's cache:\n%s", out)
	}
	off := s.priv.logSize(t)
	if out, err := pull("--user", privUser+":"+privPass, ref); err != nil {
		t.Fatalf("second ctr pull --user: %v\n%s", err, out)
	}
	n, lines := s.priv.requestsSince(t, off, "team/app")
	t.Logf("second ctr pull --user (cached, warm decision cache): %d upstream requests %q", n, lines)
	if n != 0 {
		t.Errorf("a cached pull with a warm decision cache went upstream %d times", n)
	}
	checkNoSecrets(t, s.b, privPass)
}

// TestContainerdCRIPrivate is the kubelet's path: the CRI image service of a
// containerd with the CRI plugin on, `crictl pull --creds` standing in for a
// pod's pull secret. Once per containerd build; 2.x's CRI plugin in its
// default mode, pulling through the transfer service.
func TestContainerdCRIPrivate(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "htpasswd", "crictl")
	forEachContainerd(t, func(t *testing.T, cb containerdBuild) { testContainerdCRIPrivate(t, tools, cb) })
}

func testContainerdCRIPrivate(t *testing.T, tools map[string]string, cb containerdBuild) {
	s := setupPrivate(t, tools)
	ctd, hostsDir := startCRIContainerd(t, cb)
	// The config this containerd runs with (version 2 for 1.6, 3 for 2.x)
	// names hostsDir where it reads it: configure-containerd has nothing to say.
	out := runBerthCmd(t, "configure-containerd", "--config-path", hostsDir, "--mirror-url", s.b.URL,
		"--registry", "registry.test:5000=http://127.0.0.1:9", "--containerd-config", filepath.Join(ctd.dir, "config.toml"))
	if strings.Contains(out, "warning") {
		t.Errorf("configure-containerd warns about a working containerd config:\n%s", out)
	}
	crictl := func(args ...string) (string, error) { return ctd.crictl(t, tools["crictl"], args...) }
	ref := "registry.test:5000/team/app:v1"
	if out, err := crictl("pull", ref); err == nil {
		t.Fatalf("crictl pull without credentials succeeded:\n%s", out)
	}
	if out, err := crictl("pull", "--creds", privUser+":wrong", ref); err == nil {
		t.Fatalf("crictl pull with a wrong password succeeded:\n%s", out)
	}
	out, err := crictl("pull", "--creds", privUser+":"+privPass, ref)
	if err != nil {
		t.Fatalf("crictl pull --creds: %v\n%s", err, out)
	}
	if !strings.Contains(out, "sha256:") {
		t.Errorf("crictl pull output: %s", out)
	}
	checkChallengedThenServed(t, s.b, s.img)
	ctd.checkTransferPulls(t)
	imgs, err := crictl("images", "--digests")
	if err != nil || !strings.Contains(imgs, "registry.test:5000/team/app") {
		t.Fatalf("crictl images: %v\n%s", err, imgs)
	}
	// Removed from containerd, cached in berth: without the secret, nothing.
	if out, err := crictl("rmi", ref); err != nil {
		t.Fatalf("crictl rmi: %v\n%s", err, out)
	}
	if out, err := crictl("pull", ref); err == nil {
		t.Fatalf("crictl pull without credentials succeeded from berth's cache:\n%s", out)
	}
	checkNoSecrets(t, s.b, privPass)
}

const criContainerdConfig = `version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  disable_cgroup = true
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = %q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
`

// startCRIContainerd starts a containerd with the CRI plugin on (TESTING.md
// "The kubelet's path into containerd") and returns it with its hosts
// directory.
func startCRIContainerd(t *testing.T, cb containerdBuild) (*containerd, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "cri")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{build: cb, ctr: cb.ctr, dir: dir, sock: filepath.Join(dir, "c.sock"), snapshotter: "overlayfs"}
	if sn := os.Getenv("BERTH_E2E_SNAPSHOTTER"); sn != "" {
		c.snapshotter = sn
	}
	hosts := filepath.Join(dir, "certs.d")
	for _, d := range []string{hosts, filepath.Join(dir, "cni-bin"), filepath.Join(dir, "cni-conf")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "config.toml")
	conf := fmt.Appendf(nil, criContainerdConfig, filepath.Join(dir, "root"), filepath.Join(dir, "state"),
		c.sock, c.sock+".ttrpc", filepath.Join(dir, "d.sock"), c.snapshotter, hosts,
		filepath.Join(dir, "cni-bin"), filepath.Join(dir, "cni-conf"))
	if cb.v2 {
		conf = fmt.Appendf(nil, criContainerdConfigV3, filepath.Join(dir, "root"), filepath.Join(dir, "state"),
			c.sock, c.sock+".ttrpc", filepath.Join(dir, "d.sock"), c.snapshotter, hosts,
			filepath.Join(dir, "cni-bin"), filepath.Join(dir, "cni-conf"), "linux/"+runtime.GOARCH, c.snapshotter)
	}
	if err := os.WriteFile(cfg, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "containerd.log")
	p, err := startProc(t, "containerd", logPath, "", testEnv(), cb.containerd, "--config", cfg, "--log-level", "debug")
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatal(err)
	}
	c.proc = p
	t.Cleanup(func() {
		p.stop(15 * time.Second)
		if t.Failed() {
			t.Logf("containerd (CRI) log (tail):\n%s", tailFile(logPath, 40))
		}
		unmountUnder(t, dir)
		_ = os.RemoveAll(dir)
	})
	if err := waitUnixSocket(p, c.sock, 30*time.Second); err != nil {
		t.Fatalf("containerd: %v\n%s", err, p.tail(30))
	}
	criOK := false
	for _, line := range strings.Split(c.run(t, time.Minute, "plugins", "ls"), "\n") {
		f := strings.Fields(line)
		criOK = criOK || (len(f) >= 4 && f[0] == "io.containerd.grpc.v1" && f[1] == "cri" && f[len(f)-1] == "ok")
	}
	if !criOK {
		t.Fatalf("the CRI plugin did not load:\n%s", tailFile(logPath, 30))
	}
	return c, hosts
}

// TestPrivateTokenUpstream: an upstream that wants a bearer token from its
// token service. berth still challenges its clients with Basic only, and
// exchanges the client's credentials for a token itself.
func TestPrivateTokenUpstream(t *testing.T) {
	tools := requireE2E(t, "crane", "skopeo", "containerd", "ctr")
	tok := newTokenUpstream(t)
	tok.addUser(privUser, privPass, "team/app")
	tok.addUser("carol", "carols-password", "carol/only")
	host := strings.TrimPrefix(tok.URL, "http://")
	img := pushAuthImage(t, host, "team/app", "v1", 2, authn.FromConfig(authn.AuthConfig{Username: privUser, Password: privPass}))
	b := startBerth(t, host, berthOptions{})
	s := &privateSetup{b: b}

	for name, hdr := range map[string]http.Header{
		"none": nil, "wrong password": basicHeader(privUser, "x"), "no grant for the repository": basicHeader("carol", "carols-password"),
	} {
		codes, content := s.get(t, "/v2/registry.test:5000/team/app", "", hdr, img)
		if !all(codes, http.StatusUnauthorized) || content {
			t.Errorf("%s: %v", name, codes)
		}
	}
	if codes, _ := s.get(t, "/v2/team/app", "?ns=registry.test", basicHeader(privUser, privPass), img); !all(codes, http.StatusOK) {
		t.Fatalf("right credentials: %v", codes)
	}
	home := t.TempDir()
	env := testEnv("HOME="+home, "DOCKER_CONFIG="+filepath.Join(home, ".docker"))
	if out, err := runTool(t, time.Minute, home, env, tools["crane"], "auth", "login", b.Addr, "-u", privUser, "-p", privPass); err != nil {
		t.Fatalf("crane auth login: %v\n%s", err, out)
	}
	if out, err := runTool(t, time.Minute, home, env, tools["crane"], "pull", "--insecure", b.Addr+"/team/app:v1", filepath.Join(home, "a.tar")); err != nil {
		t.Fatalf("crane pull through berth from a token upstream: %v\n%s", err, out)
	}
	for name, creds := range map[string]string{"no grant": "carol:carols-password", "wrong password": privUser + ":x"} {
		if out, err := runTool(t, time.Minute, home, env, tools["skopeo"], "copy", "--src-tls-verify=false", "--src-creds", creds,
			"docker://"+b.Addr+"/team/app:v1", "oci:"+filepath.Join(home, "denied")+":v1"); err == nil {
			t.Fatalf("skopeo copy, %s: succeeded\n%s", name, out)
		}
	}
	if out, err := runTool(t, time.Minute, home, env, tools["skopeo"], "copy", "--src-tls-verify=false", "--src-creds", privUser+":"+privPass,
		"docker://"+b.Addr+"/team/app:v1", "oci:"+filepath.Join(home, "oci")+":v1"); err != nil {
		t.Fatalf("skopeo copy through berth from a token upstream: %v\n%s", err, out)
	}
	// containerd, as for a pull secret.
	ctd := startContainerd(t, containerdBuild{name: "1.6", containerd: tools["containerd"], ctr: tools["ctr"]})
	hostsDir := filepath.Join(ctd.dir, "certs.d")
	runBerthCmd(t, "configure-containerd", "--config-path", hostsDir, "--mirror-url", b.URL, "--registry", "registry.test:5000=http://127.0.0.1:9")
	pull := func(args ...string) (string, error) {
		return ctd.try(t, 2*time.Minute, append([]string{"content", "fetch", "--hosts-dir", hostsDir}, args...)...)
	}
	if out, err := pull("--user", "carol:carols-password", "registry.test:5000/team/app:v1"); err == nil {
		t.Fatalf("ctr fetch with a user without a grant succeeded:\n%s", out)
	}
	if out, err := pull("--user", privUser+":"+privPass, "registry.test:5000/team/app:v1"); err != nil {
		t.Fatalf("ctr fetch --user through berth from a token upstream: %v\n%s", err, out)
	}
	checkNoSecrets(t, b, privPass, "carols-password")
}

// checkChallengedThenServed checks berth's request log: containerd was
// challenged (401) for the private repository, then every blob of im was
// served (200) to it for registry.test:5000 (named in ?ns=).
func checkChallengedThenServed(t *testing.T, b *berth, im image) {
	t.Helper()
	challenged := false
	served := map[string]bool{}
	for _, l := range requestLines(t, b, `"repo":"team/app"`) {
		if strings.Contains(l, `"status":401`) {
			challenged = true
		}
		if challenged && strings.Contains(l, `"upstream":"registry.test:5000"`) && strings.Contains(l, `"status":200`) {
			for _, bl := range im.Blobs() {
				if strings.Contains(l, `"GET"`) && strings.Contains(l, "/blobs/"+bl) {
					served[bl] = true
				}
			}
		}
	}
	if !challenged || len(served) != len(im.Blobs()) {
		t.Fatalf("berth's log: challenged %v, blobs served after the challenge %d of %d", challenged, len(served), len(im.Blobs()))
	}
}
