package cluster

import (
	"github.com/berth-mirror/berth/internal/peer"

	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"
)

// TestOwnersPinned pins the owner order of a few keys: two versions of
// berth in a rolling update must compute the same owners, so any change to
// the hash, the mix or the sort direction must fail here, not in production.
func TestOwnersPinned(t *testing.T) {
	want := [][]string{
		{"node-2", "node-0", "node-3", "node-1"},
		{"node-2", "node-1", "node-3", "node-0"},
		{"node-2", "node-3", "node-1", "node-0"},
	}
	for i, w := range want {
		key := fmt.Sprintf("sha256:%064d", i)
		if got := names(Owners(key, members(4))); !slices.Equal(got, w) {
			t.Errorf("%s: owners %v, want %v (the owner order changed: nodes of two versions would disagree)", key, got, w)
		}
	}
}

// TestCorruptPeerSkippedTenMinutes: a peer that sent wrong bytes is skipped
// for that digest for corruptMemory (10 min), not the 1 min of other failures.
func TestCorruptPeerSkippedTenMinutes(t *testing.T) {
	blob := randomBlob(t, 64<<10)
	bad := newPeer(t, blob, peer.Keys{}, func(p *fakePeer) { p.corrupt = true })
	f, _ := newTestFetcher(fixedOwners{"me", []Member{member("bad", bad.URL), member("me", "")}}, peer.Keys{})
	defer f.Close()
	now := time.Unix(1_700_000_000, 0)
	f.now = func() time.Time { return now }
	if _, err := readAll(t, f.Wrap((&fakeUpstream{blob: blob}).source()), reqFor(blob)); err == nil {
		t.Fatal("a corrupt peer's bytes read without an error")
	}
	now = now.Add(9 * time.Minute)
	if !f.skipped(reqFor(blob), "bad") {
		t.Error("a corrupt peer is asked again after 9 minutes, want 10")
	}
	now = now.Add(2 * time.Minute)
	if f.skipped(reqFor(blob), "bad") {
		t.Error("a corrupt peer is still skipped after 11 minutes")
	}
}

// TestResumeContentRangeChecked: a resume from offset must be answered from
// that offset; a peer that answers 206 from elsewhere is refused.
func TestResumeContentRangeChecked(t *testing.T) {
	req := reqFor([]byte("x"))
	for _, tt := range []struct {
		cr string
		ok bool
	}{
		{"bytes 100-199/200", true},
		{"bytes 0-199/200", false},
		{"bytes 99-199/200", false},
		{"", false},
	} {
		resp := &http.Response{StatusCode: http.StatusPartialContent, Header: http.Header{}, ContentLength: 100}
		if tt.cr != "" {
			resp.Header.Set("Content-Range", tt.cr)
		}
		_, err := checkResponse(resp, req, 100)
		if (err == nil) != tt.ok {
			t.Errorf("Content-Range %q for offset 100: %v, want ok=%v", tt.cr, err, tt.ok)
		}
	}
}

// TestFailMemoriesBounded: failures for distinct digests and members keep
// the table at maxFailMemories, even while every entry is still live.
func TestFailMemoriesBounded(t *testing.T) {
	f, _ := newTestFetcher(fixedOwners{"me", nil}, peer.Keys{})
	defer f.Close()
	for i := range 2 * maxFailMemories {
		f.remember(reqFor([]byte(fmt.Sprint(i))), "m", failMemory)
	}
	if n := len(f.failed); n > maxFailMemories {
		t.Errorf("%d failure memories, bound %d", n, maxFailMemories)
	}
}
