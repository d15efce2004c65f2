// Package deploy holds berth's Dockerfile, Helm chart (deploy/helm/berth), the
// plain manifests generated from it (deploy/kubernetes) and the Grafana
// dashboard; its tests check them against each other and against the code.
package deploy

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/berth-mirror/berth/internal/config"
)

var update = flag.Bool("update", false, "rewrite deploy/kubernetes/berth.yaml from the chart")

const (
	chartDir  = "helm/berth"
	generated = "kubernetes/berth.yaml"
	// nodeIP stands in for the downward API's status.hostIP.
	nodeIP = "10.1.2.3"
)

// generateArgs render deploy/kubernetes/berth.yaml: the chart's defaults,
// with the Namespace (kubectl has no --create-namespace).
// The cluster's secret is an existing Secret the operator creates (the
// chart would generate a random one: not a reproducible file).
var generateArgs = []string{"berth", chartDir, "--namespace", "berth", "--set", "namespace.create=true",
	"--set", "cluster.existingSecret=berth-cluster"}

const generatedHeader = `# Generated from deploy/helm/berth with its default values (and the cluster's
# secret in an existing Secret berth-cluster): do not edit.
# Change the chart, then: go test ./deploy -run TestGeneratedManifests -update
# Install: kubectl create namespace berth
#          kubectl -n berth create secret generic berth-cluster --from-literal=secret="$(head -c 32 /dev/urandom | base64)"
#          kubectl apply -k deploy/kubernetes (or -f this file).
`

// want is what a rendering must agree with, from the values it was rendered with.
type want struct {
	port, metricsPort, gossipPort, peerPort int // 0: off
	dataDir                                 string
	grace                                   int64
	requests, limits                        corev1.ResourceList
	priorityClass                           string
	monitors                                bool
}

var defaults = want{
	port: 5000, metricsPort: 5002, gossipPort: 7946, peerPort: 5001, dataDir: "/var/lib/berth", grace: 45, priorityClass: "system-node-critical",
	requests: corev1.ResourceList{"cpu": resource.MustParse("50m"), "memory": resource.MustParse("64Mi")},
	limits:   corev1.ResourceList{"memory": resource.MustParse("128Mi")},
}

var everything = want{
	port: 5050, metricsPort: 9402, gossipPort: 7947, peerPort: 5051, dataDir: "/var/cache/berth", grace: 30,
	priorityClass: "system-node-critical", monitors: true,
	requests: corev1.ResourceList{"cpu": resource.MustParse("100m"), "memory": resource.MustParse("96Mi")},
	limits:   corev1.ResourceList{"memory": resource.MustParse("256Mi")},
}

// helmBin finds helm in ./bin (scripts/deps.sh puts it there) or on PATH. A
// missing helm skips, unless BERTH_E2E=1 (CI), where it fails.
func helmBin(t *testing.T) string {
	t.Helper()
	if p, err := filepath.Abs(filepath.Join("..", "bin", "helm")); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if os.Getenv("BERTH_E2E") == "1" {
		t.Fatal("helm not found (BERTH_E2E=1): run scripts/deps.sh")
	}
	t.Skip("helm not found: run scripts/deps.sh (BERTH_E2E=1 makes this a failure)")
	return ""
}

