package peer

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-mirror/berth/internal/fetch"
)

func newPatientFetcher(mem Membership, keys Keys, patience time.Duration) (*Fetcher, *Metrics) {
	m := NewMetrics()
	return NewFetcher(mem, keys, m, nil, FetcherOptions{HeaderPatience: patience}), m
}

// TestBusyOwnerIsWaitedFor: an owner that keeps sending 102 heartbeats
// while its own fill waits (for a turn, for a slow upstream) is waited for
// well past the header patience, and serves the blob: the asking node does
// not go to the upstream itself.
func TestBusyOwnerIsWaitedFor(t *testing.T) {
	blob := randomBlob(t, 64<<10)
	keys := NewKeys("s")
	busy := newPeer(t, blob, keys, func(p *fakePeer) { p.heartbeats, p.beat = 40, 25*time.Millisecond })
	up := &fakeUpstream{blob: blob}
	// One second of patience, the answer after about one second of beats,
	// each 25 ms apart: only the heartbeats keep the request alive.
	f, m := newPatientFetcher(fixedOwners{"me", []Member{member("busy", busy.URL), member("me", "")}}, keys, 500*time.Millisecond)
	defer f.Close()
	got, err := readAll(t, f.Wrap(up.source()), reqFor(blob))
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
	if n := len(up.calls()); n != 0 {
		t.Errorf("upstream asked %d times while the owner said it was working on it", n)
	}
	if v := testutil.ToFloat64(m.Fallbacks.WithLabelValues("timeout")); v != 0 {
		t.Errorf("fallbacks{timeout} = %v", v)
	}
}

// TestSilentOwnerSkippedForItsDigestOnly: an owner that accepts the
// connection and says nothing is given up after the patience, for this
// digest only: it is asked again for the next digest (a slow answer is not
// a dead machine; only a failed connect skips a member for every digest).
func TestSilentOwnerSkippedForItsDigestOnly(t *testing.T) {
	release := make(chan struct{})
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.Error(w, "late", http.StatusNotFound)
	}))
	defer silent.Close()
	defer close(release)
	f, m := newPatientFetcher(fixedOwners{"me", []Member{member("silent", silent.URL), member("me", "")}}, Keys{}, 200*time.Millisecond)
	defer f.Close()
	a, b := randomBlob(t, 1000), randomBlob(t, 1001)
	for _, blob := range [][]byte{a, b} {
		up := &fakeUpstream{blob: blob}
		if got, err := readAll(t, f.Wrap(up.source()), reqFor(blob)); err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("%d bytes, %v", len(got), err)
		}
	}
	if v := testutil.ToFloat64(m.Fallbacks.WithLabelValues("timeout")); v != 2 {
		t.Errorf("fallbacks{timeout} = %v, want 2: the silent owner must be asked again for another digest", v)
	}
	if !f.skipped(reqFor(a), "silent") {
		t.Error("the silent owner is not skipped for the digest it failed")
	}
	if f.skipped(reqFor(randomBlob(t, 7)), "silent") {
		t.Error("the silent owner is skipped for every digest")
	}
}

// TestRelayedRefusalIsNotASecretProblem: a 401/403 the owner relays from
// its upstream (or its access rules) is no sign of differing cluster
// secrets: the owner is not skipped, so a client that then proves access
// (a verified retry) is served through it again.
func TestRelayedRefusalIsNotASecretProblem(t *testing.T) {
	blob := randomBlob(t, 4000)
	keys := NewKeys("s")
	relay := newPeer(t, blob, keys, func(p *fakePeer) { p.status = http.StatusUnauthorized })
	f, m := newTestFetcher(fixedOwners{"me", []Member{member("o", relay.URL), member("me", "")}}, keys)
	defer f.Close()
	for range 2 {
		up := &fakeUpstream{blob: blob}
		if _, err := readAll(t, f.Wrap(up.source()), reqFor(blob)); err != nil {
			t.Fatal(err)
		}
	}
	if n := relay.calls(); n != 2 {
		t.Errorf("owner asked %d times, want 2 (a relayed refusal must not skip it)", n)
	}
	if v := testutil.ToFloat64(m.Fallbacks.WithLabelValues("refused")); v != 2 {
		t.Errorf("fallbacks{refused} = %v, want 2", v)
	}
	if v := testutil.ToFloat64(m.Fallbacks.WithLabelValues("denied")); v != 0 {
		t.Errorf("fallbacks{denied} = %v, want 0", v)
	}
}

