package peer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-mirror/berth/internal/fetch"
)

// fakeBackend serves a few stored objects by digest, as the registry's
// backend serves its store: with Range support and the content headers.
type fakeBackend struct {
	objects map[digest.Digest]fakeObject
	// ignoreRange answers every GET with the whole object (200).
	ignoreRange bool
	mu          sync.Mutex
	reqs        []Request
	ranges      []string
}

type fakeObject struct {
	body      []byte
	mediaType string
}

func (b *fakeBackend) ServePeer(w http.ResponseWriter, r *http.Request, req Request) error {
	b.mu.Lock()
	b.reqs = append(b.reqs, req)
	b.ranges = append(b.ranges, r.Header.Get("Range"))
	b.mu.Unlock()
	o, ok := b.objects[req.Digest]
	if !ok {
		return &Error{Status: http.StatusNotFound, Code: "BLOB_UNKNOWN", Message: "not here"}
	}
	w.Header().Set("Docker-Content-Digest", req.Digest.String())
	w.Header().Set("Content-Type", o.mediaType)
	if b.ignoreRange {
		r.Header.Del("Range")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(o.body))
	return nil
}

func (b *fakeBackend) seen() ([]Request, []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Request(nil), b.reqs...), append([]string(nil), b.ranges...)
}

// wireLog keeps each request a server received, as it came, to send again.
type wireLog struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (l *wireLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.reqs = append(l.reqs, r.Clone(context.Background()))
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (l *wireLog) last() *http.Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reqs[len(l.reqs)-1]
}

