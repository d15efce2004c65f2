package registry

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/metrics"
	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// acceptCounter is an upstream that only counts the connections made to it.
type acceptCounter struct {
	ln       net.Listener
	accepted chan string // the peer address of each connection accepted
	n        atomic.Int64
}

func newAcceptCounter(t *testing.T) *acceptCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &acceptCounter{ln: ln, accepted: make(chan string, 1000)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.n.Add(1)
			a.accepted <- c.RemoteAddr().String()
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return a
}

func (a *acceptCounter) url() string { return "http://" + a.ln.Addr().String() }

// before returns how many connections were accepted before now: it connects
// once more and waits for that connection, which the kernel queues behind
// any made earlier.
func (a *acceptCounter) before(t *testing.T) int64 {
	t.Helper()
	c, err := net.Dial("tcp", a.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case addr := <-a.accepted:
			if addr == c.LocalAddr().String() {
				return a.n.Load() - 1
			}
		case <-deadline:
			t.Fatal("the sentinel connection was never accepted")
		}
	}
}

// countingTransport counts the round trips it passes on.
type countingTransport struct {
	base http.RoundTripper
	n    atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.base.RoundTrip(r)
}

// A request for a registry berth is not configured for is refused with 403
// DENIED before any connection: none to the registry asked for (it cannot be
// reached: berth does not know it), and none to any configured upstream,
// the default included, at the socket level and at the transport level.
func TestUnknownRegistryNoConnectionAtAll(t *testing.T) {
	def, other := newAcceptCounter(t), newAcceptCounter(t)
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	fc := fetch.New(st, fetch.Options{})
	t.Cleanup(fc.Wait)
	sockets := map[string]*acceptCounter{"docker.io": def, "registry.test:5000": other}
	transports := map[string]*countingTransport{}
	ups := upstreamMap{}
	for name, a := range sockets {
		tr := &countingTransport{base: upstream.NewTransport(5 * time.Second)}
		transports[name] = tr
		c, err := upstream.New(upstream.Endpoint{Name: name, URL: a.url()}, upstream.Options{Transport: tr})
		if err != nil {
			t.Fatal(err)
		}
		ups[name] = c
	}
	srv := httptest.NewServer(New(Options{Store: st, Fetcher: fc, Metrics: metrics.New(), Upstreams: ups, DefaultRegistry: "docker.io"}))
	t.Cleanup(srv.Close)

	dg := "sha256:" + strings.Repeat("c", 64)
	for _, p := range []string{
		"/v2/evil.example.com/x/manifests/latest",
		"/v2/evil.example.com/x/manifests/" + dg,
		"/v2/evil.example.com/x/blobs/" + dg,
		"/v2/evil.example.com/x/tags/list",
		"/v2/x/manifests/latest?ns=evil.example.com",
		"/v2/library/x/blobs/" + dg + "?ns=evil.example.com",
		"/v2/quay.io/x/y/manifests/v1",
		"/v2/localhost:1/x/manifests/v1",
		"/v2/x/tags/list?ns=169.254.169.254",
	} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			req, _ := http.NewRequestWithContext(t.Context(), method, srv.URL+p, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var eb errorBody
			derr := json.NewDecoder(resp.Body).Decode(&eb)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden || (method == http.MethodGet && (derr != nil || len(eb.Errors) == 0 || eb.Errors[0].Code != CodeDenied)) {
				t.Errorf("%s %s: %d %+v, want 403 DENIED", method, p, resp.StatusCode, eb)
			}
		}
	}
	for name, a := range sockets {
		if n := a.before(t); n != 0 {
			t.Errorf("%d connections to %s for requests to unknown registries", n, name)
		}
	}
	for name, tr := range transports {
		if n := tr.n.Load(); n != 0 {
			t.Errorf("%d requests through %s for requests to unknown registries", n, name)
		}
	}
}

// countsSince returns the upstream's request counts that grew since before
// (a copy of counts taken earlier), keyed "METHOD /path".
func (u *countingUpstream) countsSince(before map[string]int) map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := map[string]int{}
	for k, n := range u.counts {
		if n > before[k] {
			out[k] = n - before[k]
		}
	}
	return out
}

func (u *countingUpstream) snapshot() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make(map[string]int, len(u.counts))
	for k, n := range u.counts {
		out[k] = n
	}
	return out
}
