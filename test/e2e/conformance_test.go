package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestConformance runs the OCI distribution-spec conformance tool in
// read-only mode against berth, with content pushed upstream beforehand: once
// for an OCI image and once for a Docker-v2-typed one (the tool asks for
// manifests with an OCI-only Accept, which berth must not pass upstream).
// Every check the tool runs must pass, its summary must be complete, and it
// must exit 0, except for its one known crash after the summary.
func TestConformance(t *testing.T) {
	tools := requireE2E(t, "docker-registry", "crane", "oci-conformance")
	reg := startRegistry(t, tools["docker-registry"])
	b := startBerth(t, reg.Addr, berthOptions{})
	for _, tc := range []struct {
		name, repo string
		oci        bool
		wantType   string
	}{
		{"OCI", "test/app", true, "application/vnd.oci.image.manifest.v1+json"},
		// crane append without --oci-empty-base pushes Docker v2 types.
		{"DockerV2", "test/docker", false, "application/vnd.docker.distribution.manifest.v2+json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One tag per repository: distribution 2.8 ignores tags/list's
			// n and last, which berth passes through, so with two tags the
			// tool's `last` check fails on the upstream's behalf.
			im := pushImage(t, tools["crane"], reg.Addr, tc.repo, "v1", 2, tc.oci)
			if im.MediaType != tc.wantType {
				t.Fatalf("pushed %s as %s, want %s", tc.repo, im.MediaType, tc.wantType)
			}
			runConformance(t, tools["oci-conformance"], b.Addr, im)
		})
	}
}

func runConformance(t *testing.T, tool, berthAddr string, im image) {
	t.Helper()
	dir := t.TempDir()
	repo := "registry.test/" + im.Repo
	env := testEnv(
		"HOME="+dir,
		"OCI_REGISTRY="+berthAddr,
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
	stdout, stderr, runErr := runSplit(t, 3*time.Minute, dir, env, tool)
	took := time.Since(t0)
	res, err := parseConformance(stdout)
	if err != nil {
		t.Fatalf("oci-conformance (exit: %v): %v\nstdout:\n%s\nstderr:\n%s", runErr, err, stdout, stderr)
	}
	t.Logf("oci-conformance in %s: %s (exit: %v)", took.Round(time.Millisecond), res.summary(), runErr)
	if n := res.counts["FAIL"] + res.counts["Error"]; n > 0 || res.result != "Pass" {
		t.Fatalf("conformance checks failed against berth (result %s):\n  %s\n\nfull output:\n%s", res.result, strings.Join(res.failures, "\n  "), stdout)
	}
	if res.counts["Pass"] == 0 {
		t.Fatalf("no conformance check passed:\n%s", stdout)
	}
	if runErr != nil && !knownResultsCrash(stderr) {
		t.Fatalf("oci-conformance exited with %v after a passing summary, not by its known crash writing results:\n%s", runErr, stderr)
	}
}

// knownResultsCrash recognises the tool's crash while writing its results
// file in read-only mode, which happens after it printed its summary: a
// panic whose stack is in ReportResultsYAML, and nothing else.
func knownResultsCrash(stderr string) bool {
	return strings.Contains(stderr, "panic: runtime error: invalid memory address or nil pointer dereference") &&
		strings.Contains(stderr, "main.(*runner).ReportResultsYAML(")
}

// runSplit runs a tool with its stdout and stderr kept apart.
func runSplit(t *testing.T, timeout time.Duration, dir string, env []string, bin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env, cmd.WaitDelay = dir, env, 5*time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, fmt.Errorf("%s timed out after %s", filepath.Base(bin), timeout))
	}
	return stdout.String(), stderr.String(), err
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
	sum := 0
	for _, k := range []string{"Disabled", "Skip", "Pass", "FAIL", "Error"} {
		n, ok := r.counts[k]
		if !ok {
			return r, fmt.Errorf("summary incomplete: no %s count", k)
		}
		sum += n
	}
	if total, ok := r.counts["Total"]; !ok || total != sum {
		return r, fmt.Errorf("summary incomplete: Total %d (present %v) is not the sum of the counts, %d", total, ok, sum)
	}
	return r, nil
}

// TestParseConformance: the judge of the tool's output refuses a missing or
// incomplete summary, failures, and an exit that is not the known crash.
func TestParseConformance(t *testing.T) {
	const counts = "OCI Conformance Result: %s\n  Disabled......: 13\n  Skip....: 0\n  Pass....: %d\n  FAIL....: %d\n  Error...: 0\n  Total...: %d\n"
	tests := []struct {
		name    string
		out     string
		wantErr bool
		wantOK  bool
	}{
		{"complete, passing", fmt.Sprintf(counts, "Pass", 16, 0, 29), false, true},
		{"failing", fmt.Sprintf(counts, "FAIL", 14, 2, 29), false, false},
		{"no summary", "OCI Conformance Test/read-only: Pass\n", true, false},
		{"cut short", "OCI Conformance Result: Pass\n  Disabled......: 13\n  Skip....: 0\n  Pass....: 16\n", true, false},
		{"counts do not add up", fmt.Sprintf(counts, "Pass", 10, 0, 29), true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := parseConformance(tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if ok := err == nil && res.result == "Pass" && res.counts["FAIL"]+res.counts["Error"] == 0; ok != tt.wantOK {
				t.Errorf("passing = %v, want %v", ok, tt.wantOK)
			}
		})
	}
	crash := "panic: runtime error: invalid memory address or nil pointer dereference\n\ngoroutine 1 [running]:\nmain.(*runner).ReportResultsYAML(0x0)\n"
	if !knownResultsCrash(crash) || knownResultsCrash("panic: something else\nmain.mainRun()\n") || knownResultsCrash("") {
		t.Error("knownResultsCrash accepts another exit, or refuses the known crash")
	}
}
