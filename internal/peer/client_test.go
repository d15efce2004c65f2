package peer

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-mirror/berth/internal/fetch"
	"github.com/berth-mirror/berth/internal/store"
	"github.com/berth-mirror/berth/internal/upstream"
)

// fixedOwners is a membership whose owner order is given, not hashed.
type fixedOwners struct {
	self   string
	owners []Member
}

func (f fixedOwners) Name() string           { return f.self }
func (f fixedOwners) Owners(string) []Member { return f.owners }
func member(name, url string) Member         { return Member{Name: name, URL: url} }
func randomBlob(t *testing.T, n int) []byte  { b := make([]byte, n); _, _ = rand.Read(b); return b }
func reqFor(b []byte) fetch.Request {
	return fetch.Request{Digest: digest.FromBytes(b), Registry: "registry.test", Repository: "a/b"}
}
func (u *fakeUpstream) source() fetch.Source { return fetch.SourceFunc(u.open) }
func (p *fakePeer) calls() int               { p.mu.Lock(); defer p.mu.Unlock(); return len(p.seen) }

// fakeUpstream serves one blob and records the offsets asked for.
type fakeUpstream struct {
	blob    []byte
	mu      sync.Mutex
	offsets []int64
}

func (u *fakeUpstream) open(_ context.Context, _ fetch.Request, off int64) (io.ReadCloser, fetch.Meta, error) {
	u.mu.Lock()
	u.offsets = append(u.offsets, off)
	u.mu.Unlock()
	return io.NopCloser(bytes.NewReader(u.blob[off:])), fetch.Meta{Size: int64(len(u.blob))}, nil
}

func (u *fakeUpstream) calls() []int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]int64(nil), u.offsets...)
}

// fakePeer is a peer API serving one blob, verifying tokens with keys.
type fakePeer struct {
	*httptest.Server
	blob      []byte
	keys      Keys
	breakAt   int64 // >0: abort the response after this many bytes
	corrupt   bool
	status    int
	mu        sync.Mutex
	seen      []string // Range headers
	queries   []string // raw queries
	authError error
	// held: answers 404 to a held-only probe (it holds nothing).
	held bool
	// heartbeats 102 answers, beat apart, before the real one.
	heartbeats int
	beat       time.Duration
}

func newPeer(t *testing.T, blob []byte, keys Keys, opts ...func(*fakePeer)) *fakePeer {
	p := &fakePeer{blob: blob, keys: keys}
	for _, o := range opts {
		o(p)
	}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.Close)
	return p
}