func runHelm(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

func render(t *testing.T, extra ...string) []byte {
	t.Helper()
	return runHelm(t, append([]string{"template", "berth", chartDir, "--namespace", "berth"}, extra...)...)
}

func TestChartLint(t *testing.T) {
	runHelm(t, "lint", "--strict", chartDir)
	runHelm(t, "lint", "--strict", chartDir, "-f", filepath.Join(chartDir, "ci", "all-values.yaml"))
}

func TestChartDefaults(t *testing.T) {
	objs := decode(t, render(t))
	checkAll(t, objs, defaults)
	// The cluster is on by default: its headless Service and its Secret.
	if len(objs.services) != 1 || len(objs.secrets) != 1 || len(objs.other) != 0 || objs.namespace != nil {
		t.Errorf("defaults render more than a ConfigMap, a DaemonSet and the cluster's Service and Secret: services %d secrets %d monitoring %d",
			len(objs.services), len(objs.secrets), len(objs.other))
	}
}

func TestChartEverythingOn(t *testing.T) {
	objs := decode(t, render(t, "-f", filepath.Join(chartDir, "ci", "all-values.yaml")))
	checkAll(t, objs, everything)
	if objs.namespace == nil || objs.namespace.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Error("namespace.create: want a Namespace at the privileged Pod Security level")
	}
	if _, ok := objs.configMaps["berth"]; ok {
		t.Error("inline upstream credentials rendered into a ConfigMap, want a Secret")
	}
	pod := objs.daemonSet.Spec.Template.Spec
	if pod.NodeSelector["kubernetes.io/os"] != "linux" || pod.Affinity == nil || pod.Affinity.NodeAffinity == nil {
		t.Error("nodeSelector / affinity not rendered")
	}
	c := pod.Containers[0]
	if !slices.Equal(c.Args[3:], []string{"--max-fetches", "16"}) {
		t.Errorf("extraArgs not appended: %q", c.Args)
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].SecretRef == nil || c.EnvFrom[0].SecretRef.Name != "berth-env" {
		t.Errorf("envFrom %+v", c.EnvFrom)
	}
	if mountsOf(c)["/etc/ssl/corporate"] != "ca" {
		t.Error("extraVolumeMounts not rendered")
	}
	if objs.daemonSet.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.String() != "10%" {
		t.Errorf("updateStrategy %+v", objs.daemonSet.Spec.UpdateStrategy)
	}
	if len(pod.ImagePullSecrets) != 1 || c.Image != "ghcr.io/berth-mirror/berth:v0.1.0" {
		t.Errorf("image %s, pull secrets %v", c.Image, pod.ImagePullSecrets)
	}
}

// TestChartGeneratesClusterSecret: with the cluster on and no secret given,
// the chart makes a strong random one (an upgrade keeps it: lookup), so the
// peers' key can neither be forgotten nor be a shared default.
func TestChartGeneratesClusterSecret(t *testing.T) {
	first := decode(t, render(t)).secrets["berth-cluster"]
	second := decode(t, render(t)).secrets["berth-cluster"]
	if first == nil || second == nil {
		t.Fatal("no Secret berth-cluster rendered")
	}
	a, b := first.StringData["secret"], second.StringData["secret"]
	if len(a) < 32 || a == b {
		t.Errorf("generated cluster secrets %q and %q: want long random values", a, b)
	}
	given := decode(t, render(t, "--set", "cluster.secret=a-secret-given-in-the-values")).secrets["berth-cluster"]
	if given == nil || given.StringData["secret"] != "a-secret-given-in-the-values" {
		t.Errorf("cluster.secret not used: %+v", given)
	}
}

