package peer

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/fetch"
)

// rangeUpstream is a fake upstream that also serves ranges, counting them.
type rangeUpstream struct {
	fakeUpstream
	rmu    sync.Mutex
	ranges []string
}

func (u *rangeUpstream) OpenRange(_ context.Context, _ fetch.Request, _ int, start, end int64) (io.ReadCloser, fetch.Meta, error) {
	u.rmu.Lock()
	u.ranges = append(u.ranges, fmt.Sprintf("%d-%d", start, end))
	u.rmu.Unlock()
	return io.NopCloser(bytes.NewReader(u.blob[start:end])), fetch.Meta{Size: int64(len(u.blob))}, nil
}

func (u *rangeUpstream) Open(ctx context.Context, req fetch.Request, off int64) (io.ReadCloser, fetch.Meta, error) {
	return u.open(ctx, req, off)
}

func (u *rangeUpstream) rangesAsked() []string {
	u.rmu.Lock()
	defer u.rmu.Unlock()
	return append([]string(nil), u.ranges...)
}

// TestRoundTripPieces: a blob with pieces, its size known (a manifest's
// hint), is opened as its first piece from the piece's owner (Meta.End),
// and another piece by range; the server parses the piece and size and the
// Range; the client checks the 206's Content-Range. A piece owner that
// answers another range is refused and the piece comes from the upstream.
func TestRoundTripPieces(t *testing.T) {
	blob := randomBlob(t, fetch.PieceThreshold+2*fetch.MinPieceSize+1000)
	size := int64(len(blob))
	plan := fetch.PlanFor(size)
	be := &fakeBackend{objects: map[digest.Digest]fakeObject{}}
	be.objects[digest.FromBytes(blob)] = fakeObject{blob, "application/octet-stream"}
	const secret = "a-cluster-secret-0123"
	serverKeys := NewKeys(secret)
	srv := NewServer(be, ServerOptions{Verify: func(r *http.Request, dg string) error { return serverKeys.Verify(r, dg, time.Now()) }})
	owner := httptest.NewServer(srv)
	defer owner.Close()
	f, _ := newTestFetcher(fixedOwners{"me", []Member{member("owner", owner.URL), member("me", "")}}, NewKeys(secret))
	defer f.Close()
	up := &rangeUpstream{fakeUpstream: fakeUpstream{blob: blob}}
	src := f.Wrap(up)
	req := reqFor(blob)
	req.Size = size

	body, meta, err := src.Open(t.Context(), req, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, end0 := plan.Bounds(0)
	got, err := io.ReadAll(body)
	_ = body.Close()
	if err != nil || !bytes.Equal(got, blob[:end0]) || meta.End != end0 || meta.Size != size || meta.Peer != "owner" {
		t.Fatalf("first piece: %d bytes (err %v), meta %+v; want %d bytes, End %d", len(got), err, meta, end0, end0)
	}
	s2, e2 := plan.Bounds(2)
	rs := src.(fetch.RangeSource)
	body, meta, err = rs.OpenRange(t.Context(), req, 2, s2+10, e2)
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(body)
	_ = body.Close()
	if err != nil || !bytes.Equal(got, blob[s2+10:e2]) || meta.Size != size {
		t.Fatalf("piece 2: %d bytes (err %v), meta %+v", len(got), err, meta)
	}
	reqs, ranges := be.seen()
	if len(reqs) != 2 || reqs[0].Piece != 0 || reqs[1].Piece != 2 || reqs[1].Size != size ||
		ranges[0] != fmt.Sprintf("bytes=0-%d", end0-1) || ranges[1] != fmt.Sprintf("bytes=%d-%d", s2+10, e2-1) {
		t.Fatalf("backend saw %+v, ranges %q", reqs, ranges)
	}
	if len(up.rangesAsked()) != 0 || len(up.calls()) != 0 {
		t.Fatalf("upstream asked: %v %v", up.rangesAsked(), up.calls())
	}

	// An owner that answers another range (here: the whole blob, 200) is
	// refused, and the piece comes from the upstream.
	be.ignoreRange = true
	s1, e1 := plan.Bounds(1)
	body, _, err = rs.OpenRange(t.Context(), req, 1, s1, e1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(body)
	_ = body.Close()
	if !bytes.Equal(got, blob[s1:e1]) || len(up.rangesAsked()) != 1 {
		t.Fatalf("after a wrong answer: %d bytes, upstream ranges %v", len(got), up.rangesAsked())
	}
	be.ignoreRange = false

	// A private request never asks piece owners.
	priv := req
	priv.Verified = true
	body, _, err = rs.OpenRange(t.Context(), priv, 1, plan.PieceSize, 2*plan.PieceSize)
	if err != nil {
		t.Fatal(err)
	}
	_ = body.Close()
	if n, _ := be.seen(); len(n) != 3 || len(up.rangesAsked()) != 2 {
		t.Fatalf("private piece: backend %d requests, upstream ranges %v", len(n), up.rangesAsked())
	}
}

// TestServerPieceParams: the piece and size parameters come together, for
// a piece of a blob with pieces, of a blob request.
func TestServerPieceParams(t *testing.T) {
	be := &fakeBackend{objects: map[digest.Digest]fakeObject{}}
	srv := httptest.NewServer(NewServer(be, ServerOptions{}))
	defer srv.Close()
	dg := digest.FromBytes([]byte("x"))
	big := fetch.PieceThreshold + 1
	for _, tc := range []struct {
		query string
		want  int
	}{
		{fmt.Sprintf("piece=0&size=%d", big), http.StatusNotFound}, // well formed: the backend's answer
		{fmt.Sprintf("piece=5&size=%d", big), http.StatusBadRequest},
		{"piece=0&size=1000", http.StatusBadRequest}, // a small blob has no pieces
		{"piece=0", http.StatusBadRequest},
		{fmt.Sprintf("size=%d", big), http.StatusBadRequest},
		{fmt.Sprintf("piece=-1&size=%d", big), http.StatusBadRequest},
		{fmt.Sprintf("piece=x&size=%d", big), http.StatusBadRequest},
		{fmt.Sprintf("piece=0&size=%d&held=1", big), http.StatusBadRequest},
	} {
		u := srv.URL + Path + "blobs/" + dg.String() + "?registry=r&repository=a/b&" + tc.query
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.query, resp.StatusCode, tc.want)
		}
	}
}