func (p *fakePeer) serve(w http.ResponseWriter, r *http.Request) {
	dg := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, Path+"blobs/"), Path+"manifests/")
	err := p.keys.Verify(r, dg, time.Now())
	p.mu.Lock()
	p.seen = append(p.seen, r.Header.Get("Range"))
	p.queries = append(p.queries, r.URL.RawQuery)
	p.authError = err
	p.mu.Unlock()
	if err != nil {
		w.Header().Set(ErrorHeader, "token") // as Server answers
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	if p.held && r.URL.Query().Get("held") == "1" {
		http.Error(w, "not held", http.StatusNotFound)
		return
	}
	if p.heartbeats > 0 {
		for range p.heartbeats {
			w.WriteHeader(http.StatusProcessing)
			time.Sleep(p.beat)
		}
	}
	if p.status != 0 {
		http.Error(w, "no", p.status)
		return
	}
	if r.URL.Query().Get("registry") != "registry.test" || r.URL.Query().Get("repository") != "a/b" {
		http.Error(w, "bad query "+r.URL.RawQuery, http.StatusBadRequest)
		return
	}
	body := p.blob
	if p.corrupt {
		body = bytes.Clone(body)
		body[len(body)/2] ^= 0xff
	}
	w.Header().Set("Docker-Content-Digest", dg)
	if p.breakAt > 0 {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body[:p.breakAt])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

func newTestFetcher(mem Membership, keys Keys) (*Fetcher, *Metrics) {
	m := NewMetrics()
	return NewFetcher(mem, keys, m, nil, FetcherOptions{}), m
}

func readAll(t *testing.T, src fetch.Source, req fetch.Request) ([]byte, error) {
	t.Helper()
	body, _, err := src.Open(context.Background(), req, 0)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return io.ReadAll(body)
}

func TestSourceOrder(t *testing.T) {
	blob := randomBlob(t, 300<<10)
	keys := NewKeys("s")
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // connection refused
	tests := []struct {
		name      string
		owners    func(good, missing *fakePeer) []Member
		fromPeer  bool
		upstream  int
		fallbacks map[string]float64
	}{
		{"this node owns it, the next members lack it: upstream", func(_, m *fakePeer) []Member {
			return []Member{member("me", "http://unused"), member("m", m.URL)}
		}, false, 1, map[string]float64{"not_held": 1}},
		{"this node owns it, the next member holds it: handover", func(g, _ *fakePeer) []Member {
			return []Member{member("me", "http://unused"), member("g", g.URL)}
		}, true, 0, nil},
		{"this node owns it, at most two members probed", func(g, m *fakePeer) []Member {
			return []Member{member("me", "http://unused"), member("m1", m.URL), member("m2", m.URL), member("g", g.URL)}
		}, false, 1, map[string]float64{"not_held": 2}},
		{"first owner serves", func(g, _ *fakePeer) []Member {
			return []Member{member("g", g.URL), member("me", "")}
		}, true, 0, nil},
		{"first owner down: second owner", func(g, _ *fakePeer) []Member {
			return []Member{member("down", down.URL), member("g", g.URL), member("me", "")}
		}, true, 0, map[string]float64{"connect": 1}},
		{"first owner lacks it, this node next: upstream", func(_, m *fakePeer) []Member {
			return []Member{member("m", m.URL), member("me", "")}
		}, false, 1, map[string]float64{"not_found": 1}},
		{"no URL: skipped", func(g, _ *fakePeer) []Member {
			return []Member{member("nourl", ""), member("g", g.URL), member("me", "")}
		}, true, 0, map[string]float64{"no_url": 1}},
		{"at most two peers before the upstream", func(g, m *fakePeer) []Member {
			return []Member{member("m1", m.URL), member("m2", m.URL), member("g", g.URL), member("me", "")}
		}, false, 1, map[string]float64{"not_found": 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := newPeer(t, blob, keys)
			missing := newPeer(t, blob, keys, func(p *fakePeer) { p.status = http.StatusNotFound })
			up := &fakeUpstream{blob: blob}
			f, m := newTestFetcher(fixedOwners{"me", tt.owners(good, missing)}, keys)
			defer f.Close()
			got, err := readAll(t, f.Wrap(up.source()), reqFor(blob))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, blob) {
				t.Fatal("wrong bytes")
			}
			if n := len(up.calls()); n != tt.upstream {
				t.Errorf("upstream asked %d times, want %d", n, tt.upstream)
			}
			if tt.fromPeer {
				if good.calls() != 1 || good.authError != nil {
					t.Errorf("peer: %d calls, auth %v", good.calls(), good.authError)
				}
				if n := f.ServedBy("g"); n != int64(len(blob)) {
					t.Errorf("ServedBy = %d, want %d", n, len(blob))
				}
				if v := testutil.ToFloat64(m.Bytes.WithLabelValues("in")); v != float64(len(blob)) {
					t.Errorf("bytes in = %v", v)
				}
			}
			for reason, want := range tt.fallbacks {
				if v := testutil.ToFloat64(m.Fallbacks.WithLabelValues(reason)); v != want {
					t.Errorf("fallbacks{%s} = %v, want %v", reason, v, want)
				}
			}
		})
	}
}

