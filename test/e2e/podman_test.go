package e2e

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPodmanPull: `berth configure-registries` writes the registries.conf.d
// drop-in, and podman (the Debian package; CRI-O and buildah read the same
// file through containers/image) pulls a public image and a private one
// through berth. The private pull needs credentials for the mirror's location
// in an auth file: containers/image does not send --creds (nor CRI-O a pod's
// pull secret) to a mirror, which the test checks too. The private
// registry's name has a port, so its mirror is berth's prefix name for it
// (upstreams.registry.test:5000.prefix: corp). Each registry's own location
// (registry.test:5000, public.test) resolves nowhere: a pull that succeeds
// went through berth.
func TestPodmanPull(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "htpasswd", "podman")
	home, err := os.MkdirTemp("", "podman")
	if err != nil {
		t.Fatal(err)
	}
	s := setupPrivate(t, tools, "BERTH_CONFIG="+prefixConfig(t, home, "registry.test:5000", "corp"))
	t.Cleanup(func() {
		unmountUnder(t, home)
		_ = os.RemoveAll(home)
	})
	// containers/image reads $HOME/.config/containers/registries.conf.d
	// besides /etc/containers/registries.conf.d: the test leaves /etc alone.
	dropIn := filepath.Join(home, ".config", "containers", "registries.conf.d", "50-berth.conf")
	out := runBerthCmd(t, "configure-registries", "--file", dropIn, "--mirror-url", s.b.URL,
		"--registry", "public.test=http://127.0.0.1:9", "--registry", "registry.test:5000=http://127.0.0.1:9",
		"--prefix", "registry.test:5000=corp")
	if !strings.Contains(out, "written "+dropIn) {
		t.Fatalf("configure-registries output:\n%s", out)
	}
	conf, err := os.ReadFile(dropIn)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`location = "registry.test:5000"`, `location = "` + s.b.Addr + `/corp"`, `location = "` + s.b.Addr + `/public.test"`} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("the drop-in lacks %s:\n%s", want, conf)
		}
	}
	podman := func(args ...string) (string, error) {
		return runTool(t, 3*time.Minute, home, testEnv("HOME="+home), tools["podman"], append([]string{
			"--root", filepath.Join(home, "root"), "--runroot", filepath.Join(home, "run"),
			"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
		}, args...)...)
	}

	if out, err := podman("pull", "public.test/lib/pub:v1"); err != nil {
		t.Fatalf("podman pull of a public image: %v\n%s", err, out)
	}
	served := berthPathRequests(t, s.b, "public.test", "lib/pub", "public.test/lib/pub")
	for _, blob := range s.pubImg.Blobs() {
		if served[blob] == 0 {
			t.Errorf("berth did not serve blob %s of public.test/lib/pub to podman", blob)
		}
	}
	ref := "registry.test:5000/team/app:v1"
	if out, err := podman("pull", ref); err == nil {
		t.Fatalf("podman pull of a private image without --creds succeeded:\n%s", out)
	}
	// containers/image never sends --creds (the primary registry's
	// credentials, also how CRI-O passes a pod's pull secret) to a mirror:
	// the pull fails at berth's challenge.
	if out, err := podman("pull", "--creds", privUser+":"+privPass, ref); err == nil {
		t.Fatalf("podman pull --creds succeeded: containers/image sent the credentials to the mirror after all; update the docs:\n%s", out)
	}
	// Credentials for the mirror's location, in an auth file (CRI-O: its
	// global_auth_file), are sent.
	if out, err := podman("pull", "--authfile", mirrorAuthFile(t, home, "wrong.json", s.b.Addr+"/corp", privUser, "wrong"), ref); err == nil {
		t.Fatalf("podman pull with a wrong password succeeded:\n%s", out)
	}
	if out, err := podman("pull", "--authfile", mirrorAuthFile(t, home, "auth.json", s.b.Addr+"/corp", privUser, privPass), ref); err != nil {
		t.Fatalf("podman pull --authfile (credentials for berth's %s/corp): %v\n%s", s.b.Addr, err, out)
	}
	checkChallengedThenServed(t, s.b, s.img)
	if out, err := podman("image", "exists", ref); err != nil {
		t.Errorf("podman image exists %s: %v\n%s", ref, err, out)
	}
	checkNoSecrets(t, s.b, privPass)

	out = runBerthCmd(t, "configure-registries", "--file", dropIn, "--undo")
	if !strings.Contains(out, "removed "+dropIn) {
		t.Errorf("configure-registries --undo output:\n%s", out)
	}
	if _, err := os.Stat(dropIn); !os.IsNotExist(err) {
		t.Errorf("the drop-in is still there after --undo: %v", err)
	}
}

// prefixConfig writes a berth config file in dir that gives upstream the
// prefix; startBerth's --upstream flags set its URL and keep the prefix.
func prefixConfig(t *testing.T, dir, upstream, prefix string) string {
	t.Helper()
	p := filepath.Join(dir, "berth.yaml")
	if err := os.WriteFile(p, []byte("upstreams:\n  "+upstream+": {url: http://127.0.0.1:9, prefix: "+prefix+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// berthPathRequests is berthRequests for a client that names the repository
// under a prefix in the path (/v2/<pathRepo>/blobs/…): the GETs berth
// answered 200 for upstream and repo, by digest.
func berthPathRequests(t *testing.T, b *berth, upstream, repo, pathRepo string) map[string]int {
	t.Helper()
	b.sync(t)
	counts := map[string]int{}
	prefix := "/v2/" + pathRepo + "/blobs/"
	for _, line := range b.logLines(t, "request") {
		var e struct {
			Upstream, Repo, Method, Path string
			Status                       int
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("berth log line: %v: %s", err, line)
		}
		if e.Upstream == upstream && e.Repo == repo && e.Method == "GET" && e.Status == 200 && strings.HasPrefix(e.Path, prefix) {
			counts[strings.TrimPrefix(e.Path, prefix)]++
		}
	}
	return counts
}

// mirrorAuthFile writes a containers-auth.json(5) with user's credentials for
// key (a host or host/namespace) and returns its path.
func mirrorAuthFile(t *testing.T, dir, name, key, user, pass string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"auths": map[string]any{key: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}}})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