// TestRoundTrip: the client (Fetcher) against the server (Server) over
// HTTP, with a fake Backend: a signed request is accepted and parsed as
// sent; a blob comes whole and from an offset (Content-Range checked by the
// client); a manifest and a HEAD; the same request sent again is refused as
// a replay, marked as a token refusal, without reaching the backend.
func TestRoundTrip(t *testing.T) {
	blob := randomBlob(t, 200<<10)
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	const blobType, manifestType = "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.manifest.v1+json"
	be := &fakeBackend{objects: map[digest.Digest]fakeObject{
		digest.FromBytes(blob):     {blob, blobType},
		digest.FromBytes(manifest): {manifest, manifestType},
	}}
	const secret = "a-cluster-secret-0123"
	sm := NewMetrics()
	serverKeys := NewKeys(secret) // the owner's own keys: another node
	srv := NewServer(be, ServerOptions{
		Verify: func(r *http.Request, dg string) error { return serverKeys.Verify(r, dg, time.Now()) },
		Served: sm.Served,
	})
	var wire wireLog
	owner := httptest.NewServer(wire.wrap(srv))
	defer owner.Close()

	f, cm := newTestFetcher(fixedOwners{"me", []Member{member("owner", owner.URL), member("me", "")}}, NewKeys(secret))
	defer f.Close()
	up := &fakeUpstream{blob: blob}
	src := f.Wrap(up.source())
	req := reqFor(blob)
	req.Verified, req.UpstreamToken = true, "pull-token"

	t.Run("whole blob", func(t *testing.T) {
		body, meta, err := src.Open(t.Context(), req, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(body)
		_ = body.Close()
		if err != nil || !bytes.Equal(got, blob) || meta.Size != int64(len(blob)) || meta.MediaType != blobType {
			t.Fatalf("read %d bytes (err %v), meta %+v; want %d bytes of %s", len(got), err, meta, len(blob), blobType)
		}
		reqs, ranges := be.seen()
		want := Request{Kind: KindBlob, Digest: req.Digest, Registry: req.Registry, Repository: req.Repository,
			From: "me", Verified: true, UpstreamToken: "pull-token", Piece: -1}
		if len(reqs) != 1 || reqs[0] != want || ranges[0] != "" {
			t.Fatalf("backend saw %+v (Range %q), want %+v", reqs, ranges, want)
		}
	})

	t.Run("resume from an offset", func(t *testing.T) {
		const off = 70_000
		body, meta, err := src.Open(t.Context(), req, off)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(body)
		_ = body.Close()
		if err != nil || !bytes.Equal(got, blob[off:]) || meta.Size != int64(len(blob)) {
			t.Fatalf("resume: %d bytes (err %v), size %d; want %d of %d", len(got), err, meta.Size, len(blob)-off, len(blob))
		}
		if _, ranges := be.seen(); ranges[len(ranges)-1] != "bytes=70000-" {
			t.Fatalf("backend saw Range %q", ranges[len(ranges)-1])
		}
	})

	t.Run("manifest", func(t *testing.T) {
		mreq := reqFor(manifest)
		got, mt, err := f.Manifest(t.Context(), mreq, manifestType)
		if err != nil || !bytes.Equal(got, manifest) || mt != manifestType {
			t.Fatalf("manifest: %q %q %v", got, mt, err)
		}
		if reqs, _ := be.seen(); reqs[len(reqs)-1].Kind != KindManifest {
			t.Fatalf("backend saw kind %q", reqs[len(reqs)-1].Kind)
		}
		if wire.last().Header.Get("Accept") != manifestType {
			t.Fatalf("Accept %q not sent", wire.last().Header.Get("Accept"))
		}
	})

	t.Run("HEAD", func(t *testing.T) {
		meta, err := f.Head(t.Context(), req)
		if err != nil || meta.Size != int64(len(blob)) || meta.MediaType != blobType {
			t.Fatalf("HEAD: %+v %v", meta, err)
		}
		if wire.last().Method != http.MethodHead {
			t.Fatalf("sent %s", wire.last().Method)
		}
	})

	if n := len(up.calls()); n != 0 {
		t.Fatalf("the upstream was asked %d times; every answer should have come from the owner", n)
	}
	if got := testutil.ToFloat64(sm.Requests.WithLabelValues("server", "ok")); got != 4 {
		t.Errorf("server ok results %v, want 4", got)
	}
	if got := testutil.ToFloat64(cm.Requests.WithLabelValues("client", "ok")); got != 4 {
		t.Errorf("client ok results %v, want 4", got)
	}

	t.Run("replay refused", func(t *testing.T) {
		captured := wire.last() // the HEAD, signed, already served once
		before, _ := be.seen()
		replay, err := http.NewRequestWithContext(t.Context(), captured.Method, owner.URL+captured.URL.RequestURI(), nil)
		if err != nil {
			t.Fatal(err)
		}
		replay.Header = captured.Header.Clone()
		resp, err := http.DefaultClient.Do(replay)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get(ErrorHeader) != ErrorToken {
			t.Fatalf("replay: %d, %s %q; want 403 marked %q", resp.StatusCode, ErrorHeader, resp.Header.Get(ErrorHeader), ErrorToken)
		}
		if after, _ := be.seen(); len(after) != len(before) {
			t.Fatal("a replayed request reached the backend")
		}
		if got := testutil.ToFloat64(sm.Requests.WithLabelValues("server", "denied")); got != 1 {
			t.Errorf("server denied results %v, want 1", got)
		}
	})

	t.Run("no token", func(t *testing.T) {
		resp, err := http.Get(owner.URL + Path + KindBlob + "/" + req.Digest.String() + "?registry=r&repository=a")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Www-Authenticate") != AuthScheme {
			t.Fatalf("no token: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("Www-Authenticate"))
		}
	})
}

// TestRoundTripOtherSecret: an owner with another cluster secret refuses
// the token; the client takes it for differing secrets (not a relayed
// refusal), skips the owner and reads the blob from the upstream.
func TestRoundTripOtherSecret(t *testing.T) {
	blob := randomBlob(t, 10<<10)
	be := &fakeBackend{objects: map[digest.Digest]fakeObject{digest.FromBytes(blob): {blob, "application/octet-stream"}}}
	theirs := NewKeys("their-cluster-secret-01")
	owner := httptest.NewServer(NewServer(be, ServerOptions{
		Verify: func(r *http.Request, dg string) error { return theirs.Verify(r, dg, time.Now()) },
	}))
	defer owner.Close()
	f, m := newTestFetcher(fixedOwners{"me", []Member{member("owner", owner.URL), member("me", "")}}, NewKeys("our-cluster-secret-012"))
	defer f.Close()
	up := &fakeUpstream{blob: blob}
	got, err := readAll(t, f.Wrap(up.source()), reqFor(blob))
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
	if reqs, _ := be.seen(); len(reqs) != 0 || len(up.calls()) != 1 {
		t.Fatalf("backend asked %d times, upstream %d; want 0, 1", len(reqs), len(up.calls()))
	}
	if got := testutil.ToFloat64(m.Fallbacks.WithLabelValues("denied")); got != 1 {
		t.Errorf("denied fallbacks %v, want 1", got)
	}
	if !f.skipped(fetch.Request{}, "owner") {
		t.Error("an owner refusing this node's token is not skipped for every digest")
	}
}

// TestServerRefusals: the server's own answers, before its backend is
// asked, are OCI error bodies with the status the asking node reads.
func TestServerRefusals(t *testing.T) {
	be := &fakeBackend{}
	srv := httptest.NewServer(NewServer(be, ServerOptions{}))
	defer srv.Close()
	dg := digest.FromString("x").String()
	for _, tt := range []struct {
		name, method, path string
		status             int
	}{
		{"not the API", "GET", Path + "tags/x?registry=r&repository=a", 404},
		{"POST", "POST", Path + "blobs/" + dg + "?registry=r&repository=a", 405},
		{"bad digest", "GET", Path + "blobs/sha256:xyz?registry=r&repository=a", 400},
		{"no registry", "GET", Path + "blobs/" + dg + "?repository=a", 400},
		{"backend error", "GET", Path + "blobs/" + dg + "?registry=r&repository=a", 404},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, nil)
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tt.status || !bytes.Contains(body, []byte(`"errors"`)) {
				t.Fatalf("%d %s; want %d with an OCI error body", resp.StatusCode, body, tt.status)
			}
		})
	}
	if reqs, _ := be.seen(); len(reqs) != 1 || reqs[0].From != "peer" {
		t.Fatalf("backend saw %+v; want only the well-formed request, from %q", reqs, "peer")
	}
	if err := error(&Error{Status: 500, Err: io.ErrUnexpectedEOF}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatal("Error does not unwrap to its cause")
	}
}