// TestGeneratedManifests: deploy/kubernetes/berth.yaml is what the chart
// renders (so there is one source of truth), and passes the same checks.
// Without helm only the checks run.
func TestGeneratedManifests(t *testing.T) {
	b, err := os.ReadFile(generated)
	if err != nil && !*update {
		t.Fatal(err)
	}
	t.Run("checks", func(t *testing.T) {
		if *update {
			t.Skip("updating")
		}
		objs := decode(t, b)
		checkAll(t, objs, defaults)
		if objs.namespace == nil || objs.namespace.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
			t.Error("no Namespace at the privileged Pod Security level")
		}
	})
	t.Run("from chart", func(t *testing.T) {
		got := generatedHeader + string(runHelm(t, append([]string{"template"}, generateArgs...)...))
		if *update {
			if err := os.WriteFile(generated, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		if got != string(b) {
			t.Errorf("%s differs from the chart's rendering: go test ./deploy -run TestGeneratedManifests -update", generated)
		}
	})
}

func TestKustomization(t *testing.T) {
	b, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if !slices.Equal(k.Resources, []string{"berth.yaml"}) || len(files) != 2 {
		t.Errorf("deploy/kubernetes: want kustomization.yaml listing only the generated berth.yaml, have %q listing %q", files, k.Resources)
	}
}

// TestChartAlertsMatchDocs: the PrometheusRule ships the rules docs/alerting.md shows.
func TestChartAlertsMatchDocs(t *testing.T) {
	doc, err := os.ReadFile("../docs/alerting.md")
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(filepath.Join(chartDir, "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if ruleBlock(t, string(doc)) != string(file) {
		t.Error("docs/alerting.md's rule block and deploy/helm/berth/files/alerts.yaml differ")
	}
}

// objects is one rendering, decoded with the Kubernetes API types (strictly:
// a misspelt field is an error).
type objects struct {
	daemonSet  *appsv1.DaemonSet
	namespace  *corev1.Namespace
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	services   map[string]*corev1.Service
	other      map[string]map[string]any // monitoring.coreos.com objects, kind/name
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

func decode(t *testing.T, b []byte) objects {
	t.Helper()
	objs := objects{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		services: map[string]*corev1.Service{}, other: map[string]map[string]any{}}
	for _, doc := range docSep.Split(string(b), -1) {
		var meta struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("%v in:\n%s", err, doc)
		}
		if meta.Kind == "" {
			continue // comments only
		}
		if meta.Metadata.Name == "" || (meta.Kind != "Namespace" && meta.Metadata.Namespace == "") {
			t.Errorf("%s without a name or namespace", meta.Kind)
		}
		key := meta.Kind + "/" + meta.Metadata.Name
		var err error
		switch meta.Kind {
		case "DaemonSet":
			if objs.daemonSet != nil {
				t.Error("two DaemonSets")
			}
			objs.daemonSet = new(appsv1.DaemonSet)
			err = yaml.UnmarshalStrict([]byte(doc), objs.daemonSet)
		case "Namespace":
			objs.namespace = new(corev1.Namespace)
			err = yaml.UnmarshalStrict([]byte(doc), objs.namespace)
		case "ConfigMap":
			objs.configMaps[meta.Metadata.Name] = new(corev1.ConfigMap)
			err = yaml.UnmarshalStrict([]byte(doc), objs.configMaps[meta.Metadata.Name])
		case "Secret":
			objs.secrets[meta.Metadata.Name] = new(corev1.Secret)
			err = yaml.UnmarshalStrict([]byte(doc), objs.secrets[meta.Metadata.Name])
		case "Service":
			objs.services[meta.Metadata.Name] = new(corev1.Service)
			err = yaml.UnmarshalStrict([]byte(doc), objs.services[meta.Metadata.Name])
		case "ServiceMonitor", "PodMonitor", "PrometheusRule":
			if meta.APIVersion != "monitoring.coreos.com/v1" {
				t.Errorf("%s: apiVersion %s", key, meta.APIVersion)
			}
			m := map[string]any{}
			err = yaml.Unmarshal([]byte(doc), &m)
			objs.other[key] = m
		default:
			t.Errorf("unexpected object %s", key)
		}
		if err != nil {
			t.Errorf("%s: %v", key, err)
		}
	}
	if objs.daemonSet == nil {
		t.Fatal("no DaemonSet rendered")
	}
	return objs
}

func checkAll(t *testing.T, objs objects, w want) {
	t.Helper()
	cfg := berthConfig(t, objs)
	t.Run("DaemonSet", func(t *testing.T) { checkDaemonSet(t, objs.daemonSet, cfg, w) })
	t.Run("InitContainer", func(t *testing.T) { checkInit(t, objs.daemonSet.Spec.Template.Spec, cfg) })
	t.Run("VolumesAndMounts", func(t *testing.T) { checkVolumes(t, objs.daemonSet.Spec.Template.Spec) })
	t.Run("Ports", func(t *testing.T) { checkPorts(t, objs, cfg, w) })
	t.Run("Monitoring", func(t *testing.T) { checkMonitoring(t, objs, w) })
}

// berthConfig loads the berth.yaml the DaemonSet mounts with internal/config,
// with the container's BERTH_* environment as the kubelet would set it
// (downward API and $(VAR) references resolved, secrets from the rendering).
func berthConfig(t *testing.T, objs objects) config.Config {
	t.Helper()
	pod := objs.daemonSet.Spec.Template.Spec
	c := pod.Containers[0]
	src := volumeByName(pod, mountsOf(c)["/etc/berth"])
	var text string
	switch {
	case src.ConfigMap != nil && objs.configMaps[src.ConfigMap.Name] != nil:
		text = objs.configMaps[src.ConfigMap.Name].Data["berth.yaml"]
	case src.Secret != nil && objs.secrets[src.Secret.SecretName] != nil:
		text = objs.secrets[src.Secret.SecretName].StringData["berth.yaml"]
	}
	if text == "" {
		t.Fatalf("/etc/berth is not mounted from a rendered ConfigMap or Secret with berth.yaml: %+v", src.VolumeSource)
	}
	p := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	env := containerEnv(t, c, objs)
	cfg, err := config.Load(p, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatalf("rendered berth.yaml with the container's environment: %v\n%s", err, text)
	}
	if slices.Contains(c.Args, "--config") && c.Args[slices.Index(c.Args, "--config")+1] != "/etc/berth/berth.yaml" {
		t.Errorf("args %q do not load /etc/berth/berth.yaml", c.Args)
	}
	return cfg
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func containerEnv(t *testing.T, c corev1.Container, objs objects) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		switch {
		case e.ValueFrom == nil:
			v = envRef.ReplaceAllStringFunc(v, func(ref string) string {
				name := envRef.FindStringSubmatch(ref)[1]
				if r, ok := env[name]; ok {
					return r
				}
				t.Errorf("env %s refers to $(%s), not defined before it", e.Name, name)
				return ref
			})
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "status.hostIP":
				v = nodeIP
			case "spec.nodeName":
				v = "node-a"
			default:
				t.Errorf("env %s from %s, want status.hostIP or spec.nodeName", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s, ok := objs.secrets[ref.Name]
			if !ok {
				// An existing Secret, not in the rendering: what the
				// operator put there stands in, unless the key is optional.
				if ref.Optional != nil && *ref.Optional {
					continue
				}
				env[e.Name] = "operator-provided-" + ref.Name + "-" + ref.Key
				continue
			}
			if v, ok = s.StringData[ref.Key]; !ok {
				if ref.Optional == nil || !*ref.Optional {
					t.Errorf("env %s: secret %s has no key %s", e.Name, ref.Name, ref.Key)
				}
				continue
			}
		}
		if e.Name == "GOMEMLIMIT" {
			t.Error("GOMEMLIMIT is set: berth derives it from the cgroup limit")
		}
		env[e.Name] = v
	}
	return env
}

func checkDaemonSet(t *testing.T, ds *appsv1.DaemonSet, cfg config.Config, w want) {
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ds.Spec.UpdateStrategy.RollingUpdate == nil ||
		ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable == nil {
		t.Errorf("updateStrategy %+v, want RollingUpdate with maxUnavailable", ds.Spec.UpdateStrategy)
	}
	if len(ds.Spec.Selector.MatchLabels) == 0 {
		t.Error("empty selector")
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod labels", k, v)
		}
	}
	if ds.Spec.Template.Annotations["checksum/config"] == "" {
		t.Error("no checksum/config annotation: a config change would not roll the pods")
	}
	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork || pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v dnsPolicy %q", pod.HostNetwork, pod.DNSPolicy)
	}
	if pod.PriorityClassName != w.priorityClass || pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds != w.grace {
		t.Errorf("priorityClassName %q terminationGracePeriodSeconds %v", pod.PriorityClassName, pod.TerminationGracePeriodSeconds)
	} else if cfg.ShutdownTimeout.D().Seconds() >= float64(w.grace) {
		t.Errorf("shutdown_timeout %s does not fit in the grace period %ds", cfg.ShutdownTimeout, w.grace)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the service account token is mounted: berth talks to no API server")
	}
	if !slices.ContainsFunc(pod.Tolerations, func(tl corev1.Toleration) bool { return tl.Key == "" && tl.Operator == corev1.TolerationOpExists }) {
		t.Error("no toleration for all taints (operator: Exists, no key)")
	}
	if pod.SecurityContext == nil || pod.SecurityContext.SeccompProfile == nil || pod.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod seccompProfile: want RuntimeDefault")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	host, port, _ := net.SplitHostPort(cfg.Listen)
	if host != "127.0.0.1" || port != strconv.Itoa(w.port) {
		t.Errorf("listen %q: want 127.0.0.1:%d (loopback: the cache stays off the network)", cfg.Listen, w.port)
	}
	for _, p := range []struct {
		name string
		p    *corev1.Probe
		path string
	}{{"startup", c.StartupProbe, "/healthz"}, {"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.p == nil || p.p.HTTPGet == nil || p.p.HTTPGet.Path != p.path {
			t.Errorf("%s probe: want httpGet %s", p.name, p.path)
			continue
		}
		if p.p.HTTPGet.Host != host || p.p.HTTPGet.Port.String() != port {
			t.Errorf("%s probe on %s:%s, berth listens on %s", p.name, p.p.HTTPGet.Host, p.p.HTTPGet.Port.String(), cfg.Listen)
		}
		if p.p.PeriodSeconds == 0 || p.p.FailureThreshold == 0 {
			t.Errorf("%s probe: period and failure threshold not set", p.name)
		}
	}
	checkResources(t, c, w.requests, w.limits)
	checkSecurity(t, c, false)
	if !slices.Equal(c.Args[:3], []string{"serve", "--config", "/etc/berth/berth.yaml"}) || len(c.Command) != 0 {
		t.Errorf("command %q args %q", c.Command, c.Args)
	}
	mounts := mountsOf(c)
	if cfg.DataDir != w.dataDir || mounts[cfg.DataDir] != "data" {
		t.Errorf("data dir %q not mounted from volume data: %v", cfg.DataDir, mounts)
	}
	if v := volumeByName(pod, "data"); v.HostPath == nil || v.HostPath.Path != cfg.DataDir {
		t.Errorf("volume data: want hostPath %s", cfg.DataDir)
	}
	if mounts[path.Dir(cfg.Admin.Socket)] != "admin" || volumeByName(pod, "admin").EmptyDir == nil {
		t.Errorf("admin socket %q: want an emptyDir mounted at its directory", cfg.Admin.Socket)
	}
	if mounts["/etc/berth"] != "config" {
		t.Errorf("config not mounted at /etc/berth: %v", mounts)
	}
}

