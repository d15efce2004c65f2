package registry

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMetricLabelsBounded: requests with arbitrary methods, registries,
// repositories, references and query strings add no series beyond closed
// label sets: a series lives as long as the process, so one per distinct
// request value would let any client grow berth's memory without bound.
func TestMetricLabelsBounded(t *testing.T) {
	up := newCountingUpstream(t)
	up.pushImage(t, "test/app", "v1", 10)
	s := newStack(t, up, time.Minute)
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(n int) string {
		const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
		b := make([]byte, 1+rng.IntN(n))
		for i := range b {
			b[i] = chars[rng.IntN(len(chars))]
		}
		return string(b)
	}
	method := func() string {
		if rng.IntN(4) == 0 {
			return []string{"GET", "HEAD", "PUT", "DELETE", "PATCH", "POST", "OPTIONS"}[rng.IntN(7)]
		}
		return strings.ToUpper(word(10))
	}
	path := func() string {
		name := word(8) + "/" + word(8)
		switch rng.IntN(4) {
		case 0:
			name = "registry.test:5000/test/app"
		case 1:
			name = word(6) + ".test/" + name // an unknown registry
		}
		switch rng.IntN(7) {
		case 0:
			return "/v2/" + name + "/manifests/" + word(20)
		case 1:
			return "/v2/" + name + "/blobs/sha256:" + word(64)
		case 2:
			return "/v2/" + name + "/tags/list?n=" + word(3)
		case 3:
			return "/v2/" + name + "/referrers/sha256:" + word(64)
		case 4:
			return "/v2/" + name + "/manifests/v1?ns=" + word(8) + ".io"
		case 5:
			return "/v2/" + word(30)
		default:
			return "/v2/" + name + "/" + word(10) + "/" + word(10)
		}
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for range 1000 {
		req, err := http.NewRequestWithContext(context.Background(), method(), s.srv.URL+path(), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	s.fetcher.Wait()

	families, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "berth_") {
			continue
		}
		total += len(f.GetMetric())
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" && !map[string]bool{"GET": true, "HEAD": true, "other": true}[l.GetValue()] {
					t.Errorf("%s: method label %q", f.GetName(), l.GetValue())
				}
			}
		}
	}
	// Closed sets: 6 routes and other × 3 methods × 17 statuses at most, in
	// practice far fewer; upstream labels only for configured registries.
	if total > 100 {
		var sb strings.Builder
		for _, f := range families {
			fmt.Fprintf(&sb, "%s: %d; ", f.GetName(), len(f.GetMetric()))
		}
		t.Fatalf("%d berth_ series after 1000 random requests: %s", total, sb.String())
	}
	t.Logf("%d berth_ series after 1000 random requests", total)
}
