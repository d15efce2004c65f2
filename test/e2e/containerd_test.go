package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestContainerdPull is issue 5's end-to-end check with the real runtime:
// `berth configure-containerd` writes the hosts.toml files, containerd (its
// CRI plugin disabled, everything in a temporary directory) pulls and unpacks
// through berth with `ctr images pull --hosts-dir`, a second pull after the
// image and its content are gone costs the upstream no blob request, and
// `--undo` puts the hosts directory back as it was.
//
// Each hosts.toml's `server` fallback is 127.0.0.1:9, where nothing listens:
// a pull that succeeds went through berth.
//
// It runs once per containerd build (containerdBuilds): Debian's 1.6 and
// the 2.x builds, whose ctr pulls through the transfer service.
func TestContainerdPull(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "crane")
	forEachContainerd(t, func(t *testing.T, cb containerdBuild) { testContainerdPull(t, tools, cb) })
}

func testContainerdPull(t *testing.T, tools map[string]string, cb containerdBuild) {
	reg := startRegistry(t, tools["docker-registry"])

	// Two images with their own content: one under a registry with a port
	// (docker media types), one standing in for Docker Hub (OCI types), both
	// held by the local registry.
	type pullCase struct {
		name string
		ref  string // as containerd names it
		ns   string // the registry containerd names in ?ns=
		im   image
	}
	cases := []*pullCase{
		{name: "registry.test:5000", ns: "registry.test:5000",
			im: pushImage(t, tools["crane"], reg.Addr, "test/app", "v1", 3, false)},
		{name: "docker.io", ns: "docker.io",
			im: pushImage(t, tools["crane"], reg.Addr, "library/app", "v1", 2, true)},
	}
	for _, c := range cases {
		c.ref = c.ns + "/" + c.im.Repo + ":" + c.im.Tag
	}

	// berth maps both to the local registry; docker.io overrides the built-in.
	b := startBerth(t, reg.Addr, berthOptions{Args: []string{"--upstream", "docker.io=http://" + reg.Addr}})

	ctd := startContainerd(t, cb)
	hostsDir := filepath.Join(ctd.dir, "certs.d")

	// An operator's own hosts.toml for docker.io: backed up, then restored.
	foreign := []byte("server = \"https://registry-1.docker.io\"\n\n[host.\"https://mirror.example.com\"]\n  capabilities = [\"pull\"]\n")
	if err := os.MkdirAll(filepath.Join(hostsDir, "docker.io"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostsDir, "docker.io", "hosts.toml"), foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshotTree(t, hostsDir)

	configure := []string{"configure-containerd", "--config-path", hostsDir, "--mirror-url", b.URL,
		"--registry", "registry.test:5000=http://127.0.0.1:9", "--registry", "docker.io=http://127.0.0.1:9"}
	out := runBerthCmd(t, configure...)
	for _, want := range []string{
		"backed up " + filepath.Join(hostsDir, "docker.io", "hosts.toml.berth-backup"),
		"written " + filepath.Join(hostsDir, "docker.io", "hosts.toml"),
		"written " + filepath.Join(hostsDir, "registry.test:5000", "hosts.toml"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("configure-containerd output lacks %q:\n%s", want, out)
		}
	}
	for _, c := range cases {
		p := filepath.Join(hostsDir, c.ns, "hosts.toml")
		hb, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`server = "http://127.0.0.1:9"`, `[host."` + b.URL + `"]`, `capabilities = ["pull", "resolve"]`} {
			if !strings.Contains(string(hb), want) {
				t.Errorf("%s lacks %q:\n%s", p, want, hb)
			}
		}
	}
	if out := runBerthCmd(t, configure...); strings.Contains(out, "written") || strings.Count(out, "unchanged") != 2 {
		t.Errorf("configure-containerd a second time is not a no-op:\n%s", out)
	}

	// The control: with the mirror unreachable too, containerd cannot pull,
	// so the pulls below that succeed went through berth.
	deadDir := filepath.Join(ctd.dir, "certs.dead")
	runBerthCmd(t, "configure-containerd", "--config-path", deadDir, "--mirror-url", "http://127.0.0.1:9",
		"--registry", "registry.test:5000=http://127.0.0.1:9")
	if out, err := ctd.try(t, time.Minute, "images", "pull", "--hosts-dir", deadDir, cases[0].ref); err == nil {
		t.Fatalf("ctr images pull %s succeeded with neither berth nor the registry reachable:\n%s", cases[0].ref, out)
	}

	// First pull: through berth, which fetches from the upstream.
	for _, c := range cases {
		t.Run("pull "+c.name, func(t *testing.T) {
			took := ctd.pull(t, hostsDir, c.ref)
			t.Logf("ctr images pull %s (snapshotter %s, unpacked) in %s", c.ref, ctd.snapshotter, took.Round(time.Millisecond))
			ctd.checkUnpacked(t, c.im)
			// containerd named the registry in ?ns=: berth resolved the
			// un-prefixed path to that upstream.
			served := berthRequests(t, b, c.ns, c.im.Repo)
			for _, blob := range c.im.Blobs() {
				if served[blob] == 0 {
					t.Errorf("berth's log has no GET of %s for upstream %s (?ns=%s) with status 200", blob, c.ns, c.ns)
				}
				if n := reg.settledBlobGets(t, c.im.Repo, blob); n != 1 {
					t.Errorf("upstream blob %s fetched %d times, want 1 (by berth)", blob, n)
				}
			}
		})
	}
	if t.Failed() {
		return
	}
	// Everything the upstream served went to berth, not to containerd.
	if lines := reg.linesWithout(t, "berth/"); len(lines) > 0 {
		t.Errorf("the upstream served %d request(s) that did not come from berth:\n%s", len(lines), strings.Join(lines, "\n"))
	}

	// Second pull after the images, their snapshots and content are gone:
	// the blobs come from berth's cache.
	upstreamBefore := map[string]int{}
	for _, c := range cases {
		ctd.removeImage(t, c.ref, c.im)
		upstreamBefore[c.im.Repo] = reg.allBlobGets(t, c.im.Repo)
	}
	for _, c := range cases {
		t.Run("pull again "+c.name, func(t *testing.T) {
			servedBefore := berthRequests(t, b, c.ns, c.im.Repo)
			took := ctd.pull(t, hostsDir, c.ref)
			t.Logf("second ctr images pull %s in %s", c.ref, took.Round(time.Millisecond))
			ctd.checkUnpacked(t, c.im)
			servedAfter := berthRequests(t, b, c.ns, c.im.Repo)
			for _, blob := range c.im.Blobs() {
				if servedAfter[blob] <= servedBefore[blob] {
					t.Errorf("containerd did not fetch %s from berth again (%d GETs before, %d after)", blob, servedBefore[blob], servedAfter[blob])
				}
			}
			reg.sync(t) // every request answered so far is logged
			if n := reg.allBlobGets(t, c.im.Repo) - upstreamBefore[c.im.Repo]; n != 0 {
				t.Errorf("second pull made %d upstream blob GET(s) for %s, want none (served from berth's cache)", n, c.im.Repo)
			}
		})
	}

	// --undo: berth's files go, the operator's file comes back.
	out = runBerthCmd(t, "configure-containerd", "--config-path", hostsDir, "--undo")
	for _, want := range []string{
		"restored " + filepath.Join(hostsDir, "docker.io", "hosts.toml"),
		"removed " + filepath.Join(hostsDir, "registry.test:5000", "hosts.toml"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("configure-containerd --undo output lacks %q:\n%s", want, out)
		}
	}
	if after := snapshotTree(t, hostsDir); !equalTrees(before, after) {
		t.Errorf("after --undo the hosts directory is\n%s\nwant it as before configure-containerd:\n%s", showTree(after), showTree(before))
	}
	if out := runBerthCmd(t, "configure-containerd", "--config-path", hostsDir, "--undo"); strings.TrimSpace(out) != "" {
		t.Errorf("a second --undo did something:\n%s", out)
	}
}