func TestSourceWrongSecret(t *testing.T) {
	blob := randomBlob(t, 10<<10)
	p := newPeer(t, blob, NewKeys("theirs"))
	up := &fakeUpstream{blob: blob}
	f, m := newTestFetcher(fixedOwners{"me", []Member{member("p", p.URL), member("me", "")}}, NewKeys("mine"))
	defer f.Close()
	if _, err := readAll(t, f.Wrap(up.source()), reqFor(blob)); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(p.authError, ErrBadToken) || len(up.calls()) != 1 {
		t.Fatalf("peer auth %v, upstream calls %v", p.authError, up.calls())
	}
	if v := testutil.ToFloat64(m.Fallbacks.WithLabelValues("denied")); v != 1 {
		t.Errorf("fallbacks{denied} = %v", v)
	}
}

func newCoalescer(t *testing.T) (*fetch.Coalescer, *store.Store) {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := fetch.New(st, fetch.Options{Resumes: 2})
	t.Cleanup(func() { c.Wait(); _ = st.Close() })
	return c, st
}

func fillAll(t *testing.T, c *fetch.Coalescer, req fetch.Request, src fetch.Source) ([]byte, error) {
	t.Helper()
	rd, _, err := c.Get(context.Background(), req, src)
	if err != nil || rd == nil {
		t.Fatalf("Get: %v %v", rd, err)
	}
	defer rd.Close()
	return io.ReadAll(rd)
}

// TestFillResumesPastBrokenPeer: a peer that dies mid-transfer is skipped on
// the fill's resume, which continues from the byte reached at the next
// source (here the upstream, with an offset), and the blob is committed.
func TestFillResumesPastBrokenPeer(t *testing.T) {
	blob := randomBlob(t, 2<<20)
	const at = 700 << 10
	broken := newPeer(t, blob, Keys{}, func(p *fakePeer) { p.breakAt = at })
	up := &fakeUpstream{blob: blob}
	f, m := newTestFetcher(fixedOwners{"me", []Member{member("b", broken.URL), member("me", "")}}, Keys{})
	defer f.Close()
	c, st := newCoalescer(t)
	req := reqFor(blob)
	got, err := fillAll(t, c, req, f.Wrap(up.source()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, blob) {
		t.Fatal("wrong bytes")
	}
	calls := up.calls()
	if len(calls) != 1 || calls[0] < at/2 {
		t.Fatalf("upstream offsets %v: want one resume from near %d", calls, at)
	}
	if broken.calls() != 1 {
		t.Errorf("the broken peer was asked %d times", broken.calls())
	}
	c.Wait()
	if _, err := st.Stat(req.Digest); err != nil {
		t.Fatalf("not committed: %v", err)
	}
	if v := testutil.ToFloat64(m.Fallbacks.WithLabelValues("midstream")); v != 1 {
		t.Errorf("fallbacks{midstream} = %v", v)
	}
}

// TestFillResumesFromNextPeerWithRange: the resume goes to the second owner
// with a Range header.
func TestFillResumesFromNextPeerWithRange(t *testing.T) {
	blob := randomBlob(t, 2<<20)
	broken := newPeer(t, blob, NewKeys("k"), func(p *fakePeer) { p.breakAt = 512 << 10 })
	good := newPeer(t, blob, NewKeys("k"))
	up := &fakeUpstream{blob: blob}
	f, _ := newTestFetcher(fixedOwners{"me", []Member{member("b", broken.URL), member("g", good.URL), member("me", "")}}, NewKeys("k"))
	defer f.Close()
	c, _ := newCoalescer(t)
	got, err := fillAll(t, c, reqFor(blob), f.Wrap(up.source()))
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("err %v, equal %v", err, bytes.Equal(got, blob))
	}
	if len(up.calls()) != 0 {
		t.Errorf("upstream asked: %v", up.calls())
	}
	good.mu.Lock()
	defer good.mu.Unlock()
	if len(good.seen) != 1 || !strings.HasPrefix(good.seen[0], "bytes=") || good.seen[0] == "bytes=0-" {
		t.Errorf("second owner saw Range %q, want a resume", good.seen)
	}
}