func checkResources(t *testing.T, c corev1.Container, requests, limits corev1.ResourceList) {
	t.Helper()
	for _, r := range []struct {
		what      string
		got, want corev1.ResourceList
	}{{"requests", c.Resources.Requests, requests}, {"limits", c.Resources.Limits, limits}} {
		if len(r.got) != len(r.want) {
			t.Errorf("%s %v, want %v", r.what, r.got, r.want)
		}
		for k, q := range r.want {
			if g := r.got[k]; g.Cmp(q) != 0 {
				t.Errorf("%s %s = %s, want %s", r.what, k, g.String(), q.String())
			}
		}
	}
	if _, ok := c.Resources.Limits["cpu"]; ok {
		t.Error("a CPU limit: throttling a copy loop only slows pulls")
	}
}

func checkInit(t *testing.T, pod corev1.PodSpec, cfg config.Config) {
	i := slices.IndexFunc(pod.InitContainers, func(c corev1.Container) bool { return slices.Contains(c.Args, "configure-containerd") })
	if i < 0 {
		t.Fatal("no init container runs configure-containerd")
	}
	c := pod.InitContainers[i]
	if c.Image != pod.Containers[0].Image || len(c.Command) != 0 || c.Args[0] != "configure-containerd" {
		t.Errorf("init container runs %q %q in %s, want the berth image's entrypoint", c.Command, c.Args, c.Image)
	}
	flags := map[string]string{}
	for j := 1; j+1 < len(c.Args); j += 2 {
		flags[c.Args[j]] = c.Args[j+1]
	}
	for k, v := range map[string]string{
		"--config-path": "/host/etc/containerd/certs.d",
		"--mirror-url":  "http://" + cfg.Listen,
		"--config":      "/etc/berth/berth.yaml",
		"--data-dir":    cfg.DataDir,
		"--data-owner":  "65532:65532",
	} {
		if flags[k] != v {
			t.Errorf("init %s = %q, want %q", k, flags[k], v)
		}
	}
	mounts := mountsOf(c)
	certs := volumeByName(pod, mounts["/host/etc/containerd/certs.d"])
	if certs.HostPath == nil || certs.HostPath.Path != "/etc/containerd/certs.d" {
		t.Error("the host's /etc/containerd/certs.d is not mounted at --config-path")
	}
	if mounts["/etc/berth"] != "config" || mounts[cfg.DataDir] != "data" {
		t.Errorf("init mounts %v", mounts)
	}
	checkSecurity(t, c, true)
	if c.SecurityContext != nil && c.SecurityContext.Capabilities != nil &&
		!slices.Equal(c.SecurityContext.Capabilities.Add, []corev1.Capability{"CHOWN"}) {
		t.Errorf("init adds capabilities %q, want only CHOWN", c.SecurityContext.Capabilities.Add)
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Error("init container: want memory request and limit")
	}
}

