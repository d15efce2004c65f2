package sysinfo

import (
	"errors"
	"path/filepath"
	"testing"
)

func fixture(name string) Reader {
	return Reader{Root: filepath.Join("testdata", name)}
}

func TestReaderFixtures(t *testing.T) {
	tests := []struct {
		name       string
		want       Limits
		usage      int64
		workingSet int64
		noCgroup   bool
	}{
		{name: "v1-limited", want: Limits{Version: 1, MemoryLimit: 536870912, CPUQuota: 1.5},
			usage: 314572800, workingSet: 314572800 - 104857600},
		{name: "v1-unlimited", want: Limits{Version: 1},
			usage: 7516160, workingSet: 7516160 - 16384},
		{name: "v1-cgroupns", want: Limits{Version: 1, MemoryLimit: 134217728, CPUQuota: 1},
			usage: 67108864, workingSet: 67108864},
		{name: "v2-limited", want: Limits{Version: 2, MemoryLimit: 1073741824, CPUQuota: 2.5},
			usage: 629145600, workingSet: 629145600 - 209715200},
		{name: "v2-max", want: Limits{Version: 2},
			usage: 4096, workingSet: 0},
		{name: "v2-cgroupns", want: Limits{Version: 2, MemoryLimit: 268435456, CPUQuota: 0.5},
			usage: 100000000, workingSet: 100000000},
		{name: "v2-no-memory", want: Limits{}, noCgroup: true},
		{name: "missing", want: Limits{}, noCgroup: true},
		{name: "no-such-root", want: Limits{}, noCgroup: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := fixture(tt.name)
			got, err := r.Limits()
			if err != nil {
				t.Fatalf("Limits: %v", err)
			}
			if got != tt.want {
				t.Errorf("Limits = %+v, want %+v", got, tt.want)
			}
			usage, err := r.Usage()
			if tt.noCgroup {
				if !errors.Is(err, ErrNoCgroup) {
					t.Errorf("Usage error = %v, want ErrNoCgroup", err)
				}
				if _, err := r.WorkingSet(); !errors.Is(err, ErrNoCgroup) {
					t.Errorf("WorkingSet error = %v, want ErrNoCgroup", err)
				}
				return
			}
			if err != nil || usage != tt.usage {
				t.Errorf("Usage = %d, %v; want %d", usage, err, tt.usage)
			}
			ws, err := r.WorkingSet()
			if err != nil || ws != tt.workingSet {
				t.Errorf("WorkingSet = %d, %v; want %d", ws, err, tt.workingSet)
			}
		})
	}
}

func TestLimitsMalformed(t *testing.T) {
	if l, err := fixture("malformed").Limits(); err == nil {
		t.Errorf("Limits = %+v, want an error for memory.max %q", l, "lots")
	}
}

func TestWorkingSetArithmetic(t *testing.T) {
	tests := []struct {
		name            string
		usage, inactive int64
		want            int64
	}{
		{name: "no inactive", usage: 1000, inactive: 0, want: 1000},
		{name: "some inactive", usage: 1000, inactive: 400, want: 600},
		{name: "all inactive", usage: 1000, inactive: 1000, want: 0},
		{name: "clamped at zero", usage: 1000, inactive: 5000, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := workingSet(tt.usage, tt.inactive); got != tt.want {
				t.Errorf("workingSet(%d, %d) = %d, want %d", tt.usage, tt.inactive, got, tt.want)
			}
		})
	}
}

func TestParseMembership(t *testing.T) {
	m := parseMembership([]byte("12:memory:/a/b\n4:cpu,cpuacct:/c\n1:name=systemd:/d:e\n0::/f\ngarbage\n"))
	want := map[string]string{"memory": "/a/b", "cpu": "/c", "cpuacct": "/c", "name=systemd": "/d:e"}
	for k, v := range want {
		if m.v1[k] != v {
			t.Errorf("v1[%q] = %q, want %q", k, m.v1[k], v)
		}
	}
	if m.v2 != "/f" {
		t.Errorf("v2 = %q, want /f", m.v2)
	}
	if got := parseMembership(nil).v2; got != "/" {
		t.Errorf("empty membership v2 = %q, want /", got)
	}
}

func TestParseCPUMax(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    float64
		wantErr bool
	}{
		{name: "max", in: "max 100000\n", want: 0},
		{name: "two cores", in: "200000 100000\n", want: 2},
		{name: "half core", in: "50000 100000", want: 0.5},
		{name: "default period", in: "150000", want: 1.5},
		{name: "empty", in: "", wantErr: true},
		{name: "garbage", in: "lots 100000", wantErr: true},
		{name: "bad period", in: "100000 often", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCPUMax([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseCPUMax(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}