// TestCorruptPeer: wrong bytes from a peer fail the fill (nothing cached),
// are counted, and the peer is skipped next time.
func TestCorruptPeer(t *testing.T) {
	blob := randomBlob(t, 256<<10)
	bad := newPeer(t, blob, Keys{}, func(p *fakePeer) { p.corrupt = true })
	up := &fakeUpstream{blob: blob}
	f, m := newTestFetcher(fixedOwners{"me", []Member{member("bad", bad.URL), member("me", "")}}, Keys{})
	defer f.Close()
	c, st := newCoalescer(t)
	req := reqFor(blob)
	if _, err := fillAll(t, c, req, f.Wrap(up.source())); !errors.Is(err, fetch.ErrVerify) {
		t.Fatalf("err = %v, want ErrVerify", err)
	}
	c.Wait()
	if _, err := st.Stat(req.Digest); err == nil {
		t.Fatal("corrupt content was committed")
	}
	if v := testutil.ToFloat64(m.Fallbacks.WithLabelValues("corrupt")); v != 1 {
		t.Errorf("fallbacks{corrupt} = %v", v)
	}
	got, err := fillAll(t, c, req, f.Wrap(up.source()))
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("second fill: %v", err)
	}
	if bad.calls() != 1 || len(up.calls()) != 1 {
		t.Errorf("bad peer asked %d times, upstream %v", bad.calls(), up.calls())
	}
}

// TestFailureMemoryExpires: a failed peer is skipped for failMemory, then
// asked again.
func TestFailureMemoryExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, _ := newTestFetcher(fixedOwners{"me", nil}, Keys{})
		req := fetch.Request{Digest: digest.FromString("x")}
		f.remember(req, "p", failMemory)
		if !f.skipped(req, "p") || f.skipped(req, "q") || f.skipped(fetch.Request{Digest: digest.FromString("y")}, "p") {
			t.Fatal("the failure should be remembered for this peer and digest only")
		}
		time.Sleep(failMemory - time.Second)
		if !f.skipped(req, "p") {
			t.Fatal("forgotten too early")
		}
		time.Sleep(2 * time.Second)
		if f.skipped(req, "p") {
			t.Fatal("still skipped after failMemory")
		}
	})
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 10-99/100", 10, 100, true},
		{"bytes 0-0/1", 0, 1, true},
		{"bytes 10-99/*", 10, -1, true},
		{"bytes */100", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			s, _, n, ok := upstream.ParseContentRange(tt.in)
			if s != tt.start || n != tt.total || ok != tt.ok {
				t.Errorf("got %d %d %v", s, n, ok)
			}
		})
	}
}

func TestManifestFromPeer(t *testing.T) {
	body := []byte(`{"schemaVersion":2}`)
	req := reqFor(body)
	good := newPeer(t, body, NewKeys("k"))
	bad := newPeer(t, body, NewKeys("k"), func(p *fakePeer) { p.corrupt = true })
	tests := []struct {
		name    string
		owners  []Member
		want    error
		asked   *fakePeer
		corrupt float64
	}{
		{"owner serves", []Member{member("g", good.URL), member("me", "")}, nil, good, 0},
		{"this node first, the next member holds it", []Member{member("me", ""), member("g", good.URL)}, nil, good, 0},
		{"this node alone: no peer", []Member{member("me", "")}, ErrNoPeer, nil, 0},
		{"corrupt peer: no peer", []Member{member("bad", bad.URL), member("me", "")}, ErrNoPeer, bad, 1},
		{"corrupt, then the next owner", []Member{member("bad", bad.URL), member("g", good.URL), member("me", "")}, nil, good, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, m := newTestFetcher(fixedOwners{"me", tt.owners}, NewKeys("k"))
			defer f.Close()
			n := 0
			if tt.asked != nil {
				n = tt.asked.calls()
			}
			got, _, err := f.Manifest(context.Background(), req, "application/json")
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			if err == nil && !bytes.Equal(got, body) {
				t.Fatal("wrong body")
			}
			if tt.asked != nil && tt.asked.calls() != n+1 {
				t.Errorf("peer asked %d times", tt.asked.calls()-n)
			}
			if v := testutil.ToFloat64(m.Fallbacks.WithLabelValues("corrupt")); v != tt.corrupt {
				t.Errorf("fallbacks{corrupt} = %v, want %v", v, tt.corrupt)
			}
		})
	}
}

