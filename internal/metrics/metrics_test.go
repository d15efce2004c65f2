package metrics

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/upstream"
)

func TestFillObserver(t *testing.T) {
	m := New()
	o := FillObserver{M: m}
	req := fetch.Request{Registry: "docker.io", Repository: "library/alpine"}
	tests := []struct {
		name       string
		err        error
		wantErrs   float64
		wantVerify float64
	}{
		{"success", nil, 0, 0},
		{"upstream failure", errors.New("reset"), 1, 0},
		{"digest mismatch", fmt.Errorf("x: %w", fetch.ErrVerify), 2, 1},
		{"404 is an answer, not a failure", &upstream.StatusError{Status: 404}, 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o.FillStarted(req)
			if v := testutil.ToFloat64(m.FetchesInFlight); v != 1 {
				t.Fatalf("in flight %v", v)
			}
			o.FillDone(req, 100, time.Second, tt.err)
			if v := testutil.ToFloat64(m.FetchesInFlight); v != 0 {
				t.Errorf("in flight after done %v", v)
			}
			if v := testutil.ToFloat64(m.UpstreamErrors.WithLabelValues("docker.io", "fetch")); v != tt.wantErrs {
				t.Errorf("errors %v, want %v", v, tt.wantErrs)
			}
			if v := testutil.ToFloat64(m.VerifyFailures); v != tt.wantVerify {
				t.Errorf("verify failures %v, want %v", v, tt.wantVerify)
			}
		})
	}
	if v := testutil.ToFloat64(m.UpstreamBytes.WithLabelValues("docker.io")); v != 400 {
		t.Errorf("upstream bytes %v", v)
	}
}

func TestRegistryExposesProcessAndGoMetrics(t *testing.T) {
	m := New()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	all := strings.Join(names, " ")
	for _, want := range []string{"process_resident_memory_bytes", "go_goroutines", "berth_fetches_in_flight"} {
		if !strings.Contains(all, want) {
			t.Errorf("missing %s", want)
		}
	}
}
