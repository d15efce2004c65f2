// Package deploy holds berth's Dockerfile, Kubernetes manifests and Grafana
// dashboard; its tests check them against each other and against the code.
package deploy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/berth-mirror/berth/internal/config"
)

const k8sDir = "kubernetes"

// object is the part of a Kubernetes object these tests look at.
type object struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   metadata          `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	Spec       yaml.Node         `yaml:"spec"`
}

type metadata struct {
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace"`
	Labels    map[string]string `yaml:"labels"`
}

type daemonSetSpec struct {
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	UpdateStrategy struct {
		Type          string `yaml:"type"`
		RollingUpdate struct {
			MaxUnavailable any `yaml:"maxUnavailable"`
		} `yaml:"rollingUpdate"`
	} `yaml:"updateStrategy"`
	Template struct {
		Metadata metadata `yaml:"metadata"`
		Spec     podSpec  `yaml:"spec"`
	} `yaml:"template"`
}

type podSpec struct {
	HostNetwork                   bool         `yaml:"hostNetwork"`
	DNSPolicy                     string       `yaml:"dnsPolicy"`
	PriorityClassName             string       `yaml:"priorityClassName"`
	TerminationGracePeriodSeconds int          `yaml:"terminationGracePeriodSeconds"`
	Tolerations                   []toleration `yaml:"tolerations"`
	InitContainers                []container  `yaml:"initContainers"`
	Containers                    []container  `yaml:"containers"`
	Volumes                       []volume     `yaml:"volumes"`
}