func checkSecurity(t *testing.T, c corev1.Container, root bool) {
	t.Helper()
	s := c.SecurityContext
	if s == nil {
		t.Errorf("%s: no securityContext", c.Name)
		return
	}
	isTrue := func(b *bool) bool { return b != nil && *b }
	isFalse := func(b *bool) bool { return b != nil && !*b }
	if root {
		if s.RunAsUser == nil || *s.RunAsUser != 0 || isTrue(s.RunAsNonRoot) {
			t.Errorf("%s: want runAsUser 0", c.Name)
		}
	} else if !isTrue(s.RunAsNonRoot) || s.RunAsUser == nil || *s.RunAsUser != 65532 || s.RunAsGroup == nil || *s.RunAsGroup != 65532 {
		t.Errorf("%s: want runAsNonRoot and runAsUser/runAsGroup 65532", c.Name)
	}
	if !isTrue(s.ReadOnlyRootFilesystem) || !isFalse(s.AllowPrivilegeEscalation) || isTrue(s.Privileged) {
		t.Errorf("%s: want readOnlyRootFilesystem true, allowPrivilegeEscalation false, not privileged", c.Name)
	}
	if s.Capabilities == nil || !slices.Equal(s.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		s.SeccompProfile == nil || s.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: want capabilities drop [ALL] and seccompProfile RuntimeDefault", c.Name)
	}
}

