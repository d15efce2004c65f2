package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/metrics"
	"github.com/berth-mirror/berth/internal/upstream"
)

// rebuild gives s a new handler, changed by edit, behind a new server.
func (s *stack) rebuild(t *testing.T, edit func(*Options)) {
	t.Helper()
	o := s.h.opts
	edit(&o)
	s.h = New(o)
	s.fetcher = o.Fetcher
	s.srv = httptest.NewServer(s.h)
	t.Cleanup(s.srv.Close)
}

// errorCode returns the first OCI error code of body.
func errorCode(t *testing.T, body []byte) string {
	t.Helper()
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil || len(eb.Errors) == 0 {
		t.Fatalf("not an OCI error body: %q", body)
	}
	return eb.Errors[0].Code
}

// waitFor polls cond (a state another goroutine reaches) for a while.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestRefusalThroughOtherRepository: a client asking through a repository
// the upstream hides the blob from (404) starts the fill; a client asking
// through a repository that can see it joins. The second must get the
// blob, not the first one's 404.
func TestRefusalThroughOtherRepository(t *testing.T) {
	reg := ggcr.New(ggcr.Logger(nilLogger()))
	gate := make(chan struct{})
	var closeGate sync.Once
	t.Cleanup(func() { closeGate.Do(func() { close(gate) }) })
	arrivedA := make(chan struct{}, 1)
	hidden := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v2/test/a/blobs/") {
			arrivedA <- struct{}{}
			<-gate
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}`)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(hidden.Close)
	up := &countingUpstream{Server: hidden, counts: map[string]int{}}
	data := randomBytes(2<<20, 5)
	dg := up.pushBlob(t, "test/b", data)
	s := newStack(t, up, time.Minute)

	get := func(repo string) (*http.Response, []byte) {
		return s.do(t, "GET", "/v2/test/"+repo+"/blobs/"+dg.String()+"?ns=registry.test:5000")
	}
	var wg sync.WaitGroup
	var respA *http.Response
	var bodyA []byte
	wg.Add(1)
	go func() { defer wg.Done(); respA, bodyA = get("a") }()
	<-arrivedA // the fill is asking through A
	wg.Add(1)
	var respB *http.Response
	var bodyB []byte
	go func() { defer wg.Done(); respB, bodyB = get("b") }()
	waitFor(t, "B to join A's fill", func() bool {
		return testutil.ToFloat64(s.metrics.Cache.WithLabelValues("blob", "coalesced")) == 1
	})
	closeGate.Do(func() { close(gate) })
	wg.Wait()
	if respB.StatusCode != http.StatusOK || sha(bodyB) != dg.String() {
		t.Errorf("B: %d, %d bytes %.100q", respB.StatusCode, len(bodyB), bodyB)
	}
	// A's client waited on the fill that went on through B: it gets the blob.
	if respA.StatusCode != http.StatusOK || sha(bodyA) != dg.String() {
		t.Errorf("A: %d, %d bytes %.100q", respA.StatusCode, len(bodyA), bodyA)
	}
	if _, err := s.store.Stat(dg); err != nil {
		t.Errorf("not stored: %v", err)
	}
}

// TestFetchQueueFull: past max_fetches running and the queue waiting, a
// request for another missing blob gets 503 TOOMANYREQUESTS with
// Retry-After at once, is counted, and reaches no upstream.
func TestFetchQueueFull(t *testing.T) {
	up := newCountingUpstream(t)
	var blobs []string
	for i := range 3 {
		blobs = append(blobs, up.pushBlob(t, "test/q", randomBytes(10_000, int64(i+1))).String())
	}
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open)
	up.delay = func() { <-release }
	s := newStack(t, up, time.Minute)
	fc := fetch.New(s.store, fetch.Options{MaxFetches: 1, MaxQueued: 1})
	t.Cleanup(fc.Wait)
	s.rebuild(t, func(o *Options) { o.Fetcher = fc })

	path := func(i int) string { return "/v2/test/q/blobs/" + blobs[i] + "?ns=registry.test:5000" }
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, body := s.do(t, "GET", path(i)); resp.StatusCode != 200 || sha(body) != blobs[i] {
				t.Errorf("blob %d: %d", i, resp.StatusCode)
			}
		}()
	}
	waitFor(t, "two fills", func() bool { return fc.InFlight() == 2 })
	resp, body := s.do(t, "GET", path(2))
	if resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, body) != CodeTooManyRequests {
		t.Errorf("third blob: %d %s; want 503 TOOMANYREQUESTS", resp.StatusCode, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	if v := testutil.ToFloat64(s.metrics.FetchRejected.WithLabelValues("overloaded")); v != 1 {
		t.Errorf("rejections counted %v, want 1", v)
	}
	if n := up.count("GET", "/v2/test/q/blobs/"+blobs[2]); n != 0 {
		t.Errorf("refused blob reached the upstream %d times", n)
	}
	open()
	wg.Wait()
	if resp, _ := s.do(t, "GET", path(2)); resp.StatusCode != 200 {
		t.Errorf("after the queue drained: %d", resp.StatusCode)
	}
}

// TestFetchShutdown: once the fetcher is shutting down a missing blob gets
// 503 with Retry-After; cached content is still served.
func TestFetchShutdown(t *testing.T) {
	up := newCountingUpstream(t)
	cached := up.pushBlob(t, "test/s", randomBytes(1000, 1))
	missing := up.pushBlob(t, "test/s", randomBytes(1000, 2))
	s := newStack(t, up, time.Minute)
	if resp, _ := s.do(t, "GET", "/v2/test/s/blobs/"+cached.String()+"?ns=registry.test:5000"); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	if err := s.fetcher.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, body := s.do(t, "GET", "/v2/test/s/blobs/"+missing.String()+"?ns=registry.test:5000")
	if resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, body) != CodeUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("missing blob during shutdown: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	if v := testutil.ToFloat64(s.metrics.FetchRejected.WithLabelValues("shutdown")); v != 1 {
		t.Errorf("rejections counted %v, want 1", v)
	}
	if resp, _ := s.do(t, "GET", "/v2/test/s/blobs/"+cached.String()+"?ns=registry.test:5000"); resp.StatusCode != 200 {
		t.Errorf("cached blob during shutdown: %d", resp.StatusCode)
	}
}

// onceUpstreams answers its first Lookup and then pretends the registry was
// removed by a reload, as a reload between two lookups would.
type onceUpstreams struct {
	c     *upstream.Client
	calls atomic.Int32
}

func (u *onceUpstreams) Lookup(string) (*upstream.Client, bool) {
	if u.calls.Add(1) == 1 {
		return u.c, true
	}
	return nil, false
}

// TestOneUpstreamLookup: a request looks its upstream up once; a reload
// (the second lookup failing) cannot hand it a nil client.
func TestOneUpstreamLookup(t *testing.T) {
	up := newCountingUpstream(t)
	img := up.pushImage(t, "test/one", "v1", 3000)
	s := newStack(t, up, time.Minute)
	c, _ := s.h.opts.Upstreams.Lookup("registry.test:5000")
	for _, p := range []string{
		"/v2/test/one/blobs/" + img.layers[0].String(),
		"/v2/test/one/manifests/v1",
		"/v2/test/one/tags/list",
	} {
		t.Run(p, func(t *testing.T) {
			u := &onceUpstreams{c: c}
			s.rebuild(t, func(o *Options) { o.Upstreams = u })
			resp, body := s.do(t, "GET", p+"?ns=registry.test:5000")
			if resp.StatusCode != 200 {
				t.Errorf("%d %s", resp.StatusCode, body)
			}
			if n := u.calls.Load(); n != 1 {
				t.Errorf("%d lookups, want 1", n)
			}
		})
	}
}

// slowEOFSource delivers the upstream's bytes but holds its EOF until a
// gate opens: the fill has every byte and has not verified them yet.
type slowEOFSource struct {
	up   fetch.Source
	gate chan struct{}
	held chan struct{} // closed when the fill asks past the last byte
	once sync.Once
}

func (s *slowEOFSource) Open(ctx context.Context, req fetch.Request, off int64) (io.ReadCloser, fetch.Meta, error) {
	body, meta, err := s.up.Open(ctx, req, off)
	if err != nil {
		return nil, meta, err
	}
	return &slowEOFBody{ReadCloser: body, s: s}, meta, nil
}

type slowEOFBody struct {
	io.ReadCloser
	s   *slowEOFSource
	eof bool
}

func (b *slowEOFBody) Read(p []byte) (int, error) {
	if b.eof {
		b.s.once.Do(func() { close(b.s.held) })
		<-b.s.gate
		return 0, io.EOF
	}
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof, err = true, nil
	}
	return n, err
}

// TestCorruptUpstreamWholeNotCompleted: while a corrupt blob's every byte
// has arrived but not been verified, a client asking for the whole blob
// receives all but its last byte, and once verification fails its
// connection is closed short of Content-Length: it never holds a complete
// corrupt body. A client's Range is answered with the bytes as the
// upstream sent them, before verification, as the registry itself would
// answer it (fetch.Reader.SendUnverified: a lazy-pulling snapshotter must
// not wait for the whole blob, and checks its chunks against its own
// digests). The corrupt blob is never stored.
func TestCorruptUpstreamWholeNotCompleted(t *testing.T) {
	up := newCountingUpstream(t)
	data := randomBytes(3<<20, 11)
	dg := up.pushBlob(t, "test/bad", data)
	up.corrupt = true
	s := newStack(t, up, time.Minute)
	src := &slowEOFSource{gate: make(chan struct{}), held: make(chan struct{})}
	var openGate sync.Once
	t.Cleanup(func() { openGate.Do(func() { close(src.gate) }) })
	s.rebuild(t, func(o *Options) { o.Source = func(up fetch.Source) fetch.Source { src.up = up; return src } })

	type result struct {
		status, n int
		err       error
	}
	get := func(rng string, want int) <-chan result {
		got := make(chan result, 1)
		go func() {
			req, _ := http.NewRequest("GET", s.srv.URL+"/v2/test/bad/blobs/"+dg.String()+"?ns=registry.test:5000", nil)
			if rng != "" {
				req.Header.Set("Range", rng)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				got <- result{err: err}
				return
			}
			defer resp.Body.Close()
			n, err := io.ReadFull(resp.Body, make([]byte, want))
			got <- result{resp.StatusCode, n, err}
		}()
		return got
	}
	whole := get("", len(data))
	<-src.held
	// Every byte is in the fill, none verified.
	tail := <-get("bytes=-100", 100)
	if tail.err != nil || tail.status != http.StatusPartialContent || tail.n != 100 {
		t.Errorf("range before verification: status %d, %d bytes, %v; want the 100 bytes as sent", tail.status, tail.n, tail.err)
	}
	select {
	case r := <-whole:
		t.Fatalf("whole-blob client finished before verification: status %d, %d bytes, %v", r.status, r.n, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	openGate.Do(func() { close(src.gate) })
	r := <-whole
	if r.err == nil || r.n >= len(data) {
		t.Errorf("client read %d of %d bytes of a corrupt blob (status %d), err %v", r.n, len(data), r.status, r.err)
	}
	s.fetcher.Wait()
	if _, err := s.store.Stat(dg); err == nil {
		t.Error("corrupt blob was stored")
	}
}

// TestOverloadLoggedOncePerInterval: a sustained overload is counted for
// every refused client but logged once per interval, not once per client.
func TestOverloadLoggedOncePerInterval(t *testing.T) {
	var logs bytes.Buffer
	now := time.Unix(1000, 0)
	m := metrics.New()
	h := New(Options{Upstreams: upstreamMap{}, Metrics: m,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Now: func() time.Time { return now }})
	for range 100 {
		if e := asError(h.fetchRefused(fetch.ErrOverloaded)); e.Status != http.StatusServiceUnavailable {
			t.Fatalf("status %d", e.Status)
		}
	}
	now = now.Add(overloadLogInterval + time.Second)
	_ = h.fetchRefused(fetch.ErrOverloaded)
	if n := strings.Count(logs.String(), "fill queue full"); n != 2 {
		t.Errorf("%d log lines for 101 refusals over two intervals, want 2:\n%s", n, logs.String())
	}
	if v := testutil.ToFloat64(m.FetchRejected.WithLabelValues("overloaded")); v != 101 {
		t.Errorf("counted %v refusals, want 101", v)
	}
}
