package deploy

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// dockerBuildCommand is the Dockerfile's build step, word for word;
// TestStaticBinary runs the same command.
const dockerBuildCommand = `CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /berth ./cmd/berth`

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{
		"FROM golang:${GO_VERSION} AS build",
		"ARG GO_VERSION=1.26",
		"\nFROM scratch\n",
		dockerBuildCommand,
		"COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
		"\nUSER 65532:65532\n",
		"\nEXPOSE 5000\n",
		`CMD ["/berth","health"]`,
		`ENTRYPOINT ["/berth"]`,
		`CMD ["serve"]`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// The last stage is the one shipped: it must be scratch and non-root.
	last := s[strings.LastIndex(s, "\nFROM "):]
	if !strings.HasPrefix(last, "\nFROM scratch") || strings.Contains(last, "USER root") || strings.Contains(last, "USER 0") {
		t.Error("final stage must be FROM scratch with a non-root USER")
	}
}

// TestStaticBinary builds berth as the Dockerfile does and checks that it runs
// on scratch: no ELF interpreter, no dynamic section.
func TestStaticBinary(t *testing.T) {
	if _, err := os.Stat("../cmd/berth/main.go"); err != nil {
		t.Skip("cmd/berth/main.go does not exist yet: nothing to build")
	}
	if testing.Short() {
		t.Skip("builds the whole binary; skipped with -short")
	}
	const version = "deploy-test-0.0.0-7f3a"
	out := filepath.Join(t.TempDir(), "berth")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", out, "./cmd/berth")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %v program header: dynamically linked", p.Type)
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		t.Error("binary has a .dynamic section: dynamically linked")
	}
	if s := f.Section(".interp"); s != nil {
		t.Error("binary has an .interp section")
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(version)) {
		t.Error("-X main.version had no effect: cmd/berth needs `var version = \"dev\"` in package main")
	}
}

var (
	// promStrip removes what holds no metric name: strings, label matchers,
	// ranges, and grouping clauses.
	promStrip = regexp.MustCompile(`"[^"]*"|\{[^}]*\}|\[[^\]]*\]|\boffset\s+\S+|\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*\s*\(?`)
	promWords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true, "inf": true, "nan": true}
)

// metricsIn returns the metric names a PromQL expression selects: identifiers
// that are not functions, keywords or label names.
func metricsIn(expr string) []string {
	var out []string
	for _, id := range promIdent.FindAllString(promStrip.ReplaceAllString(expr, " "), -1) {
		id = strings.TrimSpace(id)
		if strings.HasSuffix(id, "(") || promWords[strings.ToLower(id)] {
			continue
		}
		out = append(out, id)
	}
	return out
}

func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "files", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		SchemaVersion int `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title      string `json:"title"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.SchemaVersion != 39 {
		t.Errorf("schemaVersion %d, want 39", d.SchemaVersion)
	}
	if len(d.Templating.List) == 0 || d.Templating.List[0].Type != "datasource" || d.Templating.List[0].Query != "prometheus" {
		t.Error("want a prometheus datasource variable first in templating")
	}
	seen := map[string]bool{}
	for _, p := range d.Panels {
		if p.Datasource.UID != "${"+d.Templating.List[0].Name+"}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: want targets on the datasource variable", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricsIn(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: %q references no metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				if !strings.HasPrefix(n, "berth_") && !strings.HasPrefix(n, "process_") {
					t.Errorf("panel %q: %q uses %s, not a berth_ or process_ metric", p.Title, tg.Expr, n)
				}
				seen[n] = true
			}
		}
	}
	for _, want := range []string{
		"berth_cache_requests_total", "berth_upstream_bytes_total", "berth_served_bytes_total",
		"process_resident_memory_bytes", "berth_memory_working_set_bytes", "berth_memory_limit_bytes",
		"berth_fetch_duration_seconds_bucket", "berth_upstream_errors_total", "berth_fetches_in_flight",
		"berth_tag_stale_served_total", "berth_verify_failures_total", "berth_http_requests_total",
	} {
		if !seen[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
}

func TestAlertingRules(t *testing.T) {
	b, err := os.ReadFile("../docs/alerting.md")
	if err != nil {
		t.Fatal(err)
	}
	block := ruleBlock(t, string(b))
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal([]byte(block), &rules); err != nil {
		t.Fatal(err)
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			ok := false
			for _, n := range metricsIn(r.Expr) {
				ok = ok || strings.HasPrefix(n, "berth_") || n == "up"
			}
			if !ok {
				t.Errorf("alert %s: %q uses no berth metric", r.Alert, r.Expr)
			}
		}
	}
	for _, want := range []string{"BerthWorkingSetNearLimit", "BerthCacheHitRatioLow", "BerthUpstreamErrors", "BerthVerifyFailures", "BerthServingStaleTags"} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

func TestMetricsIn(t *testing.T) {
	tests := []struct{ expr, want string }{
		{`sum(rate(berth_cache_requests_total{result="hit"}[5m])) / sum(rate(berth_cache_requests_total[5m]))`, "berth_cache_requests_total berth_cache_requests_total"},
		{`histogram_quantile(0.9, sum by (le) (rate(berth_fetch_duration_seconds_bucket[5m])))`, "berth_fetch_duration_seconds_bucket"},
		{`berth_memory_working_set_bytes / (berth_memory_limit_bytes > 0)`, "berth_memory_working_set_bytes berth_memory_limit_bytes"},
		{`up{job="berth"} == 0 and on (instance) other_metric`, "up other_metric"},
		{`sum(rate(x[1h] offset 1d))`, "x"},
	}
	for _, tc := range tests {
		if got := strings.Join(metricsIn(tc.expr), " "); got != tc.want {
			t.Errorf("metricsIn(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

// ruleBlock returns the ```yaml block of a Markdown text that is a rule file
// (starts with groups:); the page has other YAML blocks (scrape configs).
func ruleBlock(t *testing.T, md string) string {
	t.Helper()
	for rest := md; ; {
		var ok bool
		if _, rest, ok = strings.Cut(rest, "```yaml\n"); !ok {
			break
		}
		block, after, ok := strings.Cut(rest, "```")
		if !ok {
			break
		}
		if strings.HasPrefix(block, "groups:") {
			return block
		}
		rest = after
	}
	t.Fatal("docs/alerting.md has no ```yaml block starting with groups:")
	return ""
}