func checkVolumes(t *testing.T, pod corev1.PodSpec) {
	declared := map[string]bool{}
	for _, v := range pod.Volumes {
		if declared[v.Name] {
			t.Errorf("volume %s declared twice", v.Name)
		}
		declared[v.Name] = true
	}
	used := map[string]bool{}
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		paths := map[string]bool{}
		for _, vm := range c.VolumeMounts {
			if !declared[vm.Name] {
				t.Errorf("%s mounts undeclared volume %s", c.Name, vm.Name)
			}
			if paths[vm.MountPath] {
				t.Errorf("%s mounts two volumes at %s", c.Name, vm.MountPath)
			}
			paths[vm.MountPath] = true
			used[vm.Name] = true
		}
	}
	for name := range declared {
		if !used[name] {
			t.Errorf("volume %s is mounted nowhere", name)
		}
	}
}

// listener is an address berth listens on and the container port it needs.
type listener struct {
	addr  string
	host  string
	port  int
	proto corev1.Protocol
}

// checkPorts: every address berth listens on (registry, metrics_listen,
// gossip, peer API) is a declared container port (so the scheduler sees the
// host ports as taken) on the address the chart meant, every declared port
// is one berth listens on, and Services target declared ports.
func checkPorts(t *testing.T, objs objects, cfg config.Config, w want) {
	c := objs.daemonSet.Spec.Template.Spec.Containers[0]
	declared := map[string]corev1.ContainerPort{}
	for _, p := range c.Ports {
		if _, dup := declared[p.Name]; dup || p.Name == "" {
			t.Errorf("port name %q empty or declared twice", p.Name)
		}
		if p.HostPort != 0 && p.HostPort != p.ContainerPort {
			t.Errorf("port %s: hostPort %d differs from containerPort %d under hostNetwork", p.Name, p.HostPort, p.ContainerPort)
		}
		declared[p.Name] = p
	}
	expect := map[string]listener{"registry": {cfg.Listen, "127.0.0.1", w.port, corev1.ProtocolTCP}}
	if w.metricsPort != 0 {
		expect["metrics"] = listener{cfg.MetricsListen, nodeIP, w.metricsPort, corev1.ProtocolTCP}
	} else if cfg.MetricsListen != "" {
		t.Errorf("metrics_listen %q with metrics off", cfg.MetricsListen)
	}
	if w.gossipPort != 0 {
		expect["gossip-tcp"] = listener{cfg.Cluster.PeerBind, nodeIP, w.gossipPort, corev1.ProtocolTCP}
		expect["gossip-udp"] = listener{cfg.Cluster.PeerBind, nodeIP, w.gossipPort, corev1.ProtocolUDP}
		expect["peer"] = listener{cfg.Cluster.PeerListen, nodeIP, w.peerPort, corev1.ProtocolTCP}
		checkCluster(t, objs, cfg, w)
	} else if cfg.Cluster.PeerBind != "" {
		t.Errorf("cluster.peer_bind %q with the cluster off", cfg.Cluster.PeerBind)
	}
	for name, e := range expect {
		host, port, err := net.SplitHostPort(e.addr)
		if err != nil || host != e.host || port != strconv.Itoa(e.port) {
			t.Errorf("%s: berth listens on %q, want %s:%d", name, e.addr, e.host, e.port)
		}
		p, ok := declared[name]
		if !ok || int(p.ContainerPort) != e.port || p.Protocol != e.proto {
			t.Errorf("%s: declared %+v, want containerPort %d/%s", name, p, e.port, e.proto)
		}
	}
	for name := range declared {
		if _, ok := expect[name]; !ok {
			t.Errorf("port %s is declared but berth does not listen on it", name)
		}
	}
	for sname, s := range objs.services {
		if s.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("service %s: want headless (each pod is a node)", sname)
		}
		for k, v := range objs.daemonSet.Spec.Selector.MatchLabels {
			if s.Spec.Selector[k] != v {
				t.Errorf("service %s: selector %v does not select the berth pods", sname, s.Spec.Selector)
			}
		}
		for _, sp := range s.Spec.Ports {
			p, ok := declared[sp.TargetPort.String()]
			if sp.TargetPort.Type != intstr.String || !ok || p.ContainerPort != sp.Port || p.Protocol != sp.Protocol {
				t.Errorf("service %s port %s: targets %s, not a declared port of the same number and protocol", sname, sp.Name, sp.TargetPort.String())
			}
		}
	}
}