type toleration struct {
	Key      string `yaml:"key"`
	Operator string `yaml:"operator"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	StartupProbe   *probe `yaml:"startupProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext *securityContext `yaml:"securityContext"`
	VolumeMounts    []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Host string `yaml:"host"`
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type securityContext struct {
	RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
	RunAsUser                *int  `yaml:"runAsUser"`
	ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	Capabilities             struct {
		Drop []string `yaml:"drop"`
		Add  []string `yaml:"add"`
	} `yaml:"capabilities"`
	SeccompProfile struct {
		Type string `yaml:"type"`
	} `yaml:"seccompProfile"`
}

type volume struct {
	Name     string `yaml:"name"`
	HostPath *struct {
		Path string `yaml:"path"`
	} `yaml:"hostPath"`
	EmptyDir  *struct{} `yaml:"emptyDir"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
}

// manifests parses every YAML document of deploy/kubernetes but the kustomization.
func manifests(t *testing.T) map[string]object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	objs := map[string]object{}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o object
			if err := dec.Decode(&o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: a document lacks apiVersion, kind or metadata.name", f)
			}
			if o.Kind != "Namespace" && o.Metadata.Namespace != "berth" {
				t.Errorf("%s %s: namespace %q, want berth", o.Kind, o.Metadata.Name, o.Metadata.Namespace)
			}
			objs[o.Kind+"/"+o.Metadata.Name] = o
		}
	}
	return objs
}

func daemonSet(t *testing.T) podSpec {
	t.Helper()
	o, ok := manifests(t)["DaemonSet/berth"]
	if !ok {
		t.Fatal("no DaemonSet berth")
	}
	var ds daemonSetSpec
	if err := o.Spec.Decode(&ds); err != nil {
		t.Fatal(err)
	}
	if ds.UpdateStrategy.Type != "RollingUpdate" || ds.UpdateStrategy.RollingUpdate.MaxUnavailable != 1 {
		t.Errorf("updateStrategy %+v, want RollingUpdate with maxUnavailable 1", ds.UpdateStrategy)
	}
	for k, v := range ds.Selector.MatchLabels {
		if ds.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod labels", k, v)
		}
	}
	return ds.Template.Spec
}

// berthConfig loads the ConfigMap's berth.yaml through internal/config.
func berthConfig(t *testing.T) config.Config {
	t.Helper()
	cm, ok := manifests(t)["ConfigMap/berth"]
	if !ok || cm.Data["berth.yaml"] == "" {
		t.Fatal("no ConfigMap berth with berth.yaml")
	}
	p := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(p, []byte(cm.Data["berth.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p, func(string) (string, bool) { return "", false })
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatalf("ConfigMap berth.yaml: %v", err)
	}
	return cfg
}

func TestConfigMapIsValidConfig(t *testing.T) {
	cfg := berthConfig(t)
	if host, _, _ := net.SplitHostPort(cfg.Listen); host != "127.0.0.1" {
		t.Errorf("listen %q: want loopback, see daemonset.yaml", cfg.Listen)
	}
}

func TestDaemonSet(t *testing.T) {
	pod := daemonSet(t)
	cfg := berthConfig(t)
	_, listenPort, _ := net.SplitHostPort(cfg.Listen)
	if !pod.HostNetwork || pod.DNSPolicy != "ClusterFirstWithHostNet" {
		t.Errorf("hostNetwork %v dnsPolicy %q", pod.HostNetwork, pod.DNSPolicy)
	}
	if pod.PriorityClassName != "system-node-critical" || pod.TerminationGracePeriodSeconds != 45 {
		t.Errorf("priorityClassName %q terminationGracePeriodSeconds %d", pod.PriorityClassName, pod.TerminationGracePeriodSeconds)
	}
	if cfg.ShutdownTimeout.D().Seconds() >= float64(pod.TerminationGracePeriodSeconds) {
		t.Errorf("shutdown_timeout %s does not fit in the grace period", cfg.ShutdownTimeout)
	}
	if !slices.Contains(pod.Tolerations, toleration{Operator: "Exists"}) {
		t.Error("no toleration for all taints (operator: Exists, no key)")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	for _, p := range []struct {
		name string
		p    *probe
		path string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.p == nil || p.p.HTTPGet == nil || p.p.HTTPGet.Path != p.path {
			t.Errorf("%s probe: want httpGet %s", p.name, p.path)
			continue
		}
		if p.p.HTTPGet.Host != "127.0.0.1" || p.p.HTTPGet.Port != 5000 || listenPort != "5000" {
			t.Errorf("%s probe on %s:%v, berth listens on %s", p.name, p.p.HTTPGet.Host, p.p.HTTPGet.Port, cfg.Listen)
		}
	}
	if c.Resources.Requests["memory"] != "64Mi" || c.Resources.Limits["memory"] != "128Mi" || c.Resources.Requests["cpu"] != "50m" {
		t.Errorf("resources %+v", c.Resources)
	}
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			t.Error("GOMEMLIMIT is set: berth derives it from the cgroup limit")
		}
	}
	checkSecurity(t, c, false)
	if !slices.Equal(c.Args, []string{"serve", "--config", "/etc/berth/berth.yaml"}) {
		t.Errorf("args %q", c.Args)
	}
	mounts := mountsOf(c)
	if mounts["/var/lib/berth"] != "data" || cfg.DataDir != "/var/lib/berth" {
		t.Errorf("data dir %q not mounted from volume data: %v", cfg.DataDir, mounts)
	}
	if mounts[path.Dir(cfg.Admin.Socket)] != "admin" || volumeByName(pod, "admin").EmptyDir == nil {
		t.Errorf("admin socket %q: want an emptyDir mounted at its directory", cfg.Admin.Socket)
	}
	if mounts["/etc/berth"] != "config" {
		t.Errorf("config not mounted at /etc/berth: %v", mounts)
	}
	if v := volumeByName(pod, "data"); v.HostPath == nil || v.HostPath.Path != "/var/lib/berth" {
		t.Error("volume data: want hostPath /var/lib/berth")
	}
}

func TestInitContainerConfiguresContainerd(t *testing.T) {
	pod := daemonSet(t)
	i := slices.IndexFunc(pod.InitContainers, func(c container) bool { return slices.Contains(c.Args, "configure-containerd") })
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
	want := map[string]string{
		"--config-path": "/host/etc/containerd/certs.d",
		"--mirror-url":  "http://" + berthConfig(t).Listen,
		"--config":      "/etc/berth/berth.yaml",
		"--data-dir":    "/var/lib/berth",
	}
	for k, v := range want {
		if flags[k] != v {
			t.Errorf("init %s = %q, want %q", k, flags[k], v)
		}
	}
	mounts := mountsOf(c)
	certs := volumeByName(pod, mounts["/host/etc/containerd/certs.d"])
	if certs.HostPath == nil || certs.HostPath.Path != "/etc/containerd/certs.d" {
		t.Error("the host's /etc/containerd/certs.d is not mounted at --config-path")
	}
	if mounts["/etc/berth"] != "config" || mounts["/var/lib/berth"] != "data" {
		t.Errorf("init mounts %v", mounts)
	}
	checkSecurity(t, c, true)
	if !slices.Equal(c.SecurityContext.Capabilities.Add, []string{"CHOWN"}) {
		t.Errorf("init adds capabilities %q, want only CHOWN", c.SecurityContext.Capabilities.Add)
	}
}

func checkSecurity(t *testing.T, c container, root bool) {
	t.Helper()
	s := c.SecurityContext
	if s == nil {
		t.Fatalf("%s: no securityContext", c.Name)
	}
	isTrue := func(b *bool) bool { return b != nil && *b }
	isFalse := func(b *bool) bool { return b != nil && !*b }
	if root {
		if s.RunAsUser == nil || *s.RunAsUser != 0 || isTrue(s.RunAsNonRoot) {
			t.Errorf("%s: want runAsUser 0", c.Name)
		}
	} else if !isTrue(s.RunAsNonRoot) || s.RunAsUser == nil || *s.RunAsUser != 65532 {
		t.Errorf("%s: want runAsNonRoot and runAsUser 65532", c.Name)
	}
	if !isTrue(s.ReadOnlyRootFilesystem) || !isFalse(s.AllowPrivilegeEscalation) {
		t.Errorf("%s: want readOnlyRootFilesystem true, allowPrivilegeEscalation false", c.Name)
	}
	if !slices.Equal(s.Capabilities.Drop, []string{"ALL"}) || s.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("%s: want capabilities drop [ALL] and seccompProfile RuntimeDefault", c.Name)
	}
	if len(c.Resources.Requests) == 0 || c.Resources.Limits["memory"] == "" {
		t.Errorf("%s: want resource requests and a memory limit", c.Name)
	}
}

func mountsOf(c container) map[string]string {
	m := map[string]string{}
	for _, vm := range c.VolumeMounts {
		m[vm.MountPath] = vm.Name
	}
	return m
}

func volumeByName(pod podSpec, name string) volume {
	for _, v := range pod.Volumes {
		if v.Name == name {
			return v
		}
	}
	return volume{}
}

func TestVolumesAndMountsMatch(t *testing.T) {
	pod := daemonSet(t)
	declared := map[string]bool{}
	for _, v := range pod.Volumes {
		if declared[v.Name] {
			t.Errorf("volume %s declared twice", v.Name)
		}
		declared[v.Name] = true
	}
	used := map[string]bool{}
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		for _, vm := range c.VolumeMounts {
			if !declared[vm.Name] {
				t.Errorf("%s mounts undeclared volume %s", c.Name, vm.Name)
			}
			used[vm.Name] = true
		}
	}
	for name := range declared {
		if !used[name] {
			t.Errorf("volume %s is mounted nowhere", name)
		}
	}
}

func TestPeerService(t *testing.T) {
	o, ok := manifests(t)["Service/berth-peers"]
	if !ok {
		t.Fatal("no Service berth-peers")
	}
	var spec struct {
		ClusterIP string            `yaml:"clusterIP"`
		Selector  map[string]string `yaml:"selector"`
		Ports     []struct {
			Port int `yaml:"port"`
		} `yaml:"ports"`
	}
	if err := o.Spec.Decode(&spec); err != nil {
		t.Fatal(err)
	}
	if spec.ClusterIP != "None" || len(spec.Ports) == 0 || spec.Ports[0].Port != 7946 {
		t.Errorf("want a headless Service on 7946, got %+v", spec)
	}
	if spec.Selector["app.kubernetes.io/name"] != "berth" {
		t.Errorf("selector %v does not select the berth pods", spec.Selector)
	}
}

func TestKustomizationListsEveryFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	var want []string
	for _, f := range files {
		if n := filepath.Base(f); n != "kustomization.yaml" {
			want = append(want, n)
		}
	}
	got := slices.Clone(k.Resources)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization resources %q, files %q", k.Resources, want)
	}
}
