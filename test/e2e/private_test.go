package e2e

import (
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

const (
	privUser = "alice"
	privPass = "Pr1vate-e2e-8c41f0"
)

func basicHeader(user, pass string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}}
}

// privateSetup is a private docker-registry (htpasswd: alice may pull
// everything, bob exists too), a public one under another name, and berth in
// front of both: registry.test and registry.test:5000 (the default) are the
// private registry, public.test the public one.
type privateSetup struct {
	priv, pub   *upstreamRegistry
	b           *berth
	img, pubImg image
}

func setupPrivate(t *testing.T, tools map[string]string, env ...string) *privateSetup {
	t.Helper()
	s := &privateSetup{}
	s.priv = startAuthRegistry(t, tools["docker-registry"], tools["htpasswd"], [2]string{privUser, privPass}, [2]string{"bob", "bobs-password"})
	s.pub = startRegistry(t, tools["docker-registry"])
	s.img = pushAuthImage(t, s.priv.Addr, "team/app", "v1", 2, authn.FromConfig(authn.AuthConfig{Username: privUser, Password: privPass}))
	s.pubImg = pushAuthImage(t, s.pub.Addr, "lib/pub", "v1", 1, nil)
	s.b = startBerth(t, s.priv.Addr, berthOptions{
		Args: []string{"--upstream", "public.test=http://" + s.pub.Addr, "--tag-ttl", "1h"},
		Env:  env,
	})
	return s
}

// get asks berth for every part of im under prefix (+query) and reports the
// statuses and whether any content byte came back.
func (s *privateSetup) get(t *testing.T, prefix, query string, hdr http.Header, im image) ([]int, bool) {
	t.Helper()
	var codes []int
	content := false
	paths := []string{prefix + "/manifests/" + im.Tag, prefix + "/manifests/" + im.Digest}
	for _, b := range im.Blobs() {
		paths = append(paths, prefix+"/blobs/"+b)
	}
	for _, p := range paths {
		h := http.Header{"Accept": {acceptAll}}
		for k, v := range hdr {
			h[k] = v
		}
		resp, body := do(t, http.MethodGet, s.b.URL+p+query, h)
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == http.StatusOK || !strings.Contains(string(body), `"errors"`) {
			content = true
		}
		if resp.StatusCode == http.StatusUnauthorized {
			if got := resp.Header.Values("Www-Authenticate"); len(got) != 1 || got[0] != `Basic realm="berth"` {
				t.Errorf("%s: 401 with challenge %q, want berth's own Basic", p, got)
			}
		}
	}
	return codes, content
}

func all(codes []int, want int) bool {
	for _, c := range codes {
		if c != want {
			return false
		}
	}
	return len(codes) > 0
}