// TestPeerRequestIsNeverForwarded: a node asked by a peer (From set) asks
// no owner; it probes the members after it (not the one that asked) with a
// held-only request, then goes to the upstream.
func TestPeerRequestIsNeverForwarded(t *testing.T) {
	blob := randomBlob(t, 5000)
	keys := NewKeys("s")
	before := newPeer(t, blob, keys)
	asker := newPeer(t, blob, keys)
	holder := newPeer(t, blob, keys)
	f, _ := newTestFetcher(fixedOwners{"me", []Member{
		member("before", before.URL), member("me", ""), member("asker", asker.URL), member("holder", holder.URL),
	}}, keys)
	defer f.Close()
	req := reqFor(blob)
	req.From = "asker"
	up := &fakeUpstream{blob: blob}
	if got, err := readAll(t, f.Wrap(up.source()), req); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
	if before.calls() != 0 || asker.calls() != 0 {
		t.Errorf("forwarded: the owner before this node asked %d times, the asking member %d times", before.calls(), asker.calls())
	}
	if holder.calls() != 1 || !strings.Contains(holder.queries[0], "held=1") {
		t.Errorf("holder: %d calls, queries %q; want one held-only probe", holder.calls(), holder.queries)
	}
	if !strings.Contains(holder.queries[0], "from=me") {
		t.Errorf("probe does not name this node: %q", holder.queries[0])
	}
	if n := len(up.calls()); n != 0 {
		t.Errorf("upstream asked %d times although a member held the blob", n)
	}
}

// TestHeadAsksTheOwner: a HEAD of a blob this node lacks goes to its owner;
// without an owner before this node it is the upstream's (ErrNoPeer).
func TestHeadAsksTheOwner(t *testing.T) {
	blob := randomBlob(t, 12345)
	keys := NewKeys("s")
	owner := newPeer(t, blob, keys)
	f, _ := newTestFetcher(fixedOwners{"me", []Member{member("o", owner.URL), member("me", "")}}, keys)
	defer f.Close()
	meta, err := f.Head(context.Background(), reqFor(blob))
	if err != nil || meta.Size != int64(len(blob)) {
		t.Fatalf("Head = %+v, %v", meta, err)
	}
	if owner.calls() != 1 {
		t.Errorf("owner asked %d times", owner.calls())
	}
	first, _ := newTestFetcher(fixedOwners{"me", []Member{member("me", ""), member("o", owner.URL)}}, keys)
	defer first.Close()
	if _, err := first.Head(context.Background(), reqFor(blob)); !errors.Is(err, ErrNoPeer) {
		t.Errorf("this node first: %v, want ErrNoPeer", err)
	}
}

// TestPeerTransferTakesPeerTurn: a transfer from a peer holds a peer turn
// until its body is closed, and no upstream turn.
func TestPeerTransferTakesPeerTurn(t *testing.T) {
	blob := randomBlob(t, 2000)
	keys := NewKeys("s")
	owner := newPeer(t, blob, keys)
	c, _ := newCoalescer(t)
	m := NewMetrics()
	f := NewFetcher(fixedOwners{"me", []Member{member("o", owner.URL), member("me", "")}}, keys, m, nil, FetcherOptions{Peers: c.Peers()})
	defer f.Close()
	body, _, err := f.Wrap(c.Upstream().Limit(fetch.SourceFunc((&fakeUpstream{blob: blob}).open))).Open(context.Background(), reqFor(blob), 0)
	if err != nil {
		t.Fatal(err)
	}
	if p, u := c.Peers().InUse(), c.Upstream().InUse(); p != 1 || u != 0 {
		t.Errorf("turns during a peer transfer: peers %d, upstream %d; want 1, 0", p, u)
	}
	_ = body.Close()
	if p := c.Peers().InUse(); p != 0 {
		t.Errorf("peer turn not given back: %d", p)
	}
}