// slowBackend answers after delay, as an owner whose fill waits for its
// upstream.
type slowBackend struct {
	*fakeBackend
	delay time.Duration
}

func (b slowBackend) ServePeer(w http.ResponseWriter, r *http.Request, req Request) error {
	time.Sleep(b.delay)
	return b.fakeBackend.ServePeer(w, r, req)
}

// TestRoundTripHeartbeats: an owner slower than the client's patience is
// waited for as long as its server sends 102 heartbeats.
func TestRoundTripHeartbeats(t *testing.T) {
	blob := randomBlob(t, 10<<10)
	be := slowBackend{&fakeBackend{objects: map[digest.Digest]fakeObject{digest.FromBytes(blob): {blob, "application/octet-stream"}}}, 300 * time.Millisecond}
	owner := httptest.NewServer(NewServer(be, ServerOptions{Heartbeat: 20 * time.Millisecond}))
	defer owner.Close()
	f, m := newPatientFetcher(fixedOwners{"me", []Member{member("owner", owner.URL), member("me", "")}}, Keys{}, 100*time.Millisecond)
	defer f.Close()
	up := &fakeUpstream{blob: blob}
	got, err := readAll(t, f.Wrap(up.source()), reqFor(blob))
	if err != nil || !bytes.Equal(got, blob) || len(up.calls()) != 0 {
		t.Fatalf("%d bytes, %v, %d upstream calls; want the owner's blob", len(got), err, len(up.calls()))
	}
	if n := testutil.ToFloat64(m.Fallbacks.WithLabelValues("timeout")); n != 0 {
		t.Fatalf("a heartbeating owner timed out %v times", n)
	}
}
