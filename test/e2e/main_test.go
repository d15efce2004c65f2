package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	// berthBin is the binary TestMain built, empty if it could not.
	berthBin string
	// buildErr says why berthBin is empty.
	buildErr error
	// moduleRoot is the directory of berth's go.mod.
	moduleRoot string
)

func TestMain(m *testing.M) {
	flag.Parse()
	var tmp string
	if !testing.Short() {
		tmp, berthBin, buildErr = buildBerth()
	}
	code := m.Run()
	if tmp != "" {
		_ = os.RemoveAll(tmp)
	}
	os.Exit(code)
}

// buildBerth builds ./cmd/berth once for the whole test binary. With
// BERTH_E2E_RACE=1 the binary is built with the race detector; with
// BERTH_E2E_BIN=/path/to/berth that binary is tested instead.
func buildBerth() (dir, bin string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", "", fmt.Errorf("not inside berth's module (go env GOMOD = %q)", gomod)
	}
	moduleRoot = filepath.Dir(gomod)
	if bin := os.Getenv("BERTH_E2E_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", "", fmt.Errorf("BERTH_E2E_BIN: %w", err)
		}
		return "", bin, nil
	}
	dir, err = os.MkdirTemp("", "berth-e2e-bin-")
	if err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "berth")
	args := []string{"build", "-o", bin}
	if os.Getenv("BERTH_E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/berth")...)
	cmd.Dir = moduleRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return dir, "", fmt.Errorf("go build ./cmd/berth: %w\n%s", err, out)
	}
	return dir, bin, nil
}

// requireE2E skips the test under -short, fails it if berth did not build,
// and returns the paths of the named tools. A missing tool fails the test
// when BERTH_E2E=1 and skips it otherwise.
func requireE2E(t *testing.T, tools ...string) map[string]string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	if buildErr != nil {
		t.Fatalf("building berth: %v", buildErr)
	}
	paths := map[string]string{}
	var missing []string
	for _, name := range tools {
		p, err := lookTool(name)
		if err != nil {
			missing = append(missing, name)
			continue
		}
		paths[name] = p
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("missing %s (not on PATH nor in %s): run `make deps`",
			strings.Join(missing, ", "), filepath.Join(moduleRoot, "bin"))
		if os.Getenv("BERTH_E2E") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return paths
}

// lookTool finds a tool on PATH or in the module's bin/ (where `make deps`
// puts crane and oci-conformance).
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := filepath.Join(moduleRoot, "bin", name)
	if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
		return p, nil
	}
	return "", fmt.Errorf("%s not found", name)
}