// TestUnreachablePeerSkippedForEveryDigest: a peer that refuses connections
// is skipped for other digests too, for a while.
func TestUnreachablePeerSkippedForEveryDigest(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	f, m := newTestFetcher(fixedOwners{"me", []Member{member("down", down.URL), member("me", "")}}, Keys{})
	defer f.Close()
	for i := range 3 {
		blob := randomBlob(t, 1000+i)
		up := &fakeUpstream{blob: blob}
		if _, err := readAll(t, f.Wrap(up.source()), reqFor(blob)); err != nil {
			t.Fatal(err)
		}
	}
	if v := testutil.ToFloat64(m.Fallbacks.WithLabelValues("connect")); v != 1 {
		t.Fatalf("fallbacks{connect} = %v, want 1: the unreachable peer was tried for each digest", v)
	}
	synctest.Test(t, func(t *testing.T) {
		f.now = time.Now
		f.remember(fetch.Request{}, "x", unreachableMemory)
		if !f.skipped(reqFor([]byte("a")), "x") {
			t.Fatal("not skipped")
		}
		time.Sleep(unreachableMemory + time.Second)
		if f.skipped(reqFor([]byte("a")), "x") {
			t.Fatal("still skipped")
		}
	})
}

// TestManifestFromPeerLiveCap: a manifest from a peer is held to the cap in
// force (max_manifest_bytes, as /v2/ and the peer API are), read for each
// manifest: under a lowered cap a 5 MiB one is refused (and the peer is not
// remembered as failed for it); once the cap is raised it is accepted.
func TestManifestFromPeerLiveCap(t *testing.T) {
	body := randomBlob(t, 5<<20)
	req := reqFor(body)
	owner := newPeer(t, body, NewKeys("k"))
	var limit atomic.Int64
	limit.Store(4 << 20)
	m := NewMetrics()
	f := NewFetcher(fixedOwners{"me", []Member{member("p", owner.URL), member("me", "")}}, NewKeys("k"), m, nil,
		FetcherOptions{MaxManifestBytes: limit.Load})
	defer f.Close()
	if _, _, err := f.Manifest(t.Context(), req, ""); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("5 MiB manifest under a 4 MiB cap: err %v, want ErrNoPeer", err)
	}
	if v := testutil.ToFloat64(m.Fallbacks.WithLabelValues("too_large")); v != 1 {
		t.Errorf("fallbacks{too_large} = %v, want 1", v)
	}
	limit.Store(6 << 20) // a reload raises max_manifest_bytes
	got, _, err := f.Manifest(t.Context(), req, "")
	if err != nil {
		t.Fatalf("5 MiB manifest under a 6 MiB cap: %v", err)
	}
	if !bytes.Equal(got, body) {
		t.Fatal("wrong body")
	}
	if owner.calls() != 2 {
		t.Errorf("peer asked %d times, want 2", owner.calls())
	}
}

// Without a cap given, a manifest from a peer is held to 4 MiB, the
// default of max_manifest_bytes, not more.
func TestManifestFromPeerDefaultCap(t *testing.T) {
	body := randomBlob(t, 5<<20)
	owner := newPeer(t, body, NewKeys("k"))
	f, _ := newTestFetcher(fixedOwners{"me", []Member{member("p", owner.URL), member("me", "")}}, NewKeys("k"))
	defer f.Close()
	if _, _, err := f.Manifest(t.Context(), reqFor(body), ""); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("5 MiB manifest without a cap: err %v, want ErrNoPeer", err)
	}
}
