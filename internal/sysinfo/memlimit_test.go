package sysinfo

import (
	"log/slog"
	"runtime/debug"
	"testing"
)

func env(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := kv[k]
		return v, ok
	}
}

func TestMemLimit(t *testing.T) {
	tests := []struct {
		name       string
		limits     Limits
		env        map[string]string
		wantLimit  int64
		wantSource string
	}{
		{name: "cgroup limit", limits: Limits{Version: 2, MemoryLimit: 1000 << 20},
			wantLimit: 900 << 20, wantSource: SourceCgroup},
		{name: "env wins over cgroup", limits: Limits{Version: 1, MemoryLimit: 1 << 30},
			env: map[string]string{"GOMEMLIMIT": "512MiB"}, wantSource: SourceEnv},
		{name: "env off still wins", limits: Limits{Version: 1, MemoryLimit: 1 << 30},
			env: map[string]string{"GOMEMLIMIT": "off"}, wantSource: SourceEnv},
		{name: "empty env is unset", limits: Limits{Version: 1, MemoryLimit: 100},
			env: map[string]string{"GOMEMLIMIT": ""}, wantLimit: 90, wantSource: SourceCgroup},
		{name: "env without cgroup", env: map[string]string{"GOMEMLIMIT": "1GiB"}, wantSource: SourceEnv},
		{name: "no limit", limits: Limits{Version: 2}, wantSource: SourceNone},
		{name: "no cgroup", wantSource: SourceNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit, source := MemLimit(tt.limits, env(tt.env))
			if limit != tt.wantLimit || source != tt.wantSource {
				t.Errorf("MemLimit = %d, %q; want %d, %q", limit, source, tt.wantLimit, tt.wantSource)
			}
		})
	}
}

func TestApply(t *testing.T) {
	tests := []struct {
		name       string
		root       string
		env        map[string]string
		wantSet    int64 // the runtime limit afterwards; -1 = unchanged
		wantSource string
		wantErr    bool
	}{
		{name: "cgroup sets the limit", root: "v2-limited", wantSet: 966367642, wantSource: SourceCgroup},
		{name: "env leaves it", root: "v2-limited", env: map[string]string{"GOMEMLIMIT": "1GiB"},
			wantSet: -1, wantSource: SourceEnv},
		{name: "unlimited leaves it", root: "v1-unlimited", wantSet: -1, wantSource: SourceNone},
		{name: "unreadable limits leave it", root: "malformed", wantSet: -1, wantSource: SourceNone, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const before = 12345 << 20
			prev := debug.SetMemoryLimit(before)
			t.Cleanup(func() { debug.SetMemoryLimit(prev) })

			limit, source, l, err := Apply(fixture(tt.root), env(tt.env))
			if (err != nil) != tt.wantErr || source != tt.wantSource {
				t.Fatalf("Apply = %d, %q, %+v, %v; want source %q, error %v", limit, source, l, err, tt.wantSource, tt.wantErr)
			}
			want := tt.wantSet
			if want == -1 {
				want = before
			}
			if got := debug.SetMemoryLimit(-1); got != want {
				t.Errorf("runtime memory limit = %d, want %d", got, want)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	got := Describe(Limits{Version: 2, MemoryLimit: 1 << 30, CPUQuota: 1.5})
	want := []slog.Attr{
		slog.Int64("memory_limit", 1<<30),
		slog.Float64("cpu_quota", 1.5),
		slog.Int("cgroup_version", 2),
	}
	if len(got) != len(want) {
		t.Fatalf("Describe returned %d attrs, want %d", len(got), len(want))
	}
	for i, a := range got {
		attr, ok := a.(slog.Attr)
		if !ok || !attr.Equal(want[i]) {
			t.Errorf("attr %d = %v, want %v", i, a, want[i])
		}
	}
}
