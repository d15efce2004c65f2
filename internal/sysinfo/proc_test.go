package sysinfo

import "testing"

func TestRSS(t *testing.T) {
	tests := []struct {
		name      string
		pid       int
		rss, peak int64
		wantErr   bool
	}{
		{name: "process", pid: 4242, rss: 40960 * 1024, peak: 51200 * 1024},
		{name: "kernel thread without Vm fields", pid: 4243, wantErr: true},
		{name: "malformed values", pid: 4244, wantErr: true},
		{name: "no such process", pid: 4245, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Reader{Root: "testdata/proc", PID: tt.pid}
			rss, err := r.RSS()
			if (err != nil) != tt.wantErr || rss != tt.rss {
				t.Errorf("RSS = %d, %v; want %d, error %v", rss, err, tt.rss, tt.wantErr)
			}
			peak, err := r.PeakRSS()
			if (err != nil) != tt.wantErr || peak != tt.peak {
				t.Errorf("PeakRSS = %d, %v; want %d, error %v", peak, err, tt.peak, tt.wantErr)
			}
		})
	}
}
