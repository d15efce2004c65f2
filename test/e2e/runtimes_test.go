package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// containerdBuild is one containerd the containerd tests run against: Debian's
// 1.6 (containerd and ctr on PATH) and the 2.x builds `make deps` puts in
// bin/containerd-2.2/ (the pinned 2.2 release) and bin/containerd-2-latest/
// (the newest 2.x the Go module proxy served when deps ran).
type containerdBuild struct {
	name       string // subtest name: 1.6, 2.2, 2-latest
	containerd string
	ctr        string
	version    string // as `containerd --version` says it
	v2         bool   // containerd 2.x: config version 3, CRI pulls through the transfer service
}

// containerdBuildDirs maps a build's subtest name to its directory under
// bin/ ("" for the binaries on PATH).
var containerdBuildDirs = []struct{ name, dir string }{
	{"1.6", ""}, {"2.2", "containerd-2.2"}, {"2-latest", "containerd-2-latest"},
}

// containerdBuilds returns every containerd build to test. A missing one fails
// the test when BERTH_E2E=1 and skips it otherwise; BERTH_E2E_CONTAINERD
// (a comma-separated list of names such as 2.2) narrows the set.
func containerdBuilds(t *testing.T) []containerdBuild {
	t.Helper()
	only := map[string]bool{}
	for _, n := range strings.Split(os.Getenv("BERTH_E2E_CONTAINERD"), ",") {
		if n = strings.TrimSpace(n); n != "" {
			only[n] = true
		}
	}
	var builds []containerdBuild
	var missing []string
	for _, d := range containerdBuildDirs {
		if len(only) > 0 && !only[d.name] {
			continue
		}
		cb := containerdBuild{name: d.name}
		var err1, err2 error
		if d.dir == "" {
			cb.containerd, err1 = lookTool("containerd")
			cb.ctr, err2 = lookTool("ctr")
		} else {
			cb.containerd, err1 = lookToolIn(d.dir, "containerd")
			cb.ctr, err2 = lookToolIn(d.dir, "ctr")
		}
		if err1 != nil || err2 != nil {
			missing = append(missing, "containerd "+d.name)
			continue
		}
		out, err := exec.Command(cb.containerd, "--version").Output()
		if err != nil {
			t.Fatalf("%s --version: %v", cb.containerd, err)
		}
		f := strings.Fields(string(out))
		if len(f) < 3 {
			t.Fatalf("%s --version: %q", cb.containerd, out)
		}
		cb.version = f[2]
		cb.v2 = strings.HasPrefix(strings.TrimPrefix(cb.version, "v"), "2.")
		builds = append(builds, cb)
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("missing %s: run `make deps`", strings.Join(missing, ", "))
		if os.Getenv("BERTH_E2E") == "1" {
			t.Fatal(msg)
		}
		t.Log(msg + " (skipped)")
	}
	if len(builds) == 0 {
		t.Skip("no containerd to test")
	}
	return builds
}

// lookToolIn finds dir/name in a PATH directory or in the module's bin/.
func lookToolIn(dir, name string) (string, error) {
	for _, d := range append(filepath.SplitList(os.Getenv("PATH")), filepath.Join(moduleRoot, "bin")) {
		p := filepath.Join(d, dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s/%s not found", dir, name)
}

// forEachContainerd runs test once per containerd build, as a subtest named
// after it, and logs how long each took.
func forEachContainerd(t *testing.T, test func(t *testing.T, cb containerdBuild)) {
	t.Helper()
	for _, cb := range containerdBuilds(t) {
		t.Run(cb.name, func(t *testing.T) {
			t0 := time.Now()
			t.Logf("containerd %s (%s)", cb.version, cb.containerd)
			test(t, cb)
			t.Logf("containerd %s: %s", cb.version, time.Since(t0).Round(time.Millisecond))
		})
	}
}

// containerdConfigV3 is containerdConfig for containerd 2.x: the CRI plugin
// off, the transfer service (which `ctr images pull` uses by default in 2.x)
// unpacking for this platform with the snapshotter the test picks.
const containerdConfigV3 = `version = 3
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

// criContainerdConfigV3 is criContainerdConfig for containerd 2.x (TESTING.md
// "containerd 2.x"): config version 3, the hosts directory in the section the
// CRI image service reads (io.containerd.cri.v1.images), and the transfer
// service's unpack platform, without which a CRI pull in the default
// transfer-service mode fails with "no unpack platforms defined".
const criContainerdConfigV3 = `version = 3
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
[plugins.'io.containerd.cri.v1.images']
  snapshotter = %q
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = %q
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = [%q]
  conf_dir = %q
[plugins.'io.containerd.transfer.v1.local']
  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = %q
    snapshotter = %q
`

// unpackConfig is the transfer service's unpack platforms for a 2.x config
// with the CRI plugin off: ctr's pulls go through the transfer service, which
// unpacks only for a configured platform and snapshotter, and the snapshotter
// is picked once containerd runs.
func unpackConfig() string {
	var b strings.Builder
	b.WriteString("[plugins.'io.containerd.transfer.v1.local']\n")
	for _, sn := range []string{"overlayfs", "native"} {
		fmt.Fprintf(&b, "  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]\n    platform = %q\n    snapshotter = %q\n",
			"linux/"+runtime.GOARCH, sn)
	}
	return b.String()
}

// crictl runs crictl against c's CRI plugin.
func (c *containerd) crictl(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ep := "unix://" + c.sock
	return runTool(t, 2*time.Minute, c.dir, testEnv("HOME="+c.dir), bin,
		append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "60s"}, args...)...)
}

// checkTransferPulls checks, for containerd 2.x, that the CRI plugin pulled
// through the transfer service (its default since 2.1), not the local pull
// path: its debug log says which.
func (c *containerd) checkTransferPulls(t *testing.T) {
	t.Helper()
	if !c.build.v2 {
		return
	}
	b, err := os.ReadFile(c.log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "using transfer service") {
		t.Errorf("containerd %s's log does not say the CRI pull used the transfer service", c.build.version)
	}
}