func checkCluster(t *testing.T, objs objects, cfg config.Config, w want) {
	t.Helper()
	u, err := url.Parse(cfg.Cluster.AdvertiseURL)
	if err != nil || u.Host != cfg.Cluster.PeerListen {
		t.Errorf("cluster.advertise_url %q, want http://%s", cfg.Cluster.AdvertiseURL, cfg.Cluster.PeerListen)
	}
	if cfg.Cluster.Secret == "" {
		t.Error("cluster.secret empty: not taken from the rendered Secret")
	}
	peers := objs.services["berth-peers"]
	if peers == nil || !peers.Spec.PublishNotReadyAddresses {
		t.Fatal("no headless Service berth-peers publishing not-ready pods")
	}
	wantJoin := fmt.Sprintf("berth-peers.berth.svc.cluster.local:%d", w.gossipPort)
	if cfg.Cluster.PeerJoin != wantJoin {
		t.Errorf("cluster.peer_join %q, want %q (the peers Service)", cfg.Cluster.PeerJoin, wantJoin)
	}
}

// monitorEndpoint is a ServiceMonitor endpoint or a PodMonitor podMetricsEndpoint.
type monitorEndpoint struct {
	Port        string    `json:"port"`
	Path        string    `json:"path"`
	Interval    string    `json:"interval"`
	Relabelings []relabel `json:"relabelings"`
}

// relabel is the part of a monitor's relabeling these tests look at.
type relabel struct {
	SourceLabels []string `json:"sourceLabels"`
	TargetLabel  string   `json:"targetLabel"`
	Replacement  string   `json:"replacement"`
}