// hrwMembers orders fixed members by a simple rendezvous score, like the
// cluster package, for the plan tests.
type hrwMembers struct {
	self    string
	members []Member
}

func (h hrwMembers) Name() string { return h.self }
func (h hrwMembers) Owners(key string) []Member {
	out := append([]Member(nil), h.members...)
	score := func(m Member) uint64 { return xxhash.Sum64String(m.Name + "\x00" + key) }
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(score(b), score(a)) })
	return out
}

// TestPieceOwnersBalanced: every member owns at most ceil(pieces/members)
// of a blob's pieces, for many blobs (pure rendezvous gives one member of
// six 10 of 24 pieces now and then); every node computes the same owners
// whatever the order it lists the members in; one member leaving moves the
// pieces it owned and few others.
func TestPieceOwnersBalanced(t *testing.T) {
	var ms []Member
	for i := range 6 {
		ms = append(ms, member(fmt.Sprintf("n%d", i+1), "http://x"))
	}
	size := int64(96 << 20)
	plan := fetch.PlanFor(size)
	limit := (plan.Count + len(ms) - 1) / len(ms)
	a, _ := newTestFetcher(hrwMembers{"n1", ms}, Keys{})
	defer a.Close()
	rev := slices.Clone(ms)
	slices.Reverse(rev)
	b, _ := newTestFetcher(hrwMembers{"n2", rev}, Keys{})
	defer b.Close()
	fewer, _ := newTestFetcher(hrwMembers{"n1", ms[:5]}, Keys{})
	defer fewer.Close()
	var moved, total int
	for k := range 200 {
		dg := digest.FromString(fmt.Sprint("blob", k))
		load := map[string]int{}
		for i := range plan.Count {
			oa, _ := a.pieceOwner(dg, size, i)
			ob, _ := b.pieceOwner(dg, size, i)
			if oa != ob {
				t.Fatalf("blob %d piece %d: owners %s and %s on two nodes", k, i, oa.Name, ob.Name)
			}
			load[oa.Name]++
			of, _ := fewer.pieceOwner(dg, size, i)
			if oa.Name != "n6" && of != oa {
				moved++
			}
			total++
		}
		for name, n := range load {
			if n > limit {
				t.Fatalf("blob %d: %s owns %d of %d pieces, over %d", k, name, n, plan.Count, limit)
			}
		}
	}
	t.Logf("n6 leaving moved %d of %d pieces it did not own (%.1f%%)", moved, total, 100*float64(moved)/float64(total))
	if float64(moved) > 0.25*float64(total) {
		t.Errorf("a member leaving moved %d of %d other pieces", moved, total)
	}
}

// TestFirstPieceWrongSizeHint: a size from a manifest that the source's
// answer contradicts is not planned with: the blob comes whole.
func TestFirstPieceWrongSizeHint(t *testing.T) {
	blob := randomBlob(t, fetch.PieceThreshold+2*fetch.MinPieceSize)
	f, _ := newTestFetcher(fixedOwners{"me", []Member{member("me", "")}}, Keys{})
	defer f.Close()
	up := &rangeUpstream{fakeUpstream: fakeUpstream{blob: blob}}
	req := reqFor(blob)
	req.Size = int64(len(blob)) + fetch.MinPieceSize // wrong
	body, meta, err := f.Wrap(up).Open(t.Context(), req, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(body)
	_ = body.Close()
	if meta.End != 0 || !bytes.Equal(got, blob) || len(up.calls()) != 1 {
		t.Fatalf("meta %+v, %d bytes, whole opens %v: want the blob whole", meta, len(got), up.calls())
	}
}

// TestPiecePlansBounded: owner tables for many distinct blobs stay within
// maxPiecePlans.
func TestPiecePlansBounded(t *testing.T) {
	f, _ := newTestFetcher(hrwMembers{"n1", []Member{member("n1", ""), member("n2", "http://x")}}, Keys{})
	defer f.Close()
	for k := range 10 * maxPiecePlans {
		f.pieceOwner(digest.FromString(fmt.Sprint("blob", k)), fetch.PieceThreshold+1, 0)
		f.plans.mu.Lock()
		n := len(f.plans.m)
		f.plans.mu.Unlock()
		if n > maxPiecePlans {
			t.Fatalf("%d owner tables, over %d", n, maxPiecePlans)
		}
	}
}