// runBerthCmd runs a berth subcommand that must succeed and returns its output.
func runBerthCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runTool(t, 30*time.Second, "", testEnv(), berthBin, args...)
	if err != nil {
		t.Fatalf("berth %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// berthRequests counts, per digest, the GETs of repo's blobs that berth
// logged as answered 200 for upstream. containerd asks a mirror for
// /v2/<repo>/blobs/… with ?ns=<registry>; berth's startup maps no default
// to these registries, so the upstream in the log line came from ?ns=.
func berthRequests(t *testing.T, b *berth, upstream, repo string) map[string]int {
	t.Helper()
	b.sync(t) // every request answered so far is logged
	counts := map[string]int{}
	prefix := "/v2/" + repo + "/blobs/"
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

// linesWithout returns the access log's request lines (those with an HTTP
// method) for /v2/<something> that lack s, except the readiness probe.
func (r *upstreamRegistry) linesWithout(t *testing.T, s string) []string {
	t.Helper()
	b, err := os.ReadFile(r.accessLog)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if !accessLineRE.MatchString(line) || strings.Contains(line, `"GET /v2/ HTTP/1.1"`) || strings.Contains(line, syncPathPrefix) {
			continue
		}
		// crane pushed and inspected the images before the test pulled.
		if strings.Contains(line, "go-containerregistry") && !strings.Contains(line, "berth/") {
			continue
		}
		if !strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

var accessLineRE = regexp.MustCompile(`"(GET|HEAD) /v2/\S+ HTTP/1\.1"`)

// ---------------------------------------------------------------------------
// containerd.

// containerd is a running containerd with everything in dir.
type containerd struct {
	*proc
	build       containerdBuild
	ctr         string
	dir         string // short: the socket paths must fit in sun_path
	sock        string
	snapshotter string // overlayfs when it works here, else native
}

const containerdConfig = `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
`

// startContainerd starts containerd in a fresh temporary directory, waits
// for its socket and stops it by its PID when the test ends (then unmounts
// anything left under its root and removes the directory).
func startContainerd(t *testing.T, cb containerdBuild) *containerd {
	t.Helper()
	// /tmp/ctdNNNN/c.sock.ttrpc stays far below sun_path's 108 bytes;
	// t.TempDir's path, named after the test, might not.
	dir, err := os.MkdirTemp("", "ctd")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{build: cb, ctr: cb.ctr, dir: dir, sock: filepath.Join(dir, "c.sock")}
	cfg := filepath.Join(dir, "config.toml")
	root := filepath.Join(dir, "root")
	tmpl := containerdConfig
	if cb.v2 {
		tmpl = containerdConfigV3 + unpackConfig()
	}
	if err := os.WriteFile(cfg, fmt.Appendf(nil, tmpl, root, filepath.Join(dir, "state"),
		c.sock, c.sock+".ttrpc", filepath.Join(dir, "d.sock")), 0o600); err != nil {
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
		if code := p.stop(15 * time.Second); code != 0 && !t.Failed() {
			t.Logf("containerd exited with code %d when stopped", code)
		}
		if t.Failed() {
			t.Logf("containerd log (tail):\n%s", tailFile(logPath, 40))
		}
		unmountUnder(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing containerd's directory: %v", err)
		}
	})
	if err := waitUnixSocket(p, c.sock, 30*time.Second); err != nil {
		t.Fatalf("containerd: %v\n%s", err, p.tail(30))
	}
	out := c.run(t, time.Minute, "version")
	if !strings.Contains(out, "Server:") {
		t.Fatalf("ctr version does not show the server:\n%s", out)
	}
	// Use overlayfs when containerd says it loaded (as on these machines);
	// native unpacks anywhere. BERTH_E2E_SNAPSHOTTER picks one.
	if sn := os.Getenv("BERTH_E2E_SNAPSHOTTER"); sn != "" {
		c.snapshotter = sn
		return c
	}
	c.snapshotter = "native"
	for _, line := range strings.Split(c.run(t, time.Minute, "plugins", "ls"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == "io.containerd.snapshotter.v1" && f[1] == "overlayfs" && f[len(f)-1] == "ok" {
			c.snapshotter = "overlayfs"
		}
	}
	return c
}

// waitUnixSocket waits until something accepts connections on path.
func waitUnixSocket(p *proc, path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited (code %d) before listening on %s", p.name, p.exitCode(), path)
		}
		if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = conn.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s after %s", path, d)
}

// run runs ctr against this containerd and returns its output; failure
// fails the test.
func (c *containerd) run(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	out, err := c.try(t, timeout, args...)
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// try runs ctr against this containerd and returns its output and error.
func (c *containerd) try(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	return runTool(t, timeout, c.dir, testEnv("HOME="+c.dir), c.ctr, append([]string{"--address", c.sock}, args...)...)
}

// pull pulls and unpacks ref with the hosts directory and returns how long
// it took.
func (c *containerd) pull(t *testing.T, hostsDir, ref string) time.Duration {
	t.Helper()
	t0 := time.Now()
	out := c.run(t, 2*time.Minute, "images", "pull", "--hosts-dir", hostsDir, "--snapshotter", c.snapshotter, ref)
	took := time.Since(t0)
	// ctr 2.x pulls through the transfer service, which prints progress
	// but no "unpacking" line: checkUnpacked looks at the snapshots instead.
	if !c.build.v2 && !regexp.MustCompile(`unpacking \S+ sha256:[0-9a-f]{64}\.\.\.\s*done`).MatchString(out) {
		t.Errorf("ctr images pull %s did not report unpacking:\n%s", ref, out)
	}
	if ls := c.run(t, time.Minute, "images", "ls", "-q"); !containsLine(ls, ref) {
		t.Errorf("ctr images ls does not list %s:\n%s", ref, ls)
	}
	return took
}

// checkUnpacked checks that every layer's file is in a snapshot of the
// image, with its size: containerd unpacked what berth served.
func (c *containerd) checkUnpacked(t *testing.T, im image) {
	t.Helper()
	snaps := filepath.Join(c.dir, "root", "io.containerd.snapshotter.v1."+c.snapshotter, "snapshots")
	found := map[string]int64{}
	err := filepath.WalkDir(snaps, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.HasSuffix(d.Name(), ".bin") {
			if fi, err := d.Info(); err == nil {
				found[d.Name()] = fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking the %s snapshots: %v", c.snapshotter, err)
	}
	for i := range im.Layers {
		// pushImage names each layer's one file after repo, tag and index.
		name := fmt.Sprintf("%s-%s-%d.bin", strings.ReplaceAll(im.Repo, "/", "_"), im.Tag, i)
		if size, ok := found[name]; !ok {
			t.Errorf("layer %d's file %s is in no %s snapshot: not unpacked", i, name, c.snapshotter)
		} else if want := int64(48<<10 + i*1000); size != want {
			t.Errorf("unpacked %s has %d bytes, want %d", name, size, want)
		}
	}
	if ls := c.run(t, time.Minute, "snapshots", "--snapshotter", c.snapshotter, "ls"); strings.Count(strings.TrimSpace(ls), "\n") < len(im.Layers) {
		t.Errorf("ctr snapshots ls lists fewer than %d snapshots:\n%s", len(im.Layers), ls)
	}
}

// removeImage removes ref, lets the garbage collector take its snapshots and
// content, removes any blob left, and checks that none of im's is there.
func (c *containerd) removeImage(t *testing.T, ref string, im image) {
	t.Helper()
	c.run(t, time.Minute, "images", "rm", "--sync", ref)
	for _, blob := range append([]string{im.Digest}, im.Blobs()...) {
		if _, err := c.try(t, time.Minute, "content", "get", blob); err == nil {
			c.run(t, time.Minute, "content", "rm", blob)
		}
	}
	ls := c.run(t, time.Minute, "content", "ls", "-q")
	for _, blob := range append([]string{im.Digest}, im.Blobs()...) {
		if containsLine(ls, blob) {
			t.Fatalf("blob %s is still in containerd's content store after removal:\n%s", blob, ls)
		}
	}
	if ls := c.run(t, time.Minute, "images", "ls", "-q"); containsLine(ls, ref) {
		t.Fatalf("%s is still listed after ctr images rm:\n%s", ref, ls)
	}
}

func containsLine(out, s string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == s {
			return true
		}
	}
	return false
}

// unmountUnder lazily unmounts whatever is still mounted below dir (an
// overlay snapshot mid-unpack when containerd was killed), deepest first.
func unmountUnder(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Logf("unmounting %s: %v", m, err)
		}
	}
}

// snapshotTree maps every file under dir (relative path) to its content,
// and every directory to "<dir>".
func snapshotTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			tree[rel] = "<dir>"
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		tree[rel] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func equalTrees(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func showTree(tree map[string]string) string {
	keys := make([]string, 0, len(tree))
	for k := range tree {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var s strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&s, "  %s: %s\n", k, truncate([]byte(tree[k]), 80))
	}
	return s.String()
}
