package registry

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// frontedStack is a stack whose upstream is a hostile front (wrap) to a real
// registry; tests push to real and berth sees front.
func frontedStack(t *testing.T, ttl time.Duration, wrap func(next http.Handler) http.Handler) (real *countingUpstream, s *stack, front *countingUpstream) {
	t.Helper()
	real = newCountingUpstream(t)
	front = &countingUpstream{Server: httptest.NewServer(wrap(real.Config.Handler)), counts: map[string]int{}}
	t.Cleanup(front.Close)
	return real, newStack(t, front, ttl), front
}

func upstreamErrors(s *stack, reason string) float64 {
	return testutil.ToFloat64(s.metrics.UpstreamErrors.WithLabelValues("registry.test:5000", reason))
}

// rateLimiting answers manifest requests with 429 and Retry-After while on,
// counting them in limited.
func rateLimiting(on *atomic.Bool, limited *atomic.Int32) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if on.Load() && strings.Contains(r.URL.Path, "/manifests/") {
				limited.Add(1)
				w.Header().Set("Retry-After", "120")
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// A rate-limited upstream's 429 reaches the client with its Retry-After (the
// client, not berth, waits), as TOOMANYREQUESTS, counted as rate_limited.
func TestUpstream429PassedOnWithRetryAfter(t *testing.T) {
	var limited atomic.Bool
	var answered atomic.Int32
	limited.Store(true)
	_, s, _ := frontedStack(t, time.Minute, rateLimiting(&limited, &answered))
	start := time.Now()
	resp, body := s.do(t, "GET", "/v2/test/app/manifests/v1?ns=registry.test:5000")
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), CodeTooManyRequests) {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "120" {
		t.Errorf("Retry-After %q, want 120", ra)
	}
	if n := answered.Load(); n != 1 || time.Since(start) > 5*time.Second {
		t.Errorf("%d upstream requests in %v: a Retry-After past the budget must end the retries at once", n, time.Since(start))
	}
	if v := upstreamErrors(s, "rate_limited"); v != 1 {
		t.Errorf("rate_limited errors %v, want 1", v)
	}
}

// A 429 on a tag's refresh serves the tag last known (stale-if-error).
func TestStaleTagServedOn429(t *testing.T) {
	var limited atomic.Bool
	var answered atomic.Int32
	real, s, _ := frontedStack(t, time.Minute, rateLimiting(&limited, &answered))
	img := real.pushImage(t, "test/app", "v1", 100)
	if resp, _ := s.do(t, "GET", "/v2/test/app/manifests/v1?ns=registry.test:5000"); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	limited.Store(true)
	s.advance(time.Hour)
	resp, body := s.do(t, "GET", "/v2/test/app/manifests/v1?ns=registry.test:5000")
	if resp.StatusCode != 200 || string(body) != string(img.body) {
		t.Fatalf("stale tag not served on 429: %d %s", resp.StatusCode, body)
	}
	if v := testutil.ToFloat64(s.metrics.StaleTags.WithLabelValues("registry.test:5000")); v != 1 || answered.Load() == 0 {
		t.Errorf("stale counter %v after %d 429s, want 1", v, answered.Load())
	}
}

// A public upstream that redirects a manifest to a loopback address gets a
// 502 to the client, nothing fetched from there and nothing cached.
func TestRedirectRefusedIs502(t *testing.T) {
	var internalHits atomic.Int32
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		internalHits.Add(1)
		_, _ = w.Write([]byte(`{"schemaVersion":2}`))
	}))
	defer internal.Close()
	redirect := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/manifests/") {
				http.Redirect(w, r, internal.URL+"/internal"+r.URL.Path, http.StatusFound)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	real, s, front := frontedStack(t, time.Minute, redirect)
	img := real.pushImage(t, "test/app", "v1", 10)
	_, p, _ := net.SplitHostPort(front.Listener.Addr().String())
	frontPort, _ := strconv.Atoi(p)
	c, err := upstream.New(upstream.Endpoint{Name: "registry.test:5000", URL: front.URL}, upstream.Options{
		Classify: func(ap netip.AddrPort) upstream.AddrClass {
			if int(ap.Port()) == frontPort {
				return upstream.Public
			}
			return upstream.ClassifyAddr(ap.Addr())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.h.opts.Upstreams.(upstreamMap)["registry.test:5000"] = c
	for _, ref := range []string{img.manifest.String(), "v1"} {
		resp, body := s.do(t, "GET", "/v2/test/app/manifests/"+ref+"?ns=registry.test:5000")
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), CodeUnavailable) {
			t.Errorf("%s: got %d %s, want 502", ref, resp.StatusCode, body)
		}
	}
	if n := internalHits.Load(); n != 0 {
		t.Errorf("the internal address got %d requests", n)
	}
	if _, err := s.store.Stat(img.manifest); !store.IsNotFound(err) {
		t.Errorf("manifest cached after a refused redirect: %v", err)
	}
	if v := upstreamErrors(s, "refused"); v != 2 {
		t.Errorf("refused errors %v, want 2", v)
	}
}

// A client that goes away mid-request is not an upstream failure.
func TestClientGoneIsNotUpstreamFailure(t *testing.T) {
	arrived := make(chan struct{}, 1)
	hang := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/tags/list") {
				arrived <- struct{}{}
				<-r.Context().Done()
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	_, s, _ := frontedStack(t, time.Minute, hang)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, "GET", "/v2/test/app/tags/list?ns=registry.test:5000", nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.h.ServeHTTP(httptest.NewRecorder(), req)
	}()
	<-arrived
	cancel()
	<-done
	if n := testutil.CollectAndCount(s.metrics.UpstreamErrors); n != 0 {
		t.Errorf("a client going away was counted as %d upstream errors", n)
	}
}