// TestPrivateImages is issue 11 against the real registry and clients.
func TestPrivateImages(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "htpasswd", "crane", "skopeo")
	s := setupPrivate(t, tools)
	home := t.TempDir()
	env := testEnv("HOME="+home, "DOCKER_CONFIG="+filepath.Join(home, ".docker"))
	berthRef := s.b.Addr + "/team/app:v1" // default route: registry.test

	t.Run("public image without a challenge", func(t *testing.T) {
		codes, _ := s.get(t, "/v2/public.test/lib/pub", "", nil, s.pubImg)
		if !all(codes, http.StatusOK) {
			t.Fatalf("public image: %v", codes)
		}
		if out, err := runTool(t, time.Minute, home, env, tools["crane"], "pull", "--insecure", s.b.Addr+"/public.test/lib/pub:v1", filepath.Join(home, "pub.tar")); err != nil {
			t.Fatalf("crane pull of a public image: %v\n%s", err, out)
		}
		if out, err := runTool(t, time.Minute, home, env, tools["skopeo"], "copy", "--src-tls-verify=false",
			"docker://"+s.b.Addr+"/public.test/lib/pub:v1", "oci:"+filepath.Join(home, "pub-oci")+":v1"); err != nil {
			t.Fatalf("skopeo copy of a public image: %v\n%s", err, out)
		}
		for _, l := range requestLines(t, s.b, "") {
			if strings.Contains(l, "lib/pub") && strings.Contains(l, `"status":401`) {
				t.Fatalf("a public image was challenged: %s", l)
			}
		}
	})

	t.Run("no credentials: challenge, no content", func(t *testing.T) {
		codes, content := s.get(t, "/v2/team/app", "", nil, s.img)
		if !all(codes, http.StatusUnauthorized) || content {
			t.Fatalf("without credentials: %v", codes)
		}
		if out, err := runTool(t, time.Minute, home, env, tools["crane"], "pull", "--insecure", berthRef, filepath.Join(home, "x.tar")); err == nil {
			t.Fatalf("crane pull without credentials succeeded:\n%s", out)
		}
		if out, err := runTool(t, time.Minute, home, env, tools["skopeo"], "copy", "--src-tls-verify=false",
			"docker://"+berthRef, "oci:"+filepath.Join(home, "none")+":v1"); err == nil {
			t.Fatalf("skopeo copy without credentials succeeded:\n%s", out)
		}
	})

	t.Run("wrong credentials: no content", func(t *testing.T) {
		for _, h := range []http.Header{basicHeader(privUser, "wrong"), basicHeader("bob", "nope"), basicHeader("mallory", privPass)} {
			codes, content := s.get(t, "/v2/team/app", "", h, s.img)
			if !all(codes, http.StatusUnauthorized) || content {
				t.Fatalf("wrong credentials: %v", codes)
			}
		}
		if out, err := runTool(t, time.Minute, home, env, tools["skopeo"], "copy", "--src-tls-verify=false", "--src-creds", privUser+":wrong",
			"docker://"+berthRef, "oci:"+filepath.Join(home, "wrong")+":v1"); err == nil {
			t.Fatalf("skopeo copy with a wrong password succeeded:\n%s", out)
		}
	})

	t.Run("crane auth login", func(t *testing.T) {
		if out, err := runTool(t, time.Minute, home, env, tools["crane"], "auth", "login", s.b.Addr, "-u", privUser, "-p", privPass); err != nil {
			t.Fatalf("crane auth login: %v\n%s", err, out)
		}
		defer func() { _ = os.RemoveAll(filepath.Join(home, ".docker")) }()
		out, err := runTool(t, time.Minute, home, env, tools["crane"], "pull", "--insecure", berthRef, filepath.Join(home, "app.tar"))
		if err != nil {
			t.Fatalf("crane pull with credentials: %v\n%s", err, out)
		}
		dg, err := runTool(t, time.Minute, home, env, tools["crane"], "digest", "--insecure", berthRef)
		if err != nil || strings.TrimSpace(dg) != s.img.Digest {
			t.Fatalf("crane digest through berth: %q %v, want %s", dg, err, s.img.Digest)
		}
	})

	t.Run("skopeo login", func(t *testing.T) {
		authfile := filepath.Join(home, "auth.json")
		if out, err := runTool(t, time.Minute, home, env, tools["skopeo"], "login", "--tls-verify=false", "--authfile", authfile,
			"-u", privUser, "-p", privPass, s.b.Addr); err != nil {
			t.Fatalf("skopeo login: %v\n%s", err, out)
		}
		if out, err := runTool(t, time.Minute, home, env, tools["skopeo"], "copy", "--src-tls-verify=false", "--src-authfile", authfile,
			"docker://"+berthRef, "oci:"+filepath.Join(home, "app-oci")+":v1"); err != nil {
			t.Fatalf("skopeo copy with credentials: %v\n%s", err, out)
		}
		if out, err := runTool(t, time.Minute, home, env, tools["skopeo"], "copy", "--src-tls-verify=false", "--src-creds", privUser+":"+privPass,
			"docker://"+s.b.Addr+"/registry.test/team/app:v1", "oci:"+filepath.Join(home, "app-oci2")+":v1"); err != nil {
			t.Fatalf("skopeo copy --src-creds: %v\n%s", err, out)
		}
	})

	t.Run("cached content stays private", func(t *testing.T) {
		// Everything is in berth's cache now. A client without credentials,
		// or with a wrong password, gets nothing through any route.
		routes := []struct{ name, prefix, query string }{
			{"ns", "/v2/team/app", "?ns=registry.test:5000"},
			{"prefix", "/v2/registry.test:5000/team/app", ""},
			{"default", "/v2/team/app", ""},
		}
		for _, rt := range routes {
			for i, h := range []http.Header{nil, basicHeader(privUser, "wrong"), basicHeader("mallory", "x")} {
				codes, content := s.get(t, rt.prefix, rt.query, h, s.img)
				if content || !all(codes, http.StatusUnauthorized) {
					t.Errorf("%s route, client %d: %v", rt.name, i, codes)
				}
			}
			// docker-registry's htpasswd auth has no per-repository rules:
			// any user it knows may pull, so berth lets bob in too.
			if codes, _ := s.get(t, rt.prefix, rt.query, basicHeader("bob", "bobs-password"), s.img); !all(codes, http.StatusOK) {
				t.Errorf("%s route, bob (accepted upstream): %v", rt.name, codes)
			}
		}
		// The same digests through a public repository of another upstream.
		for _, dg := range append(s.img.Blobs(), s.img.Digest) {
			kind := "blobs"
			if dg == s.img.Digest {
				kind = "manifests"
			}
			for _, p := range []string{"/v2/public.test/lib/pub/" + kind + "/" + dg, "/v2/lib/pub/" + kind + "/" + dg + "?ns=public.test"} {
				resp, body := do(t, http.MethodGet, s.b.URL+p, http.Header{"Accept": {acceptAll}})
				if resp.StatusCode == http.StatusOK || !strings.Contains(string(body), `"errors"`) {
					t.Errorf("%s: %d, served private content", p, resp.StatusCode)
				}
			}
		}
		// And the rightful client still pulls.
		codes, _ := s.get(t, "/v2/team/app", "?ns=registry.test:5000", basicHeader(privUser, privPass), s.img)
		if !all(codes, http.StatusOK) {
			t.Errorf("right credentials after all that: %v", codes)
		}
	})

	t.Run("credentials are never kept", func(t *testing.T) {
		checkNoSecrets(t, s.b, privPass, base64.StdEncoding.EncodeToString([]byte(privUser+":"+privPass)), "bobs-password")
	})

	t.Run("decision cache bounds upstream requests", func(t *testing.T) {
		auth := basicHeader(privUser, privPass)
		off := s.priv.logSize(t)
		for range 3 {
			if codes, _ := s.get(t, "/v2/team/app", "?ns=registry.test:5000", auth, s.img); !all(codes, http.StatusOK) {
				t.Fatalf("warm pull: %v", codes)
			}
		}
		warm, lines := s.priv.requestsSince(t, off, "team/app")
		if warm != 0 {
			t.Errorf("3 cached pulls with a warm decision cache made %d upstream requests, want 0:\n%s", warm, strings.Join(lines, "\n"))
		}
		// A restart empties the decision cache; the store keeps the content,
		// the tag and the private marks.
		s.b.stop(15 * time.Second)
		s.b = startBerth(t, s.priv.Addr, berthOptions{DataDir: s.b.DataDir,
			Args: []string{"--upstream", "public.test=http://" + s.pub.Addr, "--tag-ttl", "1h"}})
		if codes, content := s.get(t, "/v2/team/app", "", nil, s.img); !all(codes, http.StatusUnauthorized) || content {
			t.Fatalf("after a restart, without credentials: %v", codes)
		}
		off = s.priv.logSize(t)
		if codes, _ := s.get(t, "/v2/team/app", "?ns=registry.test:5000", auth, s.img); !all(codes, http.StatusOK) {
			t.Fatalf("cold pull: %v", codes)
		}
		cold, lines := s.priv.requestsSince(t, off, "team/app")
		if cold != 1 {
			t.Errorf("a cached pull with a cold decision cache made %d upstream requests, want 1 (the access check):\n%s", cold, strings.Join(lines, "\n"))
		}
		t.Logf("upstream requests per cached pull of a private image (manifest by tag + by digest + %d blobs): warm decision cache %d, cold %d (%s)",
			len(s.img.Blobs()), warm, cold, strings.Join(lines, "; "))
		checkNoSecrets(t, s.b, privPass, base64.StdEncoding.EncodeToString([]byte(privUser+":"+privPass)), "bobs-password")
	})

}

// checkNoSecrets greps berth's data directory, log and metrics.
func checkNoSecrets(t *testing.T, b *berth, secrets ...string) {
	t.Helper()
	if hits := secretsIn(t, b.DataDir, secrets...); len(hits) > 0 {
		t.Errorf("credentials in the data directory: %v", hits)
	}
	logb, err := os.ReadFile(b.log)
	if err != nil {
		t.Fatal(err)
	}
	_, metrics := do(t, http.MethodGet, b.URL+"/metrics", nil)
	if !strings.Contains(string(metrics), "berth_auth_upstream_checks_total") {
		t.Errorf("/metrics lacks berth_auth_upstream_checks_total")
	}
	for _, sec := range secrets {
		if strings.Contains(string(logb), sec) {
			t.Errorf("credentials in berth's log")
		}
		if strings.Contains(string(metrics), sec) {
			t.Errorf("credentials in /metrics")
		}
	}
}

// requestLines are berth's "request" log lines (debug), optionally only
// those containing s.
func requestLines(t *testing.T, b *berth, s string) []string {
	t.Helper()
	var out []string
	for _, l := range b.logLines(t, "request") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}
