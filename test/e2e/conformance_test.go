package e2e

import (
	"bufio"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestConformance runs the OCI distribution-spec conformance tool in
// read-only mode against berth, with content pushed upstream beforehand.
func TestConformance(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "crane", "oci-conformance")
	reg := startRegistry(t, tools["docker-registry"])
	// One tag only: distribution 2.8 ignores tags/list's n and last, which
	// berth passes through, so with two tags the tool's `last` check fails
	// on the upstream's behalf. The tool accepts only OCI manifest types.
	im := pushImage(t, tools["crane"], reg.Addr, "test/app", "v1", 2, true)
	b := startBerth(t, reg.Addr, berthOptions{})

	dir := t.TempDir()
	repo := "registry.test/" + im.Repo
	env := testEnv(
		"HOME="+dir,
		"OCI_REGISTRY="+b.Addr,
		"OCI_TLS=disabled",
		"OCI_REPO1="+repo,
		"OCI_REPO2="+repo,
		"OCI_API_PUSH=false",
		"OCI_API_REFERRER=false",
		"OCI_API_BLOBS_DELETE=false",
		"OCI_API_MANIFESTS_DELETE=false",
		"OCI_API_TAGS_DELETE=false",
		"OCI_RO_DATA_TAGS="+im.Tag,
		"OCI_RO_DATA_MANIFESTS="+im.Digest,
		"OCI_RO_DATA_BLOBS="+strings.Join(im.Blobs(), " "),
		"OCI_RESULTS_DIR="+filepath.Join(dir, "results"),
		"OCI_LOG=warn",
	)
	t0 := time.Now()
	// It may crash writing its results after printing them: judge by stdout.
	out, runErr := runTool(t, 3*time.Minute, dir, env, tools["oci-conformance"])
	took := time.Since(t0)

	res, err := parseConformance(out)
	if err != nil {
		t.Fatalf("oci-conformance (exit: %v): %v\n%s", runErr, err, out)
	}
	t.Logf("oci-conformance in %s: %s (exit: %v)", took.Round(time.Millisecond), res.summary(), runErr)
	if res.counts["Pass"] == 0 {
		t.Fatalf("no conformance check passed:\n%s", out)
	}
	if res.counts["FAIL"]+res.counts["Error"] == 0 {
		return
	}
	t.Fatalf("conformance checks failed against berth:\n  %s\n\nfull output:\n%s", strings.Join(res.failures, "\n  "), out)
}

type conformanceResult struct {
	result   string         // the overall "OCI Conformance Result"
	counts   map[string]int // Disabled, Skip, Pass, FAIL, Error, Total
	failures []string       // failing leaf checks with their messages
}

func (r conformanceResult) summary() string {
	var parts []string
	for _, k := range []string{"Pass", "FAIL", "Error", "Skip", "Disabled", "Total"} {
		parts = append(parts, k+"="+strconv.Itoa(r.counts[k]))
	}
	return "result " + r.result + ": " + strings.Join(parts, " ")
}

var (
	conformanceCountRE  = regexp.MustCompile(`^\s+(Disabled|Skip|Pass|FAIL|Error|Total)\.+:\s+(\d+)$`)
	conformanceResultRE = regexp.MustCompile(`^OCI Conformance Result: (\S+)`)
	conformanceCheckRE  = regexp.MustCompile(`^\s*(OCI Conformance Test(?:/[^:]*)?): (\S+)$`)
)

// parseConformance reads the summary the tool prints on stdout: the tree of
// checks with their status (and error lines under failing leaves), then
// "OCI Conformance Result: …" and the counts.
func parseConformance(out string) (conformanceResult, error) {
	r := conformanceResult{counts: map[string]int{}}
	type check struct{ name, status, msg string }
	var checks []check
	inCounts := false
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := conformanceResultRE.FindStringSubmatch(line); m != nil {
			r.result, inCounts = m[1], true
			continue
		}
		if inCounts {
			if m := conformanceCountRE.FindStringSubmatch(line); m != nil {
				r.counts[m[1]], _ = strconv.Atoi(m[2])
				continue
			}
			inCounts = strings.TrimSpace(line) == "" && len(r.counts) == 0
			continue
		}
		if m := conformanceCheckRE.FindStringSubmatch(line); m != nil {
			checks = append(checks, check{name: m[1], status: m[2]})
			continue
		}
		if msg, ok := strings.CutPrefix(strings.TrimSpace(line), "- "); ok && len(checks) > 0 {
			c := &checks[len(checks)-1]
			c.msg = strings.TrimPrefix(c.msg+"; "+msg, "; ")
		}
	}
	for _, c := range checks {
		if c.status != "FAIL" && c.status != "Error" {
			continue
		}
		leaf := true
		for _, o := range checks {
			if strings.HasPrefix(o.name, c.name+"/") {
				leaf = false
				break
			}
		}
		if leaf {
			r.failures = append(r.failures, c.name+": "+c.status+": "+c.msg)
		}
	}
	if r.result == "" {
		return r, fmt.Errorf("no \"OCI Conformance Result\" line in its output")
	}
	if _, ok := r.counts["Total"]; !ok {
		return r, fmt.Errorf("no counts after the result line")
	}
	return r, nil
}