func checkMonitoring(t *testing.T, objs objects, w want) {
	if !w.monitors {
		return
	}
	for _, kind := range []string{"ServiceMonitor", "PodMonitor"} {
		m := objs.other[kind+"/berth"]
		if m == nil {
			t.Errorf("no %s", kind)
			continue
		}
		b, _ := yaml.Marshal(m["spec"])
		var spec struct {
			NamespaceSelector struct {
				MatchNames []string `json:"matchNames"`
			} `json:"namespaceSelector"`
			Selector            metav1.LabelSelector `json:"selector"`
			Endpoints           []monitorEndpoint    `json:"endpoints"`
			PodMetricsEndpoints []monitorEndpoint    `json:"podMetricsEndpoints"`
		}
		if err := yaml.UnmarshalStrict(b, &spec); err != nil {
			t.Errorf("%s spec: %v", kind, err)
		}
		eps := append(spec.Endpoints, spec.PodMetricsEndpoints...)
		if !slices.Equal(spec.NamespaceSelector.MatchNames, []string{"berth"}) {
			t.Errorf("%s namespaceSelector %v, want the release namespace", kind, spec.NamespaceSelector.MatchNames)
		}
		if len(eps) != 1 || eps[0].Port != "metrics" || eps[0].Path != "/metrics" || eps[0].Interval == "" {
			t.Errorf("%s endpoints %+v: want port metrics, /metrics", kind, eps)
			continue
		}
		if !slices.ContainsFunc(eps[0].Relabelings, func(r relabel) bool { return r.TargetLabel == "job" && r.Replacement == "berth" }) {
			t.Errorf("%s: no relabeling to job=berth, which the alert rules select", kind)
		}
		labels := objs.daemonSet.Spec.Template.Labels
		if kind == "ServiceMonitor" {
			if s := objs.services["berth-metrics"]; s != nil {
				labels = s.Labels
			} else {
				t.Error("ServiceMonitor without the berth-metrics Service")
			}
		}
		for k, v := range spec.Selector.MatchLabels {
			if labels[k] != v {
				t.Errorf("%s selector %s=%s matches nothing", kind, k, v)
			}
		}
	}
	rule := objs.other["PrometheusRule/berth"]
	file, err := os.ReadFile(filepath.Join(chartDir, "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var fromFile map[string]any
	if err := yaml.Unmarshal(file, &fromFile); err != nil {
		t.Fatal(err)
	}
	got, _ := yaml.Marshal(rule["spec"])
	wantRules, _ := yaml.Marshal(fromFile)
	if rule == nil || !bytes.Equal(got, wantRules) {
		t.Error("PrometheusRule spec is not files/alerts.yaml")
	}
	var dash *corev1.ConfigMap
	for _, cm := range objs.configMaps {
		if cm.Labels["grafana_dashboard"] == "1" {
			dash = cm
		}
	}
	board, err := os.ReadFile(filepath.Join(chartDir, "files", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if dash == nil || strings.TrimSpace(dash.Data["berth.json"]) != strings.TrimSpace(string(board)) {
		t.Error("no ConfigMap labelled grafana_dashboard=1 holding files/grafana-dashboard.json")
	}
}

func mountsOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, vm := range c.VolumeMounts {
		m[vm.MountPath] = vm.Name
	}
	return m
}

func volumeByName(pod corev1.PodSpec, name string) corev1.Volume {
	for _, v := range pod.Volumes {
		if v.Name == name {
			return v
		}
	}
	return corev1.Volume{}
}

// TestChartExistingSecrets: Secrets the operator manages are referenced, not
// rendered: berth.yaml from configSecret, the cluster key from
// cluster.existingSecret.
func TestChartExistingSecrets(t *testing.T) {
	objs := decode(t, render(t, "--set", "configSecret=my-berth-config", "--set", "cluster.enabled=true",
		"--set", "cluster.existingSecret=my-cluster-key"))
	pod := objs.daemonSet.Spec.Template.Spec
	if v := volumeByName(pod, "config"); v.Secret == nil || v.Secret.SecretName != "my-berth-config" {
		t.Errorf("config volume %+v, want Secret my-berth-config", v.VolumeSource)
	}
	if len(objs.secrets) != 0 {
		t.Errorf("rendered Secrets %v, want none (both exist already)", slices.Collect(maps.Keys(objs.secrets)))
	}
	var ref *corev1.SecretKeySelector
	for _, e := range pod.Containers[0].Env {
		if e.Name == "BERTH_CLUSTER_SECRET" && e.ValueFrom != nil {
			ref = e.ValueFrom.SecretKeyRef
		}
	}
	if ref == nil || ref.Name != "my-cluster-key" || ref.Key != "secret" {
		t.Errorf("BERTH_CLUSTER_SECRET from %+v, want my-cluster-key/secret", ref)
	}
}
